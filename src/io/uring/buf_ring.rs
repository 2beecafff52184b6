//! The provided-buffer ring (io_uring_register_buf_ring, since Linux 5.19): a page-aligned array
//! of `io_uring_buf` entries the kernel picks receive buffers from, and the buffers themselves,
//! one contiguous allocation owned by this type. A buffer is either in the ring (the kernel may
//! write it) or lent to user space after a completion named its id; [`BufRing::recycle`] gives
//! it back and [`BufRing::commit`] publishes the new tail once per loop turn.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// A receive buffer lent to user space by a completion. It is the only handle to that buffer
/// while the kernel does not own it, and it must go back with [`BufRing::recycle`], at once or
/// after the send that carries the answer from it has completed. It cannot be copied; dropping
/// it instead would lose the buffer from the ring for good, which is a bug (debug builds panic).
#[must_use = "a lent buffer must go back to the ring"]
#[derive(Debug)]
pub(super) struct Lease {
    bid: u16,
}

impl Drop for Lease {
    fn drop(&mut self) {
        debug_assert!(std::thread::panicking(), "buffer {} dropped instead of returned to the ring", self.bid);
    }
}

/// Buffers in the ring, and so the most datagrams received but not yet answered or dropped.
pub(super) const BUFFERS: u16 = 1024;

/// A ring of `BUFFERS` buffers of `buf_len` bytes each.
pub(super) struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    buffers: *mut u8,
    buffers_layout: Layout,
    buf_len: usize,
    /// Our copy of the tail; published with `commit`.
    tail: u16,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing").field("buffers", &BUFFERS).field("buf_len", &self.buf_len).finish()
    }
}

impl BufRing {
    /// Allocates the ring and the buffers and puts every buffer in the ring (not yet
    /// published: call [`BufRing::commit`] after registering).
    pub(super) fn new(buf_len: usize) -> io::Result<BufRing> {
        let entries_layout = Layout::from_size_align(usize::from(BUFFERS) * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        let buffers_layout = Layout::from_size_align(usize::from(BUFFERS) * buf_len, 64)
            .map_err(|_| io::Error::other("buffer layout"))?;
        // SAFETY: both layouts have a non-zero size (BUFFERS > 0, buf_len > 0 checked below).
        let (entries, buffers) = unsafe {
            assert!(buf_len > 0);
            (alloc_zeroed(entries_layout).cast::<BufRingEntry>(), alloc_zeroed(buffers_layout))
        };
        if entries.is_null() || buffers.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut ring = BufRing { entries, entries_layout, buffers, buffers_layout, buf_len, tail: 0 };
        for bid in 0..BUFFERS {
            ring.push(bid);
        }
        Ok(ring)
    }

    /// The ring's address, for io_uring_register_buf_ring.
    pub(super) fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// Start of buffer `bid`.
    fn ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid % BUFFERS < BUFFERS, so the offset stays inside the buffers allocation.
        unsafe { self.buffers.add(usize::from(bid % BUFFERS) * self.buf_len) }
    }

    /// Takes buffer `bid` out of the kernel's hands, as a completion reports.
    ///
    /// # Safety
    /// `bid` must come from a completion that selected it, and not be lent already: the kernel
    /// has finished writing it and will not touch it until it is recycled.
    pub(super) unsafe fn lend(&self, bid: u16) -> Lease {
        Lease { bid: bid % BUFFERS }
    }

    /// Start of a lent buffer, for the pointers a send needs.
    pub(super) fn buffer_ptr(&self, lease: &Lease) -> *mut u8 {
        self.ptr(lease.bid)
    }

    /// A lent buffer's bytes.
    pub(super) fn buffer_mut(&mut self, lease: &Lease) -> &mut [u8] {
        // SAFETY: a Lease exists only for a buffer the kernel has handed back (see `lend`) and
        // is unique per buffer; the slice is buf_len bytes inside our allocation, borrowed as
        // long as `self` is, so no second reference can be made meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(lease.bid), self.buf_len) }
    }

    /// Gives a lent buffer back to the ring (visible to the kernel after [`BufRing::commit`]).
    pub(super) fn recycle(&mut self, lease: Lease) {
        let bid = lease.bid;
        std::mem::forget(lease);
        self.push(bid);
    }

    /// Puts buffer `bid` in the ring.
    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail % BUFFERS);
        // SAFETY: index < BUFFERS, inside the entries allocation; the kernel reads entries only
        // up to the published tail, and this one is past it until commit.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(self.ptr(bid) as u64);
        entry.set_len(self.buf_len as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes every recycled buffer to the kernel (one release store).
    pub(super) fn commit(&mut self) {
        // SAFETY: the tail field overlays the `resv` field of entry 0 (io_uring_buf_ring);
        // BufRingEntry::tail returns its address, which is 2-byte aligned and lives as long as
        // the allocation. The kernel reads it concurrently, hence the atomic release store.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts; the owner drops a BufRing only
        // once the kernel is done with it (the driver drains and unregisters first, and the
        // probe unregisters before dropping).
        unsafe {
            dealloc(self.entries.cast(), self.entries_layout);
            dealloc(self.buffers, self.buffers_layout);
        }
    }
}
