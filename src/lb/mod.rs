//! TURN load balancing (issue 16): the choice of the TURN backend an Allocate is redirected to
//! with a 300 (Try Alternate). This room owns the backend pool and the choice: a [`Pool`] is
//! built once (from the configuration, on start and on reload) and then only read; its
//! [`Pool::pick`] runs weighted rendezvous (HRW) hashing over the backends of the client's
//! address family that are healthy and not draining, in O(backends), with no allocation, no
//! lock, no clock and no panic, and every process given the same backends and seed picks the
//! same backend for a client (see [`hrw`]). It must not do I/O or run on the packet path except
//! through that pick on an immutable snapshot; health checks run on their own thread and reach
//! the pick only as the `healthy` mask its caller passes.
//!
//! Built, not yet wired: issue 16 continues with the `[turn_lb]` configuration, the health
//! thread that publishes the mask, the handler's 300 / 437 / 508 answers and their metrics.
//! Nothing in the crate calls this room yet.

pub mod hrw;

pub use self::hrw::{Backend, Choice, DEFAULT_IPV6_PREFIX, HashKey, KeyRule, Pool, PoolError, Seed};
