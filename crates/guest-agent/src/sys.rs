//! Small system-call helpers shared by the modules, so `unsafe` stays here
//! and in the child side of `job`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Turns a `-1` return into the `errno` error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a valid, borrowed descriptor.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// `read(2)`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)`.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for `buf.len()` bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One descriptor to wait on: the fd, the events asked for, and those seen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    pub fd: RawFd,
    pub events: i16,
    pub revents: i16,
}

impl Wait {
    pub(crate) fn new(fd: RawFd, events: i16) -> Wait {
        Wait {
            fd,
            events,
            revents: 0,
        }
    }
}

/// `poll(2)` until `deadline` (`None`: no timeout). An interrupted wait
/// counts as a wake-up with nothing ready.
pub(crate) fn poll(waits: &mut [Wait], deadline: Option<Instant>) -> io::Result<()> {
    let timeout = match deadline {
        None => -1,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            // Round up, so a wake-up is never before the deadline.
            let ms = left.as_micros().div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    };
    let mut fds: Vec<libc::pollfd> = waits
        .iter()
        .map(|w| libc::pollfd {
            fd: w.fd,
            events: w.events,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(());
        }
        return Err(err);
    }
    for (wait, fd) in waits.iter_mut().zip(&fds) {
        wait.revents = fd.revents;
    }
    Ok(())
}

/// Milliseconds as a `Duration`.
pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Writes a diagnostic line to the console (stderr), prefixed with the
/// agent's name. One unbuffered `write(2)` per line, taking no lock, so it
/// never waits behind another thread's stderr lock; a failing console is
/// ignored.
pub(crate) fn console(line: &str) {
    let mut text = Vec::with_capacity(line.len() + 16);
    text.extend_from_slice(b"fcexec-agent: ");
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    let mut rest = &text[..];
    while !rest.is_empty() {
        // SAFETY: writing a valid buffer to fd 2.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = rest.get(n as usize..).unwrap_or_default();
    }
}
