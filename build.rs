//! Checks the committed XDP object against its source. The crate always embeds the committed
//! `src/xdp/stun.bpf.o`, so a build needs no clang; where clang, llvm-strip and libbpf's headers
//! are present (and `STUNEDGE_XDP_REBUILD` is not `0`), this rebuilds the object into `OUT_DIR`
//! with `scripts/build-xdp.sh` and warns when it differs from the committed one (CI fails on
//! that difference with `scripts/build-xdp.sh --check`).

use std::path::Path;
use std::process::Command;

fn main() {
    for path in ["src/xdp/stun.bpf.c", "src/xdp/limit.bpf.h", "src/xdp/stun.bpf.o", "scripts/build-xdp.sh"] {
        println!("cargo::rerun-if-changed={path}");
    }
    println!("cargo::rerun-if-env-changed=STUNEDGE_XDP_REBUILD");
    if std::env::var_os("STUNEDGE_XDP_REBUILD").is_some_and(|v| v == "0") {
        return;
    }
    let on_path = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if !on_path("clang") || !on_path("llvm-strip") || !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        return;
    }
    let out = Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("stun.bpf.o");
    let built = Command::new("bash").arg("scripts/build-xdp.sh").arg("--out").arg(&out).status();
    match built {
        Ok(status) if status.success() => {
            if std::fs::read(&out).ok() != std::fs::read("src/xdp/stun.bpf.o").ok() {
                println!(
                    "cargo::warning=src/xdp/stun.bpf.o differs from a fresh build of src/xdp/stun.bpf.c \
                     (the committed object is the one embedded): run scripts/build-xdp.sh and commit it"
                );
            }
        }
        _ => println!("cargo::warning=scripts/build-xdp.sh failed; the committed src/xdp/stun.bpf.o is embedded"),
    }
}
