//! The benchmark tools' library: sample requests (built with stunedge's own writer), the load
//! generator engine behind `stunedge-bench`, and the checks it applies to every answer.

pub mod check;
pub mod load;
pub mod requests;

pub use requests::{Credentials, Kind, request, write_request};
