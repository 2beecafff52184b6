#![doc = include_str!("../docs/architecture.md")]
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod counters;
pub mod handler;
pub mod io;
pub mod lb;
pub mod limit;
pub mod metrics;
pub mod stream;
pub mod stun;
pub mod worker;
pub mod xdp;
