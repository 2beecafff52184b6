//! stunedge: a STUN edge appliance. See README.md for the architecture; each module's doc says
//! what it owns and what it must not do.
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod handler;
pub mod io;
pub mod metrics;
pub mod stun;
pub mod worker;
