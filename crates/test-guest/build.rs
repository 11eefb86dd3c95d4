//! Builds the freestanding guest kernel (`guest/main.rs`) for
//! `x86_64-unknown-none` with the same `rustc` that builds this crate, and
//! leaves the ELF image at `$OUT_DIR/test-guest.elf` for `include_bytes!`.
//! The guest protocol 2 codec (`crates/guest-protocol`, no dependencies) is
//! compiled first, as an rlib for the same target, and linked in.
//!
//! `rustc` is invoked directly (not a nested cargo) so that the outer cargo's
//! build lock is never contended and the guest takes about a second to build.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let guest = manifest.join("guest");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=guest");
    println!("cargo:rerun-if-env-changed=RUSTC");

    check_target(Path::new(&rustc));

    let crates = manifest.parent().expect("the crate is in crates/");
    let codec_src = crates.join("guest-protocol").join("src");
    println!("cargo:rerun-if-changed={}", codec_src.display());
    let codec = out_dir.join("libfcexec_guest_protocol.rlib");
    let mut cmd = guest_rustc(&rustc);
    cmd.arg(codec_src.join("lib.rs"))
        .args([
            "--crate-type",
            "rlib",
            "--crate-name",
            "fcexec_guest_protocol",
        ])
        .arg("--remap-path-prefix")
        .arg(format!("{}=guest-protocol", codec_src.display()))
        .arg("-o")
        .arg(&codec);
    run(cmd, &rustc, "the guest protocol codec");

    let elf = out_dir.join("test-guest.elf");
    let link_script = guest.join("link.ld");
    let mut cmd = guest_rustc(&rustc);
    cmd.arg(guest.join("main.rs"))
        .args(["--crate-type", "bin", "--crate-name", "fcexec_test_guest"])
        .arg("--extern")
        .arg(format!("fcexec_guest_protocol={}", codec.display()))
        .args(["-C", "strip=symbols"])
        .arg("-C")
        .arg(format!("link-arg=-T{}", link_script.display()))
        .args(["-C", "link-arg=--no-pie"])
        .args(["-C", "link-arg=-znorelro"])
        .args(["-C", "link-arg=--build-id=none"])
        .arg("--remap-path-prefix")
        .arg(format!("{}=guest", guest.display()))
        .arg("-o")
        .arg(&elf);
    run(cmd, &rustc, "the test guest");
}

/// A `rustc` command with the flags every guest crate is built with.
fn guest_rustc(rustc: &OsStr) -> Command {
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "--target", TARGET])
        .args(["-C", "panic=abort"])
        .args(["-C", "opt-level=s"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "code-model=small"])
        .args(["-C", "debuginfo=0"])
        .args(["-C", "codegen-units=1"])
        // The host's flags (for example `-C target-cpu=native`) must not leak into
        // the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS");
    cmd
}

/// Runs a guest `rustc` command; fails the build when it fails, and passes its
/// warnings on.
fn run(mut cmd: Command, rustc: &OsStr, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(rustc).display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!("building {what} failed ({}):\n{stderr}", output.status);
    }
    // Surface the guest's compiler warnings instead of dropping them.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={what}: {line}");
    }
}

/// Fails the build with a clear message when the guest's target is missing.
fn check_target(rustc: &Path) {
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    let libdir = match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => PathBuf::new(),
    };
    let has_core = std::fs::read_dir(&libdir)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
        .unwrap_or(false);
    if !has_core {
        panic!(
            "the test guest needs the Rust target {TARGET}, which is not installed; \
             run `rustup target add {TARGET}`"
        );
    }
}
