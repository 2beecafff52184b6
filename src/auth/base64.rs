//! Standard base64 (RFC 4648 §4, with `=` padding), the alphabet RFC 8489 §9.2 uses for the
//! nonce cookie and the TURN REST API uses for its passwords. Encodes into caller buffers; no
//! allocation, no panics on any input.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encoded length of `n` input bytes, with padding.
pub const fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Encodes `input` into the front of `out` (which must hold [`encoded_len`] bytes) and returns
/// the number of bytes written, or `None` when `out` is too small.
pub fn encode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = encoded_len(input.len());
    let out = out.get_mut(..len)?;
    for (chunk, dst) in input.chunks(3).zip(out.chunks_mut(4)) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i <= chunk.len() { ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] } else { b'=' };
        }
    }
    Some(len)
}

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes exactly `N` bytes from unpadded base64 text of length `ceil(4N/3)`; `None` for any
/// other length or a character outside the alphabet.
pub fn decode_exact<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    let mut acc = 0u32;
    let mut bits = 0;
    let mut at = 0;
    for &c in text {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(at)? = (acc >> bits) as u8;
            at += 1;
        }
    }
    // Leftover bits must be zero for the encoding to be canonical.
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(input: &[u8]) -> String {
        let mut out = [0u8; 64];
        let n = encode(input, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 §10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(enc(plain.as_bytes()), coded);
        }
        assert_eq!(decode_exact::<3>(b"Zm9v"), Some(*b"foo"));
        assert_eq!(decode_exact::<4>(b"Zm9vYg"), Some(*b"foob"));
        assert_eq!(decode_exact::<4>(b"Zm9vYh"), None, "non-zero leftover bits");
        assert_eq!(decode_exact::<3>(b"Zm9"), None);
        assert_eq!(decode_exact::<3>(b"Zm9*"), None);
        assert_eq!(encode(b"abcd", &mut [0u8; 7]), None);
    }

    proptest::proptest! {
        #[test]
        fn round_trip(bytes: [u8; 12]) {
            let mut out = [0u8; 16];
            proptest::prop_assert_eq!(encode(&bytes, &mut out), Some(16));
            proptest::prop_assert_eq!(decode_exact::<12>(&out), Some(bytes));
        }
    }
}
