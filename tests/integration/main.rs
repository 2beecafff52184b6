//! The one integration-test binary: RFC 5769 vectors, the IANA registry, the zero-allocation
//! proof, the server on loopback (in-process, byte-exact answers and drop accounting), and the
//! real `stunedge` binary (CLI, exit codes, interop with coturn's `turnutils_stunclient`).

mod admin;
mod alloc;
mod amplification;
mod auth;
mod browser;
mod cli;
mod fleet;
mod iana;
mod loopback;
mod natlab;
mod probe;
mod real_clients;
mod reflection;
mod rfc5769;
mod rfc5780;
mod stream;
mod support;
mod turn_lb;
mod xdp;
