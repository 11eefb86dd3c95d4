//! Builds the freestanding guest kernel (`guest/main.rs`) for
//! `x86_64-unknown-none` with the same `rustc` that builds this crate, and
//! leaves the ELF image at `$OUT_DIR/test-guest.elf` for `include_bytes!`.
//! The guest protocol 2 codec (`crates/guest-protocol`, no dependencies) is
//! compiled first, as an rlib for the same target, and linked in.
//!
//! Third-party crates (smoltcp and what it needs) come from the nested
//! package `guest-deps/` (its own workspace and `Cargo.lock`), built by a
//! nested `cargo build --locked` for the guest's target into
//! `$OUT_DIR/guest-deps` with the same code generation; the guest links the
//! resulting smoltcp rlib. That cargo has its own target directory, so it
//! never waits for the outer cargo's lock, and it finds nothing to do when
//! nothing changed.
//!
//! The guest itself is built with `rustc` directly and takes about a second.

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

    let deps = manifest.join("guest-deps");
    for file in ["Cargo.toml", "Cargo.lock", "lib.rs"] {
        println!("cargo:rerun-if-changed={}", deps.join(file).display());
    }
    let (smoltcp, deps_dir) = build_deps(&deps, &out_dir.join("guest-deps"), &rustc);

    let elf = out_dir.join("test-guest.elf");
    let link_script = guest.join("link.ld");
    let mut cmd = guest_rustc(&rustc);
    cmd.arg(guest.join("main.rs"))
        .args(["--crate-type", "bin", "--crate-name", "fcexec_test_guest"])
        .arg("--extern")
        .arg(format!("fcexec_guest_protocol={}", codec.display()))
        .arg("--extern")
        .arg(format!("smoltcp={}", smoltcp.display()))
        .arg("-L")
        .arg(format!("dependency={}", deps_dir.display()))
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

/// Code generation flags of the guest's own crates that the nested cargo
/// gets through `CARGO_ENCODED_RUSTFLAGS` (the rest is the nested package's
/// release profile).
const DEPS_RUSTFLAGS: [&str; 2] = ["-Crelocation-model=static", "-Ccode-model=small"];

/// Builds the nested `guest-deps` package for the guest's target with the
/// same `cargo` and `rustc` as this build; returns the smoltcp rlib and the
/// directory of its dependencies.
fn build_deps(package: &Path, target_dir: &Path, rustc: &OsStr) -> (PathBuf, PathBuf) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .args(["--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(package.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--message-format", "json-render-diagnostics"]);
    // What the outer cargo tells its build scripts (target, profile, flags,
    // wrappers such as clippy's, the jobserver) must not reach the nested
    // build; how to reach the registry may.
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        let keep = [
            "CARGO_HOME",
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTRIES_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        let drop = name.starts_with("CARGO_")
            || matches!(
                &*name,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "MAKEFLAGS"
                    | "MFLAGS"
            );
        if drop && !keep {
            cmd.env_remove(&*name);
        }
    }
    cmd.env("RUSTC", rustc)
        .env("CARGO_ENCODED_RUSTFLAGS", DEPS_RUSTFLAGS.join("\x1f"));
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    if !output.status.success() {
        panic!(
            "building the guest's dependencies ({}) failed ({}):\n{}",
            package.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rlib = stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(r#""name":"smoltcp""#))
        .find_map(rlib_of)
        .unwrap_or_else(|| panic!("the nested cargo build named no smoltcp rlib:\n{stdout}"));
    let deps_dir = target_dir.join(TARGET).join("release").join("deps");
    (rlib, deps_dir)
}

/// The `.rlib` among a cargo `compiler-artifact` message's `filenames`.
fn rlib_of(message: &str) -> Option<PathBuf> {
    let files = message.split(r#""filenames":["#).nth(1)?;
    let files = &files[..files.find(']')?];
    files
        .split(',')
        .map(|f| f.trim().trim_matches('"'))
        .find(|f| f.ends_with(".rlib"))
        .map(PathBuf::from)
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
