//! `stunedge-baseline`: the bare ceiling for any server on the kernel UDP stack. One
//! SO_REUSEPORT socket per pinned thread, recvmmsg / sendmmsg batches through the same
//! `io::mmsg` batch stunedge uses, and for every datagram of 20 bytes or more a Binding success
//! with XOR-MAPPED-ADDRESS written in place — no validation of anything. stunedge's rate is
//! reported as a ratio to this one's.
//!
//! Usage: `stunedge-baseline --listen 127.0.0.1:3479 --cpus 0 [--batch 32]`; SIGINT/SIGTERM stop.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use stunedge::io::mmsg::{MmsgBatch, wait_readable};
use stunedge::io::socket::{self, SocketOptions};

#[derive(Parser, Debug)]
#[command(name = "stunedge-baseline", about = "Bare recvmmsg/sendmmsg STUN answerer: the ceiling to compare against")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3479")]
    listen: SocketAddr,
    /// CPUs, one pinned thread each, e.g. "0" or "0-7".
    #[arg(long, default_value = "0")]
    cpus: String,
    /// Datagrams per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

/// Writes the answer over the request: type 0x0101, length, XOR-MAPPED-ADDRESS of `src`.
fn answer(buf: &mut [u8], src: SocketAddr) -> usize {
    let (family, attr_len) = if src.is_ipv4() { (1u8, 8u16) } else { (2u8, 20u16) };
    buf[0..2].copy_from_slice(&[0x01, 0x01]);
    buf[2..4].copy_from_slice(&(attr_len + 4).to_be_bytes());
    buf[20..24].copy_from_slice(&[0x00, 0x20, 0x00, attr_len as u8]);
    buf[24..26].copy_from_slice(&[0, family]);
    buf[26..28].copy_from_slice(&(src.port() ^ 0x2112).to_be_bytes());
    // Address XOR the magic cookie (IPv4) or cookie + transaction ID (IPv6), as whole words.
    let mut key = [0u8; 16];
    key.copy_from_slice(&buf[4..20]);
    match src.ip() {
        IpAddr::V4(ip) => {
            let cookie = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
            buf[28..32].copy_from_slice(&(u32::from(ip) ^ cookie).to_be_bytes());
        }
        IpAddr::V6(ip) => buf[28..44].copy_from_slice(&(u128::from(ip) ^ u128::from_be_bytes(key)).to_be_bytes()),
    }
    24 + usize::from(attr_len)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cpus = Vec::new();
    for part in args.cpus.split(',') {
        let range = part.split_once('-').map_or_else(|| (part, part), |(a, b)| (a, b));
        match (range.0.trim().parse::<usize>(), range.1.trim().parse::<usize>()) {
            (Ok(a), Ok(b)) if a <= b => cpus.extend(a..=b),
            _ => {
                eprintln!("stunedge-baseline: --cpus {:?}: not a CPU list like 0-7", args.cpus);
                return ExitCode::from(2);
            }
        }
    }
    let options = SocketOptions { reuse_port: true, recv_buffer: 4 << 20, send_buffer: 4 << 20 };
    let addr = match socket::claim(args.listen) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("stunedge-baseline: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let mut listeners = Vec::new();
    for _ in &cpus {
        match socket::bind(addr, &options) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("stunedge-baseline: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("stunedge-baseline: signal handler: {e}");
            return ExitCode::from(2);
        }
    }
    eprintln!("stunedge-baseline listening on {addr} with {} threads", cpus.len());
    let threads: Vec<_> = cpus
        .into_iter()
        .zip(listeners)
        .map(|(cpu, listener)| {
            let stop = stop.clone();
            let batch_size = args.batch.clamp(1, 1024);
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let fd = listener.socket.as_raw_fd();
                let mut batch = MmsgBatch::new(batch_size);
                let mut pollfd = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
                while !stop.load(Ordering::Relaxed) {
                    let n = batch.recv(fd).unwrap_or(0);
                    if n == 0 {
                        let _ = wait_readable(&mut pollfd, 200);
                        continue;
                    }
                    for i in 0..n {
                        let packet = batch.received(i);
                        if let (Some(src), true) = (packet.src, packet.len >= 20) {
                            let len = answer(packet.buf, src);
                            batch.queue_reply(i, len, None);
                        }
                    }
                    batch.flush(fd);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}
