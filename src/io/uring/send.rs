//! Send slots: the msghdr, iovec and control buffer of each in-flight IORING_OP_SENDMSG, in a
//! boxed slice whose addresses never change, plus the receive buffer the reply lives in (held
//! by the slot until the send completes, then returned to the buffer ring by the driver). An
//! IORING_OP_SEND uses only the latter: its payload and address both lie in that buffer.
//! No raw pointer to a stack local ever reaches an SQE: the kernel reads these slots.

use std::net::IpAddr;

use super::super::msg::{Control, prepare_send};
use super::buf_ring::Lease;

struct Slot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    control: Control,
    /// The receive buffer holding the reply, until the send completes.
    lease: Option<Lease>,
    /// Reply length.
    len: usize,
}

/// A fixed set of send slots and the list of free ones.
pub(super) struct SendSlots {
    slots: Box<[Slot]>,
    free: Vec<usize>,
}

impl SendSlots {
    /// `n` free slots.
    pub(super) fn new(n: usize) -> SendSlots {
        let slots = (0..n)
            .map(|_| Slot {
                // SAFETY: all-zero msghdr and iovec are valid (null pointers, zero lengths).
                hdr: unsafe { std::mem::zeroed() },
                // SAFETY: as above.
                iov: unsafe { std::mem::zeroed() },
                control: Control([0; 64]),
                lease: None,
                len: 0,
            })
            .collect();
        SendSlots { slots, free: (0..n).rev().collect() }
    }

    /// Sends in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// A free slot, if any.
    pub(super) fn acquire(&mut self) -> Option<usize> {
        self.free.pop()
    }

    /// Fills slot `index` to send `len` bytes at `payload` to the `name_len`-byte address at
    /// `name` (both inside the leased receive buffer), from `from` when given; returns the
    /// msghdr for the SQE. The slot keeps the lease until [`SendSlots::release`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prepare(
        &mut self,
        index: usize,
        lease: Lease,
        name: *mut u8,
        name_len: usize,
        payload: *mut u8,
        len: usize,
        from: Option<(IpAddr, u32)>,
    ) -> *const libc::msghdr {
        self.hold(index, lease, len);
        let slot = &mut self.slots[index];
        slot.iov = libc::iovec { iov_base: payload.cast(), iov_len: len };
        prepare_send(
            &mut slot.hdr,
            name.cast(),
            name_len as libc::socklen_t,
            &raw mut slot.iov,
            &mut slot.control,
            from,
        );
        &raw const slot.hdr
    }

    /// Gives slot `index` the buffer holding a `len`-byte answer sent without a msghdr
    /// (IORING_OP_SEND), until [`SendSlots::release`].
    pub(super) fn hold(&mut self, index: usize, lease: Lease, len: usize) {
        let slot = &mut self.slots[index];
        slot.lease = Some(lease);
        slot.len = len;
    }

    /// Frees slot `index` after its send completed; returns its buffer lease (None for a slot
    /// that was not in use) and the reply length.
    pub(super) fn release(&mut self, index: usize) -> (Option<Lease>, usize) {
        let lease = self.slots[index].lease.take();
        if lease.is_some() {
            self.free.push(index);
        }
        (lease, self.slots[index].len)
    }
}
