//! Binding requests of every kind the generator sends, written into a caller's buffer (no
//! allocation per request), and the transaction-ID layout that lets an answer be matched to
//! its request without a lookup table.

use stunedge::stun::attr::{IceControlling, Priority, Software, Username};
use stunedge::stun::registry::{ATTR_USE_CANDIDATE, MAGIC_COOKIE};
use stunedge::stun::{MessageType, MessageWriter, WriteError};

/// What a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A bare 20-byte Binding request.
    Plain,
    /// Binding with FINGERPRINT (28 bytes).
    Fingerprint,
    /// Binding with SOFTWARE.
    Software,
    /// Short-term credentials: USERNAME and MESSAGE-INTEGRITY (HMAC-SHA1 with the password).
    Integrity,
    /// An ICE connectivity check (~104 bytes): USERNAME, PRIORITY, ICE-CONTROLLING,
    /// USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT.
    Ice,
    /// An RFC 3489 classic Binding request: no magic cookie, 128-bit transaction ID.
    Classic,
}

impl Kind {
    /// Every kind, in `--mix` spelling order.
    pub const ALL: [Kind; 6] =
        [Kind::Plain, Kind::Fingerprint, Kind::Software, Kind::Integrity, Kind::Ice, Kind::Classic];

    /// Position in [`Kind::ALL`], the kind byte of a [`Tag`].
    pub const fn index(self) -> u8 {
        match self {
            Kind::Plain => 0,
            Kind::Fingerprint => 1,
            Kind::Software => 2,
            Kind::Integrity => 3,
            Kind::Ice => 4,
            Kind::Classic => 5,
        }
    }

    /// The `--mix` name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Fingerprint => "fingerprint",
            Kind::Software => "software",
            Kind::Integrity => "integrity",
            Kind::Ice => "ice",
            Kind::Classic => "classic",
        }
    }

    /// The kind with this `--mix` name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the request carries FINGERPRINT (so the answer must too).
    pub const fn has_fingerprint(self) -> bool {
        matches!(self, Kind::Fingerprint | Kind::Ice)
    }
}

/// Short-term credentials for the `integrity` and `ice` kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// USERNAME.
    pub username: String,
    /// The password, which is the MESSAGE-INTEGRITY key for short-term credentials.
    pub password: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials { username: "stunedge-bench".into(), password: "VOkJxbRl1RmTxUk/WvJxBt".into() }
    }
}

/// The bytes that replace the magic cookie in classic requests (anything but the cookie).
pub const CLASSIC_MARKER: [u8; 4] = [0x00, 0x00, 0x5e, 0xd9];

/// Writes a Binding request of `kind` with transaction ID `tid` into `buf`; returns its length.
pub fn write_request(
    kind: Kind,
    tid: [u8; 12],
    credentials: &Credentials,
    buf: &mut [u8],
) -> Result<usize, WriteError> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&if kind == Kind::Classic { CLASSIC_MARKER } else { MAGIC_COOKIE.to_be_bytes() });
    key[4..].copy_from_slice(&tid);
    let mut w = MessageWriter::new(buf, MessageType::BINDING_REQUEST, &key)?;
    match kind {
        Kind::Plain | Kind::Classic => {}
        Kind::Fingerprint => w.add_fingerprint()?,
        Kind::Software => w.add(&Software(b"stunedge-bench"))?,
        Kind::Integrity => {
            w.add(&Username(credentials.username.as_bytes()))?;
            w.add_integrity_sha1(credentials.password.as_bytes())?;
        }
        Kind::Ice => {
            w.add(&Username(credentials.username.as_bytes()))?;
            w.add(&Priority(0x6e00_01ff))?;
            w.add(&IceControlling(0x932f_f9b1_5126_3b36))?;
            w.add_raw(ATTR_USE_CANDIDATE, &[])?;
            w.add_integrity_sha1(credentials.password.as_bytes())?;
            w.add_fingerprint()?;
        }
    }
    Ok(w.finish())
}

/// A request of `kind` as a vector (benchmarks and tests).
pub fn request(kind: Kind, tid: [u8; 12]) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = write_request(kind, tid, &Credentials::default(), &mut buf).expect("sample requests fit 512 bytes");
    buf[..n].to_vec()
}

/// Where a request came from, packed into its 96-bit transaction ID: generator thread (1 byte),
/// socket within the thread (2), sequence number on that socket (8), kind (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Generator thread index.
    pub thread: u8,
    /// Socket index within the thread.
    pub socket: u16,
    /// Sequence number on the socket.
    pub seq: u64,
    /// Index into [`Kind::ALL`].
    pub kind: u8,
}

impl Tag {
    /// Packs into a transaction ID.
    pub fn to_tid(self) -> [u8; 12] {
        let mut tid = [0u8; 12];
        tid[0] = self.thread;
        tid[1..3].copy_from_slice(&self.socket.to_be_bytes());
        tid[3..11].copy_from_slice(&self.seq.to_be_bytes());
        tid[11] = self.kind;
        tid
    }

    /// Unpacks a transaction ID.
    pub fn from_tid(tid: [u8; 12]) -> Tag {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&tid[3..11]);
        Tag {
            thread: tid[0],
            socket: u16::from_be_bytes([tid[1], tid[2]]),
            seq: u64::from_be_bytes(seq),
            kind: tid[11],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stunedge::stun::Message;

    #[test]
    fn samples_parse() {
        for (kind, len) in [
            (Kind::Plain, 20),
            (Kind::Fingerprint, 28),
            (Kind::Software, 40),
            (Kind::Integrity, 20 + 20 + 24),
            (Kind::Ice, 20 + 20 + 8 + 12 + 4 + 24 + 8),
            (Kind::Classic, 20),
        ] {
            let bytes = request(kind, [1; 12]);
            assert_eq!(bytes.len(), len, "{kind:?}");
            let msg = Message::parse(&bytes).unwrap();
            assert_eq!(msg.is_classic(), kind == Kind::Classic);
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(Kind::ALL[usize::from(kind.index())], kind);
        }
    }

    #[test]
    fn tags_round_trip() {
        let tag = Tag { thread: 3, socket: 513, seq: 0x0102_0304_0506_0708, kind: 4 };
        assert_eq!(Tag::from_tid(tag.to_tid()), tag);
    }
}
