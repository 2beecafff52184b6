//! The benchmark tools' library: sample requests (built with stunedge's own writer), the load
//! generator engine behind `stunedge-bench` (UDP, and TCP in [`stream`]), the checks it applies
//! to every answer, and the reflection lab's floods and clients and the stream floods behind
//! `stunedge-flood`.

pub mod check;
pub mod flood;
pub mod load;
pub mod requests;
pub mod stream;

pub use requests::{Credentials, Kind, request, write_request};
