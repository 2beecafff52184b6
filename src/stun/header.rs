//! The 20-byte STUN header as named offsets, the cookie-and-ID XOR key, and attribute padding
//! (RFC 8489 §5, §14). The leaf of the wire format: every other `stun` module may use it, it
//! uses only the registry's numbers. No I/O, no allocation, no `unsafe`.

use super::registry::{HEADER_LEN, MAGIC_COOKIE};

/// Offset of the message type field.
pub const TYPE_OFFSET: usize = 0;
/// Offset of the message length field.
pub const LENGTH_OFFSET: usize = 2;
/// Offset of the magic cookie (RFC 5389/8489) or the first transaction-ID bytes (RFC 3489).
pub const COOKIE_OFFSET: usize = 4;
/// Offset of the 96-bit transaction ID of an RFC 5389/8489 message.
pub const TRANSACTION_ID_OFFSET: usize = 8;

/// Bytes 4..20 of a header: the magic cookie plus the 96-bit transaction ID, or the classic
/// 128-bit transaction ID. XOR-address coding uses it as the XOR key (RFC 8489 §14.2).
pub type CookieAndId = [u8; 16];

/// The length of an attribute value padded to a multiple of 4 (RFC 8489 §14).
#[inline]
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The big-endian `u16` at `at`. Callers have checked that `b` holds `at + 2` bytes.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// True when a header's bytes 4..8 are not the magic cookie: an RFC 3489 classic message.
/// `header` holds at least [`HEADER_LEN`] bytes (checked by the caller's header check; a
/// shorter slice is reported as classic rather than panicking).
#[inline]
pub fn is_classic(header: &[u8]) -> bool {
    match header {
        [_, _, _, _, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) != MAGIC_COOKIE,
        _ => true,
    }
}

// The pattern in `is_classic` reads bytes COOKIE_OFFSET..COOKIE_OFFSET + 4.
const _: () = assert!(COOKIE_OFFSET == 4 && TRANSACTION_ID_OFFSET + 12 == HEADER_LEN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_cookie() {
        assert_eq!([0, 1, 4, 5, 8].map(padded), [0, 4, 4, 8, 8]);
        let mut header = [0u8; HEADER_LEN];
        assert!(is_classic(&header));
        header[COOKIE_OFFSET..TRANSACTION_ID_OFFSET].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(!is_classic(&header));
        assert!(is_classic(&header[..6]), "short input is not a modern header");
        assert_eq!(be16(&[0x12, 0x34], 0), 0x1234);
    }
}
