//! Starting a process: a provision script or the job.
//!
//! [`spawn`] forks; the child, in this order: resets its signal mask and
//! dispositions, starts its own session (and so its own process group, whose
//! id is its pid), takes `/dev/null` as stdin and pipes as stdout and
//! stderr, chroots into the rootfs (when [`Launch::root`] is set: tests run
//! without one), changes to the working directory, takes the user's groups,
//! gid and uid, and executes `argv[0]` with `execvpe` semantics: a name
//! without `/` is looked up in the job's `PATH` (or [`DEFAULT_PATH`]) inside
//! the chroot. The environment is exactly the launch's.
//!
//! Between `fork` and `exec` the child only makes system calls on values
//! prepared before the fork (the agent's tests fork from a multi-threaded
//! process). A failing step is written to a close-on-exec pipe as the step
//! and its `errno`; the parent reads that pipe to its end, so [`spawn`]
//! returns only once the child has executed its program or failed, and its
//! error names the step ("cannot change to the working directory /x: ...").

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::sys;

/// The `PATH` for the lookup of `argv[0]`, and the job's `PATH` when its
/// environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Root, with no supplementary groups.
    pub fn root() -> Credentials {
        Credentials {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }
}

/// Where the process's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Two pipes: the job's streams, kept apart.
    Split,
    /// One pipe for both (a provision script's output, captured).
    Combined,
}

/// What to start, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The argv; `argv[0]` is looked up in `PATH` unless it contains `/`.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory (inside the root).
    pub working_dir: String,
    /// The directory to chroot into; `None`: no chroot (tests).
    pub root: Option<PathBuf>,
    /// The identity to take; `None`: keep the agent's (tests).
    pub user: Option<Credentials>,
    /// Where the output goes.
    pub output: Output,
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// The read end of its stdout pipe (of both streams when combined),
    /// non-blocking.
    pub stdout: OwnedFd,
    /// The read end of its stderr pipe, non-blocking; `None` when combined.
    pub stderr: Option<OwnedFd>,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A string holds a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which string.
        what: String,
    },
    /// The parent's preparation (pipes, /dev/null, fork) failed.
    #[error("cannot start a process: {0}")]
    Setup(#[source] io::Error),
    /// A step in the child failed.
    #[error("{step}: {source}")]
    Child {
        /// The step, as a phrase naming its value.
        step: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `argv[0]` is not in any `PATH` directory.
    #[error("`{program}` is not found in PATH {path}")]
    NotFound {
        /// `argv[0]`.
        program: String,
        /// The `PATH` searched.
        path: String,
    },
}

/// The steps of the child, as written to the error pipe.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Step {
    Stdio = 1,
    Session,
    Chroot,
    Chdir,
    Groups,
    Gid,
    Uid,
    Exec,
}

/// Starts `launch` (see the module docs).
pub fn spawn(launch: &Launch) -> Result<Spawned, SpawnError> {
    let prepared = Prepared::new(launch)?;
    let (out_r, out_w) = sys::pipe().map_err(SpawnError::Setup)?;
    let (err_r, err_w) = match launch.output {
        Output::Split => {
            let (r, w) = sys::pipe().map_err(SpawnError::Setup)?;
            (Some(r), Some(w))
        }
        Output::Combined => (None, None),
    };
    let (report_r, report_w) = sys::pipe().map_err(SpawnError::Setup)?;
    let null = std::fs::File::open("/dev/null").map_err(SpawnError::Setup)?;
    let stdio = [
        null.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_ref().unwrap_or(&out_w).as_raw_fd(),
    ];
    // SAFETY: the child calls only async-signal-safe functions on values
    // prepared above, then execs or exits (see `child`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Setup(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the forked child; never returns.
        unsafe { child(&prepared, stdio, report_w.as_raw_fd()) }
    }
    drop((out_w, err_w, report_w, null));
    if let Some((step, errno)) = read_report(&report_r) {
        let mut raw = 0;
        // SAFETY: reaps the failed child, which has exited or is exiting.
        unsafe { libc::waitpid(pid, &mut raw, 0) };
        return Err(prepared.error(step, errno));
    }
    for fd in [Some(&out_r), err_r.as_ref()].into_iter().flatten() {
        sys::set_nonblocking(fd.as_fd(), true).map_err(SpawnError::Setup)?;
    }
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Sends `signal` to the process group `pgid` (a spawned pid); a group
/// that is gone already is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Reads the child's report to its end: `None` when it executed its program.
fn read_report(fd: &OwnedFd) -> Option<(u8, i32)> {
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match sys::read(fd.as_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    (got == buf.len()).then(|| {
        let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
        (buf[0], errno)
    })
}

/// Everything the child needs, as C strings and pointer arrays.
struct Prepared {
    program: String,
    path: String,
    root: Option<CString>,
    root_shown: String,
    dir: CString,
    dir_shown: String,
    user: Option<Credentials>,
    groups: Vec<libc::gid_t>,
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
}

fn cstring(text: &str, what: &str) -> Result<CString, SpawnError> {
    CString::new(text).map_err(|_| SpawnError::Nul {
        what: format!("{what} {text:?}"),
    })
}

impl Prepared {
    fn new(launch: &Launch) -> Result<Prepared, SpawnError> {
        let program = launch.argv.first().cloned().unwrap_or_default();
        let argv = launch
            .argv
            .iter()
            .map(|a| cstring(a, "the argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = launch
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), "the environment variable"))
            .collect::<Result<Vec<_>, _>>()?;
        let path = launch
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
            .to_string();
        let candidates = if program.contains('/') {
            vec![cstring(&program, "the program")?]
        } else {
            path.split(':')
                .map(|dir| match dir {
                    "" => cstring(&program, "the program"),
                    dir => cstring(
                        &format!("{}/{program}", dir.trim_end_matches('/')),
                        "the program",
                    ),
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let root_shown = launch
            .root
            .as_ref()
            .map(|r| r.display().to_string())
            .unwrap_or_default();
        let root = match &launch.root {
            Some(_) => Some(cstring(&root_shown, "the root directory")?),
            None => None,
        };
        let nul_terminated = |strings: &[CString]| {
            let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            ptrs
        };
        Ok(Prepared {
            path,
            root,
            root_shown,
            dir: cstring(&launch.working_dir, "the working directory")?,
            dir_shown: launch.working_dir.clone(),
            groups: launch
                .user
                .as_ref()
                .map(|u| u.groups.clone())
                .unwrap_or_default(),
            user: launch.user.clone(),
            candidates,
            argv_ptrs: nul_terminated(&argv),
            _argv: argv,
            envp_ptrs: nul_terminated(&envp),
            _envp: envp,
            program,
        })
    }

    fn error(&self, step: u8, errno: i32) -> SpawnError {
        let source = io::Error::from_raw_os_error(errno);
        let (uid, gid) = self.user.as_ref().map_or((0, 0), |u| (u.uid, u.gid));
        let step = match step {
            s if s == Step::Stdio as u8 => "cannot set up stdin, stdout and stderr".to_string(),
            s if s == Step::Session as u8 => "cannot start a session".to_string(),
            s if s == Step::Chroot as u8 => format!("cannot enter the rootfs {}", self.root_shown),
            s if s == Step::Chdir as u8 => {
                format!("cannot change to the working directory {}", self.dir_shown)
            }
            s if s == Step::Groups as u8 || s == Step::Gid as u8 || s == Step::Uid as u8 => {
                format!("cannot switch to uid {uid} gid {gid}")
            }
            _ if errno == libc::ENOENT && !self.program.contains('/') => {
                return SpawnError::NotFound {
                    program: self.program.clone(),
                    path: self.path.clone(),
                }
            }
            _ => format!("cannot execute `{}`", self.program),
        };
        SpawnError::Child { step, source }
    }
}

/// The child's side of [`spawn`]: never returns.
///
/// # Safety
///
/// Only to be called in a freshly forked child.
unsafe fn child(p: &Prepared, stdio: [i32; 3], report: i32) -> ! {
    let fail = |step: Step| -> ! {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        let mut buf = [0u8; 5];
        buf[0] = step as u8;
        buf[1..].copy_from_slice(&errno.to_le_bytes());
        libc::write(report, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    };
    // Signals: nothing blocked, nothing ignored (the agent ignores SIGPIPE).
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    for signal in 1..32 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    if libc::setsid() < 0 {
        fail(Step::Session);
    }
    for (target, &fd) in stdio.iter().enumerate() {
        // dup2 onto itself would keep close-on-exec: clear it instead.
        let done = if fd == target as i32 {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target as i32)
        };
        if done < 0 {
            fail(Step::Stdio);
        }
    }
    if let Some(root) = &p.root {
        if libc::chroot(root.as_ptr()) < 0 {
            fail(Step::Chroot);
        }
    }
    if libc::chdir(p.dir.as_ptr()) < 0 {
        fail(Step::Chdir);
    }
    if let Some(user) = &p.user {
        if libc::setgroups(p.groups.len(), p.groups.as_ptr()) < 0 {
            fail(Step::Groups);
        }
        if libc::setgid(user.gid) < 0 {
            fail(Step::Gid);
        }
        if libc::setuid(user.uid) < 0 {
            fail(Step::Uid);
        }
    }
    // execvpe: try each PATH candidate; remember EACCES; stop on a real error.
    let mut denied = false;
    for candidate in &p.candidates {
        libc::execve(
            candidate.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.envp_ptrs.as_ptr(),
        );
        match io::Error::last_os_error().raw_os_error().unwrap_or(0) {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => fail(Step::Exec),
        }
    }
    if denied {
        *libc::__errno_location() = libc::EACCES;
    } else {
        *libc::__errno_location() = libc::ENOENT;
    }
    fail(Step::Exec)
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
