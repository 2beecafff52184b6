//! Framing on a stream (RFC 8489 §6.2.2): STUN messages back to back, each as long as its
//! header says (20 bytes + the length field), with no other framing; and, only so that it can
//! be skipped, TURN ChannelData (RFC 8656 §12.4–12.5: a 4-byte header with the channel number
//! 0x4000–0x4FFF and a length, the data padded to a multiple of four on a stream). There is no
//! way to find the next message after bytes that are neither, so they end the connection.
//! Sans-IO: looks at a buffer, says what is at its start. Lengths are computed in `usize`, never
//! in the 16 bits of the field (coturn #1837/#1964 and pion/turn #593 overflowed there).

use crate::stun::registry::{HEADER_LEN, MAGIC_COOKIE};

/// What is at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole STUN message of this many bytes (header included).
    Stun(usize),
    /// A whole ChannelData message of this many bytes on the stream (padding included).
    ChannelData(usize),
}

/// Why the stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte starts neither STUN (0–3) nor ChannelData (0x40–0x4F; RFC 7983): TLS on
    /// a plain TCP port, HTTP, garbage.
    NotStun,
    /// A STUN header without the magic cookie (RFC 3489 classic messages have no stream
    /// framing) or with a length that is not a multiple of four.
    BadHeader,
    /// The message (or ChannelData) is longer than the largest one accepted.
    TooLarge,
}

/// The frame at the start of `buf`, `None` while more bytes are needed to tell or to complete
/// it; a message longer than `max` bytes is [`FrameError::TooLarge`] as soon as its header
/// says so.
pub fn next(buf: &[u8], max: usize) -> Result<Option<Frame>, FrameError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    // RFC 7983's first-byte ranges: 0–3 STUN, 64–79 TURN channels (20–63 would be TLS).
    let channel_data = (0x40..=0x4F).contains(&first);
    if first > 3 && !channel_data {
        return Err(FrameError::NotStun);
    }
    let Some(field) = buf.get(2..4) else { return Ok(None) };
    let len = usize::from(u16::from_be_bytes([field[0], field[1]]));
    let total = if channel_data { 4 + len.next_multiple_of(4) } else { HEADER_LEN + len };
    if !channel_data {
        if len % 4 != 0 {
            return Err(FrameError::BadHeader);
        }
        if let Some(cookie) = buf.get(4..8) {
            if cookie != MAGIC_COOKIE.to_be_bytes() {
                return Err(FrameError::BadHeader);
            }
        }
    }
    if total > max {
        return Err(FrameError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(if channel_data { Frame::ChannelData(total) } else { Frame::Stun(total) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 2048;

    fn binding(attrs: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 1];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(attrs);
        m
    }

    #[test]
    fn a_message_split_byte_by_byte_is_whole_only_at_its_last_byte() {
        let m = binding(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
        for end in 0..m.len() {
            assert_eq!(next(&m[..end], MAX), Ok(None), "{end} bytes");
        }
        assert_eq!(next(&m, MAX), Ok(Some(Frame::Stun(28))));
    }

    #[test]
    fn two_messages_in_one_read_are_taken_one_at_a_time() {
        let (a, b) = (binding(&[]), binding(&[0, 0x24, 0, 4, 1, 2, 3, 4]));
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(next(&both, MAX), Ok(Some(Frame::Stun(a.len()))));
        assert_eq!(next(&both[a.len()..], MAX), Ok(Some(Frame::Stun(b.len()))));
    }

    #[test]
    fn channel_data_is_padded_to_four_on_a_stream() {
        // Channel 0x4000, 5 bytes of data + 3 of padding, then a Binding.
        let mut s = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        s.extend(binding(&[]));
        assert_eq!(next(&s[..11], MAX), Ok(None));
        assert_eq!(next(&s, MAX), Ok(Some(Frame::ChannelData(12))));
        assert_eq!(next(&s[12..], MAX), Ok(Some(Frame::Stun(20))));
    }

    #[test]
    fn huge_lengths_are_refused_from_the_header_without_wrapping() {
        for len in [0xFFECu16, 0xFFFC, 0xFFFF] {
            let mut stun = binding(&[]);
            stun[2..4].copy_from_slice(&(len & !3).to_be_bytes());
            assert_eq!(next(&stun, MAX), Err(FrameError::TooLarge), "{len:#x}");
            // pion/turn #593: 4 + 0xFFFC rounded up wrapped to 0 in 16 bits.
            let cd = [0x40, 0x01, (len >> 8) as u8, len as u8];
            assert_eq!(next(&cd, MAX), Err(FrameError::TooLarge), "{len:#x}");
            assert_eq!(next(&cd, usize::MAX), Ok(None), "{len:#x}: needs more, never wraps");
        }
    }

    #[test]
    fn garbage_tls_http_and_classic_stun_end_the_stream() {
        assert_eq!(next(&[0x16, 3, 1, 0, 200], MAX), Err(FrameError::NotStun), "a TLS ClientHello");
        assert_eq!(next(b"POST / HTTP/1.1\r\n", MAX), Err(FrameError::NotStun));
        // "GE" reads as a ChannelData header (0x47 is in RFC 7983's 64–79) of 0x5420 bytes.
        assert_eq!(next(b"GET / HTTP/1.1\r\n", MAX), Err(FrameError::TooLarge));
        assert_eq!(next(&[0x04], MAX), Err(FrameError::NotStun), "past STUN's 0–3");
        assert_eq!(next(&[0x50, 0, 0, 4], MAX), Err(FrameError::NotStun), "reserved channel");
        assert_eq!(next(&[0xFF], MAX), Err(FrameError::NotStun));
        let mut classic = binding(&[]);
        classic[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(next(&classic[..8], MAX), Err(FrameError::BadHeader));
        let mut odd = binding(&[]);
        odd[3] = 3;
        assert_eq!(next(&odd[..4], MAX), Err(FrameError::BadHeader));
        assert_eq!(next(&[], MAX), Ok(None));
        assert_eq!(next(&[0], MAX), Ok(None));
    }

    #[test]
    fn the_largest_accepted_message_fits_exactly() {
        let m = binding(&vec![0; MAX - HEADER_LEN]);
        assert_eq!(next(&m, MAX), Ok(Some(Frame::Stun(MAX))));
        let m = binding(&vec![0; MAX - HEADER_LEN + 4]);
        assert_eq!(next(&m[..4], MAX), Err(FrameError::TooLarge));
    }
}
