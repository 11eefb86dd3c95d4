//! Reaping children: PID 1's duty, and how the supervisor learns that a
//! process it started has ended.
//!
//! As PID 1 ([`Reaper::new`] with `reap_all`) every orphan in the VM becomes
//! the agent's child and must be reaped, or it stays a zombie. `SIGCHLD` is
//! blocked and read from a `signalfd`, which the supervisor polls; each wake
//! reaps with `waitpid(-1, WNOHANG)` until nothing is left, keeping the
//! statuses of the pids it [`watch`](Reaper::watch)es.
//!
//! Anywhere else (the unit tests share one process with other tests and
//! their children) only the watched pids are waited for, by pid, and a
//! `pidfd` per child wakes the poll; without pidfds (Linux before 5.3) the
//! supervisor polls every [`FALLBACK_TICK`].

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use fcexec_guest_protocol::ExitStatus;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// How often to look for ended children when nothing can wake the poll.
pub const FALLBACK_TICK: Duration = Duration::from_millis(20);

/// Reaps children (see the module docs).
#[derive(Debug)]
pub struct Reaper {
    /// PID 1: the signalfd, if it could be made (else: poll on a tick).
    all: Option<Option<SignalFd>>,
    /// Watched pids, each with its pidfd when not reaping all.
    watched: HashMap<i32, Option<OwnedFd>>,
    /// Statuses of watched pids, reaped and not yet taken.
    ended: Vec<(i32, ExitStatus)>,
    /// Children reaped that nobody watched (orphans, when PID 1).
    orphans: u64,
}

impl Reaper {
    /// A reaper; `reap_all` as PID 1 (blocks `SIGCHLD` in this thread).
    pub fn new(reap_all: bool) -> Reaper {
        let all = reap_all.then(|| {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGCHLD);
            mask.thread_block().ok()?;
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok()
        });
        Reaper {
            all,
            watched: HashMap::new(),
            ended: Vec::new(),
            orphans: 0,
        }
    }

    /// True when reaping every child (PID 1).
    pub fn reaps_all(&self) -> bool {
        self.all.is_some()
    }

    /// Keeps `pid`'s exit status for [`reap`](Self::reap) to return.
    pub fn watch(&mut self, pid: i32) {
        let pidfd = if self.all.is_none() {
            pidfd_open(pid)
        } else {
            None
        };
        self.watched.insert(pid, pidfd);
    }

    /// Descriptors that become readable when a child may have ended.
    pub fn fds(&self) -> Vec<RawFd> {
        match &self.all {
            Some(Some(sfd)) => vec![sfd.as_raw_fd()],
            Some(None) => Vec::new(),
            None => self
                .watched
                .values()
                .flatten()
                .map(|fd| fd.as_raw_fd())
                .collect(),
        }
    }

    /// The longest the supervisor may sleep without missing an end.
    pub fn max_wait(&self) -> Option<Duration> {
        let ticking = match &self.all {
            Some(sfd) => sfd.is_none(),
            None => self.watched.values().any(Option::is_none),
        };
        ticking.then_some(FALLBACK_TICK)
    }

    /// Reaps what has ended; returns the watched pids' statuses.
    pub fn reap(&mut self) -> Vec<(i32, ExitStatus)> {
        match &self.all {
            Some(sfd) => {
                if let Some(sfd) = sfd {
                    // Drain the queued notifications; the waitpid loop does the work.
                    while let Ok(Some(_)) = sfd.read_signal() {}
                }
                while let Some((pid, raw)) = wait_nohang(-1) {
                    self.record(pid, raw);
                }
            }
            None => {
                let pids: Vec<i32> = self.watched.keys().copied().collect();
                for pid in pids {
                    if let Some((pid, raw)) = wait_nohang(pid) {
                        self.record(pid, raw);
                    }
                }
            }
        }
        std::mem::take(&mut self.ended)
    }

    fn record(&mut self, pid: i32, raw: libc::c_int) {
        let Some(status) = exit_status(raw) else {
            return;
        };
        if self.watched.remove(&pid).is_some() {
            self.ended.push((pid, status));
        } else {
            self.orphans += 1;
        }
    }

    /// How many unwatched children were reaped (orphans, as PID 1).
    pub fn orphans(&self) -> u64 {
        self.orphans
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.all.is_some() {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGCHLD);
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
        }
    }
}

/// `waitpid(pid, WNOHANG)`: the pid and raw status of a child that ended,
/// or `None` when none has (or there is no such child).
fn wait_nohang(pid: i32) -> Option<(i32, libc::c_int)> {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into `raw`.
        let got = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
        if got > 0 {
            return Some((got, raw));
        }
        if got < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}

/// A pidfd for `pid`, or `None` where the kernel has none.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor is new and owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Converts a raw `waitpid` status to an exit status.
pub fn exit_status(raw: libc::c_int) -> Option<ExitStatus> {
    if libc::WIFEXITED(raw) {
        Some(ExitStatus::Code(libc::WEXITSTATUS(raw) as u8))
    } else if libc::WIFSIGNALED(raw) {
        Some(ExitStatus::Signal(libc::WTERMSIG(raw) as u8))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    // The reaper under test is what waits for the child.
    #[allow(clippy::zombie_processes)]
    fn spawn(script: &str) -> i32 {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        child.id() as i32
    }

    /// Waits until every watched pid has ended; their statuses by pid.
    fn wait_all(reaper: &mut Reaper, count: usize) -> HashMap<i32, ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ended = HashMap::new();
        while ended.len() < count {
            let mut waits: Vec<_> = reaper
                .fds()
                .into_iter()
                .map(|fd| crate::sys::Wait::new(fd, libc::POLLIN))
                .collect();
            let tick = Instant::now() + reaper.max_wait().unwrap_or(Duration::from_millis(200));
            crate::sys::poll(&mut waits, Some(tick)).unwrap();
            ended.extend(reaper.reap());
            assert!(Instant::now() < deadline, "only {ended:?} ended");
        }
        ended
    }

    #[test]
    fn a_watched_child_reports_its_code_or_signal() {
        let mut reaper = Reaper::new(false);
        assert!(!reaper.reaps_all());
        let a = spawn("exit 3");
        let b = spawn("kill -SEGV $$");
        reaper.watch(a);
        reaper.watch(b);
        let ended = wait_all(&mut reaper, 2);
        assert_eq!(ended[&a], ExitStatus::Code(3));
        assert_eq!(ended[&b], ExitStatus::Signal(11));
        assert!(reaper.reap().is_empty());
        assert_eq!(reaper.orphans(), 0);
    }

    #[test]
    fn raw_statuses_convert() {
        assert_eq!(exit_status(3 << 8), Some(ExitStatus::Code(3)));
        assert_eq!(exit_status(9), Some(ExitStatus::Signal(9)));
        assert_eq!(exit_status(0x137f), None);
    }
}
