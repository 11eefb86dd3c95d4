//! The initrd that boots fcexec's guest agent: a newc cpio archive with
//! the static `fcexec-agent` binary as `/init`, so the user's root file
//! system is never modified.
//!
//! The archive is reproducible (fixed inode numbers, owners and times: the
//! same agent gives the same bytes) and cached by the agent's content hash,
//! so it is built once per agent binary, not once per execution.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The environment variable naming the agent binary.
pub const AGENT_BIN_VAR: &str = "FCEXEC_AGENT_BIN";

/// The agent binary's file name (beside `fcexec`, or on `PATH`).
pub const AGENT_BIN_NAME: &str = "fcexec-agent";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// No agent binary was found.
    #[error(
        "fcexec's guest agent is not installed: no {AGENT_BIN_NAME} beside the fcexec binary or \
         on PATH; build it (cargo build --release --target x86_64-unknown-linux-musl -p \
         fcexec-guest-agent) and set {AGENT_BIN_VAR} or ExecutorConfig::agent_binary to it"
    )]
    NoAgent,
    /// Reading the agent or writing the archive failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The agent binary: `configured`, else `$FCEXEC_AGENT_BIN`, else
/// `fcexec-agent` beside the running program, else on `PATH`.
pub fn find_agent(configured: Option<&Path>) -> Result<PathBuf, InitrdError> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(AGENT_BIN_VAR).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(AGENT_BIN_NAME)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(AGENT_BIN_NAME));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or(InitrdError::NoAgent)
}

/// The initrd for `agent` under `cache_dir` (created 0700 if missing),
/// built when not there yet. Blocking.
pub fn ensure(agent: &Path, cache_dir: &Path) -> Result<PathBuf, InitrdError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| InitrdError::Io { what, path, source }
    };
    let init = std::fs::read(agent).map_err(io("read the guest agent", agent))?;
    let hash = Sha256::digest(&init);
    let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let path = cache_dir.join(format!("fcexec-agent-{name}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .map_err(io("create", cache_dir))?;
    let temp = cache_dir.join(format!(".fcexec-agent-{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut f| f.write_all(&archive(&init)).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io("write the initrd", &path)(e));
    }
    tracing::info!(initrd = %path.display(), "built the guest agent's initrd");
    Ok(path)
}

/// The newc archive: the directories the agent mounts on, `/dev/console`
/// (the kernel opens it for `/init`'s standard streams) and `/init`.
pub fn archive(init: &[u8]) -> Vec<u8> {
    const DIR: u32 = 0o040755;
    let mut out = Vec::with_capacity(init.len() + 1024);
    let mut ino = 1;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == DIR & 0o170000 {
                2
            } else {
                1
            },
            0, // mtime: fixed, for reproducible bytes
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        ino += 1;
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(out);
        out.extend_from_slice(data);
        pad(out);
    };
    for dir in ["dev", "proc", "sys", "run", "tmp", "rootfs"] {
        entry(&mut out, dir, DIR, (0, 0), &[]);
    }
    entry(&mut out, "dev/console", 0o020600, (5, 1), &[]);
    entry(&mut out, "init", 0o100755, (0, 0), init);
    entry(&mut out, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// Pads to a multiple of 4 bytes, as newc wants after names and data.
fn pad(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_reproducible_and_cpio_reads_it() {
        let init = b"#!/bin/sh\necho not really an agent\n";
        let a = archive(init);
        assert_eq!(a, archive(init), "same input, same bytes");
        assert_eq!(a.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let listed = std::process::Command::new("cpio")
            .args(["-t", "-v"])
            .stdin(std::fs::File::open(write(dir.path(), &a)).unwrap())
            .output();
        // cpio is optional on a host; when it is there it must agree.
        if let Some(out) = listed.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            for name in ["dev/console", "init", "rootfs"] {
                assert!(text.contains(name), "{text}");
            }
            assert!(text.contains("-rwxr-xr-x"), "{text}");
        }
    }

    #[test]
    fn ensure_builds_once_and_names_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent one").unwrap();
        let cache = dir.path().join("cache");
        let first = ensure(&agent, &cache).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), archive(b"agent one"));
        assert_eq!(ensure(&agent, &cache).unwrap(), first);
        std::fs::write(&agent, b"agent two").unwrap();
        assert_ne!(ensure(&agent, &cache).unwrap(), first);
        let err = ensure(&dir.path().join("missing"), &cache).unwrap_err();
        assert!(err.to_string().contains("read the guest agent"), "{err}");
    }

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("a.cpio");
        std::fs::write(&path, bytes).unwrap();
        path
    }
}
