//! How a VMM process ended, and what its log says about it.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::ExitStatus;

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmExit {
    /// It exited with this status. Firecracker exits 0 when the guest shuts down.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It ended while no one was its parent (after a restart), and its log did
    /// not say how: it was killed by a signal or crashed.
    Unknown,
}

impl VmmExit {
    /// True when Firecracker exited with status 0.
    pub fn success(&self) -> bool {
        matches!(self, VmmExit::Exited(0))
    }
}

impl From<ExitStatus> for VmmExit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => VmmExit::Exited(code),
            (None, Some(signal)) => VmmExit::Signaled(signal),
            (None, None) => VmmExit::Unknown,
        }
    }
}

impl fmt::Display for VmmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmmExit::Exited(code) => write!(f, "exited with status {code}"),
            VmmExit::Signaled(signal) => write!(
                f,
                "was killed by signal {signal} ({})",
                signal_name(*signal)
            ),
            VmmExit::Unknown => write!(
                f,
                "ended without a recorded exit status (killed by a signal or crashed)"
            ),
        }
    }
}

/// The conventional name of a signal number.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

/// The exit status Firecracker wrote as the last words of its log
/// (`... exit_code=N`), if it did. This is how the status of a VMM that is not
/// our child (we restarted since) is known.
pub fn exit_from_log(log: &Path) -> Option<VmmExit> {
    let tail = log_tail(log, 4);
    tail.lines().rev().find_map(|line| {
        let (_, code) = line.rsplit_once("exit_code=")?;
        let code: i32 = code.trim().parse().ok()?;
        Some(VmmExit::Exited(code))
    })
}

/// The last `lines` lines of a log file (at most the last 8 KiB), or a note
/// that it could not be read.
pub fn log_tail(log: &Path, lines: usize) -> String {
    const WINDOW: u64 = 8192;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if tail.is_empty() {
                "(empty log)".to_string()
            } else {
                tail.join(" | ")
            }
        }
        Err(e) => format!("(log {} unreadable: {e})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_read_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("fc.log");
        std::fs::write(
            &log,
            "a\n[main] Firecracker exiting successfully. exit_code=0\n",
        )
        .unwrap();
        assert_eq!(exit_from_log(&log), Some(VmmExit::Exited(0)));
        std::fs::write(
            &log,
            "a\n[main] Firecracker exiting with error. exit_code=153\n",
        )
        .unwrap();
        assert_eq!(exit_from_log(&log), Some(VmmExit::Exited(153)));
        std::fs::write(&log, "a\nb\n").unwrap();
        assert_eq!(exit_from_log(&log), None);
        assert_eq!(exit_from_log(&dir.path().join("none")), None);
    }

    #[test]
    fn display_names_the_signal() {
        assert_eq!(
            VmmExit::Signaled(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(VmmExit::Exited(1).to_string(), "exited with status 1");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("fc.log");
        std::fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&log, 2), "3 | 4");
    }
}
