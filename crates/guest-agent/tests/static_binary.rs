//! The agent ships in every VM's initrd as `/init`: it must be a static
//! binary (no ELF interpreter, no shared libraries) and small. This test
//! builds it for `x86_64-unknown-linux-musl` with the cargo that runs the
//! tests (a no-op when it is fresh), then checks the ELF and the size
//! after `strip`.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-musl";
const MAX_STRIPPED: u64 = 3 << 20;

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// True when rustc has the target's standard library.
fn target_installed() -> bool {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
        }
        _ => false,
    }
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The program header types and the DT_NEEDED count of an ELF64 LE file.
fn elf_facts(elf: &[u8]) -> (Vec<u32>, usize) {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let (phoff, phentsize, phnum) = (u64_at(elf, 0x20), u16_at(elf, 0x36), u16_at(elf, 0x38));
    let mut types = Vec::new();
    let mut needed = 0;
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        let p_type = u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap());
        types.push(p_type);
        if p_type == 2 {
            // PT_DYNAMIC: count DT_NEEDED (tag 1) entries.
            let (off, size) = (u64_at(elf, ph + 8) as usize, u64_at(elf, ph + 32) as usize);
            for entry in elf[off..off + size].chunks_exact(16) {
                match u64_at(entry, 0) {
                    0 => break,
                    1 => needed += 1,
                    _ => {}
                }
            }
        }
    }
    (types, needed)
}

#[test]
fn the_agent_is_a_small_static_binary() {
    if !target_installed() {
        panic!(
            "the agent is built for {TARGET}, which is not installed; run `rustup target add {TARGET}`"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = target_dir();
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            "fcexec-guest-agent",
            "--bin",
            "fcexec-agent",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build for {TARGET} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = target_dir.join(TARGET).join("release/fcexec-agent");
    let (types, needed) = elf_facts(&std::fs::read(&binary).unwrap());
    assert!(
        !types.contains(&3),
        "{} has an interpreter (PT_INTERP)",
        binary.display()
    );
    assert_eq!(needed, 0, "{} needs shared libraries", binary.display());
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("fcexec-agent");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&binary)
        .status()
        .expect("strip runs (binutils)");
    assert!(status.success());
    let size = std::fs::metadata(&stripped).unwrap().len();
    eprintln!("fcexec-agent for {TARGET}: {size} bytes stripped");
    assert!(
        size < MAX_STRIPPED,
        "{size} bytes stripped, more than 3 MiB"
    );
    // The stripped binary is still static.
    let (types, needed) = elf_facts(&std::fs::read(&stripped).unwrap());
    assert!(!types.contains(&3) && needed == 0);
}

#[test]
fn elf_facts_tell_a_dynamic_binary() {
    // /bin/sh of the host is dynamically linked on most distributions;
    // where it is not, there is nothing to compare against.
    let sh = std::fs::read("/bin/sh").unwrap();
    let (types, needed) = elf_facts(&sh);
    if types.contains(&3) {
        assert!(needed > 0);
    }
}
