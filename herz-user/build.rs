//! Embeds the eBPF object built by `cargo xtask build` (herz-ebpf, bpfel-unknown-none).
//!
//! Without it the binary still builds (so `cargo check`, clippy and the pure tests work everywhere), and
//! the daemon reports "shield disabled: built without the eBPF object".

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(herz_ebpf)");
    println!("cargo::rerun-if-env-changed=HERZ_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = env::var_os("HERZ_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            manifest.join("../herz-ebpf/target/bpfel-unknown-none/release/herz-ebpf")
        });
    println!("cargo::rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("herz.bpf.o");
    match fs::read(&object) {
        Ok(bytes) if !bytes.is_empty() => {
            fs::write(&out, bytes).unwrap();
            println!("cargo::rustc-cfg=herz_ebpf");
        }
        _ => {
            println!(
                "cargo::warning=eBPF object {} not found: building without the shield (use `cargo xtask build`)",
                object.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
