//! A zero-copy view over one STUN datagram: header checks, the attribute walker and the
//! RFC 8489 §14.5 rule that attributes after MESSAGE-INTEGRITY are ignored. Parsing never
//! allocates and, once [`Message::parse`] has succeeded, no accessor can panic.

use super::registry::{
    ATTR_FINGERPRINT, ATTR_HEADER_LEN, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, HEADER_LEN, MessageType,
};

use super::header::be16;
pub use super::header::{COOKIE_OFFSET, CookieAndId, LENGTH_OFFSET, TRANSACTION_ID_OFFSET, TYPE_OFFSET, padded};

/// Why a datagram is not a well-formed STUN message. The first four are header faults (the
/// datagram is not answerable STUN and is dropped); the last is an attribute fault in a
/// message with a valid header (a request is answered with 400 Bad Request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Fewer than 20 bytes.
    TooShort,
    /// One of the two most significant bits is set (RFC 8489 §5): not STUN.
    NotStun,
    /// The length field is not a multiple of 4 (RFC 8489 §5).
    UnalignedLength,
    /// 20 + the length field differs from the datagram's size.
    LengthMismatch,
    /// An attribute's value (plus padding) runs past the end of the message.
    AttributeOverrun,
}

impl ParseError {
    /// True for faults in the 20-byte header: such a datagram is never answered.
    pub const fn is_header_fault(self) -> bool {
        matches!(
            self,
            ParseError::TooShort | ParseError::NotStun | ParseError::UnalignedLength | ParseError::LengthMismatch
        )
    }
}

/// A transaction identifier: the 96 bits after the magic cookie (RFC 8489), or for RFC 3489
/// classic messages the 128 bits at offset 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// One attribute as it sits in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub attr_type: u16,
    /// Value without padding.
    pub value: &'a [u8],
    /// Offset of the attribute's type field from the start of the message.
    pub offset: usize,
}

/// Checks the header of a datagram: size, leading bits, length alignment and that the length
/// field covers the datagram exactly. Returns the message type. Does not walk attributes.
#[inline]
pub fn check_header(datagram: &[u8]) -> Result<MessageType, ParseError> {
    if datagram.len() < HEADER_LEN {
        return Err(ParseError::TooShort);
    }
    let raw_type = be16(datagram, TYPE_OFFSET);
    if raw_type & 0xC000 != 0 {
        return Err(ParseError::NotStun);
    }
    let length = usize::from(be16(datagram, LENGTH_OFFSET));
    if length % 4 != 0 {
        return Err(ParseError::UnalignedLength);
    }
    if HEADER_LEN + length != datagram.len() {
        return Err(ParseError::LengthMismatch);
    }
    Ok(MessageType::from_u16(raw_type))
}

/// A checked view of one STUN message (header and attribute framing verified).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    bytes: &'a [u8],
    message_type: MessageType,
}

impl<'a> Message<'a> {
    /// Checks the header and the framing of every attribute. `datagram` must be exactly one
    /// message (UDP framing). Always inlined: the Binding path's one parse (callgrind: out of
    /// line it cost that path about 40 instructions once a second caller, the TURN answers,
    /// made the compiler stop inlining it).
    #[inline(always)]
    pub fn parse(datagram: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let message_type = check_header(datagram)?;
        let mut at = HEADER_LEN;
        while at < datagram.len() {
            // The length is 4-aligned and so is every padded attribute, so at least a whole
            // attribute header remains here.
            let len = usize::from(be16(datagram, at + 2));
            let end = at + ATTR_HEADER_LEN + padded(len);
            if end > datagram.len() {
                return Err(ParseError::AttributeOverrun);
            }
            at = end;
        }
        Ok(Message { bytes: datagram, message_type })
    }

    /// The whole message.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The message type.
    #[inline]
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The length field (bytes after the header).
    #[inline]
    pub fn length(&self) -> u16 {
        be16(self.bytes, LENGTH_OFFSET)
    }

    /// True when bytes 4..8 are not the magic cookie: an RFC 3489 classic message.
    #[inline]
    pub fn is_classic(&self) -> bool {
        super::header::is_classic(self.bytes)
    }

    /// The 96-bit transaction ID (for classic messages, the last 96 of its 128 bits).
    #[inline]
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0; 12];
        id.copy_from_slice(&self.bytes[TRANSACTION_ID_OFFSET..HEADER_LEN]);
        TransactionId(id)
    }

    /// Bytes 4..20: magic cookie and transaction ID, or the classic 128-bit transaction ID.
    #[inline]
    pub fn cookie_and_id(&self) -> CookieAndId {
        let mut out = [0; 16];
        out.copy_from_slice(&self.bytes[COOKIE_OFFSET..HEADER_LEN]);
        out
    }

    /// Every attribute in wire order, including those RFC 8489 says to ignore.
    #[inline]
    pub fn raw_attributes(&self) -> RawAttributes<'a> {
        RawAttributes { bytes: self.bytes, at: HEADER_LEN }
    }

    /// The attributes an agent acts on (RFC 8489 §14.5–14.7): everything up to
    /// MESSAGE-INTEGRITY; after it only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT; after
    /// MESSAGE-INTEGRITY-SHA256 only FINGERPRINT; nothing after FINGERPRINT.
    #[inline]
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { raw: self.raw_attributes(), after: After::Nothing }
    }

    /// The first acted-on attribute of the given type.
    pub fn attribute(&self, attr_type: u16) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.attr_type == attr_type)
    }

    /// The value of the first acted-on attribute of the given type.
    #[inline]
    pub fn value(&self, attr_type: u16) -> Option<&'a [u8]> {
        self.attribute(attr_type).map(|a| a.value)
    }

    /// Typed access: decodes the first acted-on attribute of `A`'s type. `None` when absent.
    pub fn get<A: super::attr::Attribute<'a>>(&self) -> Option<Result<A, super::attr::AttrError>> {
        self.value(A::TYPE).map(|v| A::decode(v, &self.cookie_and_id()))
    }
}

/// Iterator over attributes in wire order. Built only by [`Message`], so framing is known good.
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = RawAttribute<'a>;

    #[inline]
    fn next(&mut self) -> Option<RawAttribute<'a>> {
        // Framing was verified by Message::parse; `get` keeps this panic-free regardless.
        let head = self.bytes.get(self.at..self.at + ATTR_HEADER_LEN)?;
        let attr_type = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let start = self.at + ATTR_HEADER_LEN;
        let value = self.bytes.get(start..start + len)?;
        let offset = self.at;
        self.at = start + padded(len);
        Some(RawAttribute { attr_type, value, offset })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Integrity,
    IntegritySha256,
    Fingerprint,
}

/// Iterator over the attributes an agent acts on; see [`Message::attributes`].
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    raw: RawAttributes<'a>,
    after: After,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    #[inline]
    fn next(&mut self) -> Option<RawAttribute<'a>> {
        loop {
            let attr = self.raw.next()?;
            let (acted_on, next) = match (self.after, attr.attr_type) {
                (After::Fingerprint, _) => return None,
                (_, ATTR_FINGERPRINT) => (true, After::Fingerprint),
                (After::Nothing, ATTR_MESSAGE_INTEGRITY) => (true, After::Integrity),
                (After::Nothing | After::Integrity, ATTR_MESSAGE_INTEGRITY_SHA256) => (true, After::IntegritySha256),
                (After::Nothing, _) => (true, After::Nothing),
                (state, _) => (false, state),
            };
            self.after = next;
            if acted_on {
                return Some(attr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::registry::*;

    fn message(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        out.extend_from_slice(&[7; 12]);
        for (t, v) in attrs {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
            out.resize(padded(out.len()), 0);
        }
        let len = (out.len() - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn header_faults() {
        let good = message(&[]);
        assert_eq!(Message::parse(&good[..19]).unwrap_err(), ParseError::TooShort);
        let mut bad = good.clone();
        bad[0] = 0x40;
        assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::NotStun);
        let mut bad = message(&[(ATTR_SOFTWARE, b"abcd")]);
        bad[3] = 7;
        assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::UnalignedLength);
        bad[3] = 4;
        assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::LengthMismatch);
        assert!(ParseError::LengthMismatch.is_header_fault());
        assert!(!ParseError::AttributeOverrun.is_header_fault());
    }

    #[test]
    fn attribute_faults() {
        // SOFTWARE claims 9 bytes but only 8 follow.
        let mut bad = message(&[(ATTR_SOFTWARE, b"abcdefgh")]);
        bad[23] = 9;
        assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::AttributeOverrun);
        // An empty value is well-formed.
        let ok = message(&[(ATTR_SOFTWARE, b"")]);
        assert!(Message::parse(&ok).is_ok());
    }

    #[test]
    fn ignores_attributes_after_integrity() {
        let bytes = message(&[
            (ATTR_USERNAME, b"u"),
            (ATTR_MESSAGE_INTEGRITY, &[0; 20]),
            (0x0023, b"late"),
            (ATTR_MESSAGE_INTEGRITY_SHA256, &[0; 32]),
            (ATTR_SOFTWARE, b"late"),
            (ATTR_FINGERPRINT, &[0; 4]),
            (ATTR_SOFTWARE, b"after fingerprint"),
        ]);
        let msg = Message::parse(&bytes).unwrap();
        let acted: Vec<u16> = msg.attributes().map(|a| a.attr_type).collect();
        assert_eq!(acted, [ATTR_USERNAME, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_FINGERPRINT]);
        assert_eq!(msg.raw_attributes().count(), 7);
        assert_eq!(msg.value(ATTR_SOFTWARE), None);
        assert_eq!(msg.value(ATTR_USERNAME), Some(&b"u"[..]));
    }

    #[test]
    fn classic_is_detected_by_cookie() {
        let mut bytes = message(&[]);
        assert!(!Message::parse(&bytes).unwrap().is_classic());
        bytes[4] = 0;
        assert!(Message::parse(&bytes).unwrap().is_classic());
    }
}
