//! The `stunedge` command: `serve`, `probe`, `check-config`, `--print-config`. Everything it does
//! is in the library's [`stunedge::cli`]; this file picks the allocator and hands over the
//! parsed arguments.

use clap::Parser as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stunedge::cli::run(stunedge::cli::Cli::parse())
}
