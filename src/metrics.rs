//! Every counter stunedge keeps, declared in one place. A worker bumps plain `u64`s in its own
//! [`Stats`] (no atomics, no sharing on the packet path) and publishes them once per batch into
//! its own cache-padded [`WorkerSlot`] with relaxed stores; readers (logs, tests, the future
//! Prometheus collector) sum the slots at read time. Nothing here is shared between workers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::handler::DropReason;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// A counter (the per-reason drop counters are indexed by [`DropReason`] instead).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Counter {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$( Counter::$variant, )*];

            /// The counter's name, `snake_case`.
            pub const fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name, )* }
            }
        }
    };
}

counters! {
    /// Datagrams received.
    DatagramsIn => "datagrams_in",
    /// Bytes received (UDP payload).
    BytesIn => "bytes_in",
    /// Datagrams sent.
    DatagramsOut => "datagrams_out",
    /// Bytes sent (UDP payload).
    BytesOut => "bytes_out",
    /// Replies the kernel refused (EAGAIN, ENOBUFS, EPERM, …); each is lost.
    SendErrors => "send_errors",
    /// Receive calls that failed with an error other than "would block".
    RecvErrors => "recv_errors",
    /// Batches processed (one receive call, or one io_uring turn, that returned datagrams).
    Batches => "batches",
    /// io_uring: answers dropped because every send slot was in flight.
    SendSlotsFull => "send_slots_full",
    /// io_uring: multishot receives re-armed after the kernel ended them.
    MultishotRearms => "multishot_rearms",
    /// io_uring: multishot receives ended because the buffer ring was empty.
    BufferRingExhausted => "buffer_ring_exhausted",
    /// io_uring: completions the completion queue could not hold at once.
    CqOverflow => "cq_overflow",
    /// Binding requests (RFC 8489/5389 and classic).
    RequestsBinding => "requests_binding",
    /// Requests of other methods (answered 400).
    RequestsOther => "requests_other",
    /// Of all requests, those without the magic cookie (RFC 3489 classic).
    RequestsClassic => "requests_classic",
    /// Binding success responses.
    ResponsesSuccess => "responses_success",
    /// 400 Bad Request responses.
    Responses400 => "responses_400",
    /// 420 Unknown Attribute responses.
    Responses420 => "responses_420",
    /// 401 Unauthenticated responses (challenges and rejected credentials).
    Responses401 => "responses_401",
    /// 438 Stale Nonce responses.
    Responses438 => "responses_438",
    /// Requests whose credentials were checked and accepted (their answers are signed).
    RequestsAuthenticated => "requests_authenticated",
}

const COUNTERS: usize = Counter::ALL.len();
const DROPS: usize = DropReason::ALL.len();

/// One worker's counters: plain integers, owned by that worker alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    counters: [u64; COUNTERS],
    drops: [u64; DROPS],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { counters: [0; COUNTERS], drops: [0; DROPS] }
    }
}

impl Stats {
    /// Adds one.
    #[inline]
    pub fn bump(&mut self, counter: Counter) {
        self.counters[counter as usize] += 1;
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.counters[counter as usize] += n;
    }

    /// Counts one dropped datagram.
    #[inline]
    pub fn dropped(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// A counter's value.
    #[inline]
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize]
    }

    /// Datagrams dropped for `reason`.
    #[inline]
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another worker's counters to these.
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.counters.iter_mut().zip(other.counters) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
    }
}

impl fmt::Display for Stats {
    /// Non-zero counters as `name=value` pairs, for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let named = Counter::ALL.iter().map(|c| (c.name(), "", self.get(*c)));
        let drops = DropReason::ALL.iter().map(|r| ("dropped_", r.name(), self.drops(*r)));
        for (name, suffix, value) in named.chain(drops).filter(|(_, _, v)| *v != 0) {
            write!(f, "{}{name}{suffix}={value}", if first { "" } else { " " })?;
            first = false;
        }
        if first {
            write!(f, "(all zero)")?;
        }
        Ok(())
    }
}

/// Where one worker publishes its counters: written by that worker only (relaxed stores, once
/// per batch), read by anyone. Cache-padded so workers never share a line.
#[derive(Debug)]
pub struct WorkerSlot {
    counters: CachePadded<([AtomicU64; COUNTERS], [AtomicU64; DROPS])>,
}

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot {
            counters: CachePadded::new((
                std::array::from_fn(|_| AtomicU64::new(0)),
                std::array::from_fn(|_| AtomicU64::new(0)),
            )),
        }
    }
}

impl WorkerSlot {
    /// Publishes the owner's counters (a plain store each; only the owner writes).
    #[inline]
    pub fn publish(&self, stats: &Stats) {
        for (slot, v) in self.counters.0.iter().zip(stats.counters) {
            slot.store(v, Ordering::Relaxed);
        }
        for (slot, v) in self.counters.1.iter().zip(stats.drops) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The last published counters.
    pub fn read(&self) -> Stats {
        let mut s = Stats::default();
        for (v, slot) in s.counters.iter_mut().zip(&self.counters.0) {
            *v = slot.load(Ordering::Relaxed);
        }
        for (v, slot) in s.drops.iter_mut().zip(&self.counters.1) {
            *v = slot.load(Ordering::Relaxed);
        }
        s
    }
}

/// The sum over every worker's slot.
pub fn sum(slots: &[WorkerSlot]) -> Stats {
    let mut total = Stats::default();
    for slot in slots {
        total.merge(&slot.read());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_sum() {
        let slots: Vec<WorkerSlot> = (0..2).map(|_| WorkerSlot::default()).collect();
        let mut a = Stats::default();
        a.bump(Counter::DatagramsIn);
        a.dropped(DropReason::NotStun);
        let mut b = Stats::default();
        b.add(Counter::DatagramsIn, 4);
        slots[0].publish(&a);
        slots[1].publish(&b);
        let total = sum(&slots);
        assert_eq!(total.get(Counter::DatagramsIn), 5);
        assert_eq!(total.drops(DropReason::NotStun), 1);
        assert_eq!(total.total_drops(), 1);
        assert_eq!(total.to_string(), "datagrams_in=5 dropped_not_stun=1");
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
