//! Lays out the release binary's code: the functions a running gateway
//! executes (start-up, the request path of every load case, the admin
//! probes), listed in `link-order.txt` (what every configuration runs
//! first, hottest first), are placed together at the front of `.text`. The
//! kernel maps executable pages 64 KiB or more at a time around each page
//! touched, so scattered functions cost a process
//! megabytes of resident memory it never runs; grouped, they cost what
//! they are, and the request path shares fewer cache lines and TLB entries.
//! `benches/link_order.sh` regenerates the list; a symbol it names that a
//! build no longer has is ignored, so a stale list only lays out less.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=PORTEIRO_LINK_ORDER");
    // Symbol names carry a hash of the build's settings: only a release
    // build matches the list, made from one.
    if env::var("PORTEIRO_LINK_ORDER").is_ok_and(|v| v == "0")
        || env::var("PROFILE").as_deref() != Ok("release")
        || !links_with_lld()
    {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let list = Path::new(&dir).join("link-order.txt");
    if !list.is_file() {
        return;
    }
    println!("cargo:rustc-link-arg-bin=porteiro=-Wl,--symbol-ordering-file={}", list.display());
    println!("cargo:rustc-link-arg-bin=porteiro=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc links this target with its own LLD, whose option this is
/// (GNU ld refuses it): the default for x86_64 Linux GNU since Rust 1.90,
/// unless the build's flags choose a linker themselves.
fn links_with_lld() -> bool {
    let target = |key: &str| env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_ARCH") != "x86_64"
        || target("CARGO_CFG_TARGET_OS") != "linux"
        || target("CARGO_CFG_TARGET_ENV") != "gnu"
        || target("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let Some(release) = version.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
