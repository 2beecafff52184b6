//! The STUN wire format, sans-IO: RFC 8489 / RFC 5389 messages and RFC 3489 classic messages
//! (no magic cookie, 128-bit transaction ID). Zero-copy views for parsing ([`Message`]), an
//! in-place writer for building ([`MessageWriter`]), typed attribute values ([`attr`]), the
//! IANA registries ([`registry`]) and FINGERPRINT / MESSAGE-INTEGRITY(-SHA256) ([`integrity`]).
//!
//! This module does no I/O, reads no clock, never allocates and contains no `unsafe`.
#![forbid(unsafe_code)]

pub mod attr;
pub mod crc32;
pub mod header;
pub mod integrity;
pub mod message;
pub mod registry;
pub mod writer;

pub use attr::{AttrError, Attribute};
pub use header::CookieAndId;
pub use integrity::Check;
pub use message::{Message, ParseError, RawAttribute, TransactionId};
pub use registry::{Class, MAGIC_COOKIE, MessageType};
pub use writer::{MessageWriter, WriteError};
