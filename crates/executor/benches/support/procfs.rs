//! Readings of this process and its children from `/proc`, `getrusage`
//! and `mallinfo2`, plus the resource-limit and process-sweep helpers.

use std::path::Path;
use std::time::Duration;

/// A numeric field of `/proc/<pid>/status` (`None` pid: this process), e.g.
/// `VmRSS` (in KiB) or `Threads`.
pub fn status_field(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size in KiB.
pub fn rss_kib(pid: Option<u32>) -> u64 {
    status_field(pid, "VmRSS").unwrap_or(0)
}

/// Proportional set size in KiB (shared pages split among their users), from
/// `/proc/<pid>/smaps_rollup`.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Threads of this process.
pub fn threads() -> u64 {
    status_field(None, "Threads").unwrap_or(0)
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Bytes the allocator has handed out and not got back (glibc `mallinfo2`:
/// `uordblks + hblkhd`), or `None` where that is not available.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// `(ppid, state)` of a process, from `/proc/<pid>/stat`.
fn ppid_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Children of this process: `(pid, state)` of each entry of `/proc` whose
/// parent is us (state `Z` is a zombie nobody reaped).
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    pids()
        .filter_map(|pid| {
            let (ppid, state) = ppid_state(pid)?;
            (ppid == me).then_some((pid, state))
        })
        .collect()
}

/// Pids of firecracker processes whose command line mentions `needle`.
pub fn firecracker_pids(needle: &Path) -> Vec<u32> {
    let needle = needle.display().to_string();
    pids()
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("firecracker") && cmdline.contains(&needle)
        })
        .collect()
}

/// SIGKILLs each of `pids` (by id; used only for processes under our own
/// temporary directory).
pub fn kill_all(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) with a pid we found running our binary in our directory.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Regular files and sockets under `dir`, recursively: `(files, sockets)`.
pub fn files_and_sockets(dir: &Path) -> (usize, usize) {
    use std::os::unix::fs::FileTypeExt;
    let (mut files, mut sockets) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_socket() || e.path().extension().is_some_and(|x| x == "sock") {
                sockets += 1;
            } else {
                files += 1;
            }
        }
    }
    (files, sockets)
}

/// CPU time used, user and system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// User time.
    pub user: Duration,
    /// System time.
    pub sys: Duration,
}

impl Cpu {
    /// User plus system.
    pub fn total(&self) -> Duration {
        self.user + self.sys
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

fn rusage(who: libc::c_int) -> Cpu {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut r) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Cpu {
        user: tv(r.ru_utime),
        sys: tv(r.ru_stime),
    }
}

/// CPU time of this process (every thread, the tokio runtime included).
pub fn cpu_self() -> Cpu {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of this process's reaped children (the VMMs).
pub fn cpu_children() -> Cpu {
    rusage(libc::RUSAGE_CHILDREN)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns `(old, new)`.
pub fn raise_nofile() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        let old = lim.rlim_cur as u64;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return (old, old);
        }
        (old, lim.rlim_cur as u64)
    }
}
