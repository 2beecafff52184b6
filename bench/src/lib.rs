//! Shared pieces of the benchmark tools: sample requests built with stunedge's own writer,
//! used by the criterion micro-benchmarks (and by the load generator as it grows).

use stunedge::stun::attr::{IceControlling, Priority, Software, Username};
use stunedge::stun::registry::{ATTR_USE_CANDIDATE, MAGIC_COOKIE};
use stunedge::stun::{MessageType, MessageWriter};

/// Bytes 4..20 of a header: the magic cookie and a transaction ID.
pub fn cookie_and_id(tid: [u8; 12]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid);
    key
}

/// What a sample request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bare 20-byte Binding request.
    Plain,
    /// Binding with FINGERPRINT (28 bytes).
    Fingerprint,
    /// An ICE connectivity check: USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
    /// MESSAGE-INTEGRITY, FINGERPRINT (~100 bytes).
    Ice,
    /// Binding with SOFTWARE.
    Software,
}

/// A Binding request of the given kind.
pub fn request(kind: Kind, tid: [u8; 12]) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &cookie_and_id(tid))
        .expect("512 bytes hold a header");
    let built = (|| {
        match kind {
            Kind::Plain => {}
            Kind::Fingerprint => w.add_fingerprint()?,
            Kind::Software => w.add(&Software(b"stunedge-bench"))?,
            Kind::Ice => {
                w.add(&Username(b"remoteufrag:localufrag"))?;
                w.add(&Priority(0x6e00_01ff))?;
                w.add(&IceControlling(0x932f_f9b1_5126_3b36))?;
                w.add_raw(ATTR_USE_CANDIDATE, &[])?;
                w.add_integrity_sha1(b"VOkJxbRl1RmTxUk/WvJxBt")?;
                w.add_fingerprint()?;
            }
        }
        Ok::<_, stunedge::stun::WriteError>(())
    })();
    built.expect("sample requests fit 512 bytes");
    let n = w.finish();
    buf[..n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stunedge::stun::Message;

    #[test]
    fn samples_parse() {
        for (kind, len) in [(Kind::Plain, 20), (Kind::Fingerprint, 28), (Kind::Software, 40), (Kind::Ice, 104)] {
            let bytes = request(kind, [1; 12]);
            assert_eq!(bytes.len(), len, "{kind:?}");
            assert!(Message::parse(&bytes).is_ok());
        }
    }
}
