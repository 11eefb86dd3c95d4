//! Watching a VMM process that is not our child, through a pidfd.
//!
//! After a restart the VMMs we started belong to no one we can `waitpid`.
//! A pidfd (Linux 5.3+) becomes readable when its process exits and signals
//! through it cannot hit a later process that reuses the pid. The process's
//! start time (from `/proc/<pid>/stat`) is recorded at spawn and checked here,
//! so a recycled pid is never mistaken for our VMM.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when it does not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A pidfd of a running process.
#[derive(Debug)]
pub struct Pidfd {
    /// The pidfd, registered with tokio for readability.
    fd: AsyncFd<OwnedFd>,
}

impl Pidfd {
    /// Opens a pidfd of `pid` if that process runs and started at `start_time`.
    pub fn open(pid: u32, start_time: u64) -> std::io::Result<Option<Pidfd>> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if raw < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // Checked after opening: if the pid was recycled before the open, the
        // start time differs; if after, the pidfd already refers to the old one.
        if self::start_time(pid) != Some(start_time) {
            return Ok(None);
        }
        // SAFETY: the `OwnedFd` is a valid pidfd that `AsyncFd` owns from
        // here on; nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Some(Pidfd { fd }))
    }

    /// Resolves when the process has exited. Cancel-safe.
    pub async fn exited(&self) -> std::io::Result<()> {
        let _guard = self.fd.readable().await?;
        Ok(())
    }

    /// Reaps the process if it has exited and is our child (a jailed VMM
    /// re-parented to this subreaper), returning how it ended; `None` when
    /// it is not our child or has not exited.
    pub fn reap(&self) -> Option<crate::VmmExit> {
        const P_PIDFD: libc::idtype_t = 3;
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our pidfd, writing only into `info`.
        let rc = unsafe {
            libc::waitid(
                P_PIDFD,
                self.fd.get_ref().as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        // SAFETY: after a successful waitid, si_pid and si_status are set
        // (si_pid 0 when WNOHANG found nothing to reap).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if rc != 0 || pid == 0 {
            return None;
        }
        Some(match info.si_code {
            libc::CLD_EXITED => crate::VmmExit::Exited(status),
            _ => crate::VmmExit::Signaled(status),
        })
    }

    /// Sends a signal to the process (ignored once it has exited).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: pidfd_send_signal takes our pidfd, a signal number and null info.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn start_time_of_self_is_known() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX / 2), None);
    }

    #[tokio::test]
    async fn pidfd_sees_exit_and_rejects_wrong_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = start_time(pid).unwrap();
        assert!(Pidfd::open(pid, started + 1).unwrap().is_none());
        let pidfd = Pidfd::open(pid, started).unwrap().unwrap();
        pidfd.signal(libc::SIGKILL);
        tokio::time::timeout(Duration::from_secs(5), pidfd.exited())
            .await
            .unwrap()
            .unwrap();
        child.wait().unwrap();
    }
}
