//! The connection to the host: the second of the agent's two seams.
//!
//! In the guest, [`VsockTransport`] connects to the host (CID 2) on the
//! config drive's port over virtio-vsock; Firecracker turns that into a
//! connection to the executor's Unix socket. Tests use [`UnixTransport`],
//! which connects to a Unix socket path directly. Both hand out a [`Conn`].
//!
//! Without a vsock device (the kernel has no `AF_VSOCK`, or no transport
//! for it: `EAFNOSUPPORT` or `ENODEV`), [`Transport::connect`] fails with
//! [`io::ErrorKind::Unsupported`], and the agent falls back to guest
//! protocol 1 on [`Transport::console`].

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};

use crate::sys;

/// The host's CID on vsock.
pub const VMADDR_CID_HOST: u32 = 2;

/// A connection to the host: a stream socket of either kind.
#[derive(Debug)]
pub enum Conn {
    /// A Unix stream socket (tests).
    Unix(UnixStream),
    /// An `AF_VSOCK` stream socket (the guest).
    Vsock(OwnedFd),
}

impl Conn {
    /// Makes reads and writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(on),
            Conn::Vsock(fd) => sys::set_nonblocking(fd.as_fd(), on),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Vsock(fd) => sys::read(fd.as_fd(), buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Vsock(fd) => sys::write(fd.as_fd(), buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Vsock(fd) => fd.as_fd(),
        }
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// How the agent reaches the host.
pub trait Transport {
    /// Connects to the host's `port` (protocol 2). Fails with
    /// [`io::ErrorKind::Unsupported`] when there is no vsock device at all.
    fn connect(&self, port: u32) -> io::Result<Conn>;

    /// The serial console, for protocol 1 frames.
    fn console(&self) -> io::Result<Box<dyn Write>>;
}

/// The guest's transport: vsock to the host, the serial console for
/// protocol 1.
#[derive(Debug, Clone)]
pub struct VsockTransport {
    /// Console devices to try, in order, for protocol 1.
    pub consoles: Vec<PathBuf>,
}

impl Default for VsockTransport {
    fn default() -> Self {
        VsockTransport {
            consoles: vec![PathBuf::from("/dev/ttyS0"), PathBuf::from("/dev/console")],
        }
    }
}

impl Transport for VsockTransport {
    fn connect(&self, port: u32) -> io::Result<Conn> {
        let fd = socket::socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(no_vsock)?;
        let addr = VsockAddr::new(VMADDR_CID_HOST, port);
        socket::connect(fd.as_raw_fd(), &addr).map_err(no_vsock)?;
        Ok(Conn::Vsock(fd))
    }

    fn console(&self) -> io::Result<Box<dyn Write>> {
        open_console(&self.consoles)
    }
}

/// `EAFNOSUPPORT` (no vsock in the kernel) and `ENODEV` (no vsock device)
/// become `Unsupported`; other errors stay as they are.
fn no_vsock(errno: Errno) -> io::Error {
    let err = io::Error::from(errno);
    match errno {
        Errno::EAFNOSUPPORT | Errno::ENODEV => io::Error::new(
            io::ErrorKind::Unsupported,
            format!("no vsock device: {err}"),
        ),
        _ => err,
    }
}

fn open_console(paths: &[PathBuf]) -> io::Result<Box<dyn Write>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no console device configured");
    for path in paths {
        match OpenOptions::new().write(true).open(path) {
            Ok(file) => return Ok(Box::new(file)),
            Err(e) => last = io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        }
    }
    Err(last)
}

/// The tests' transport: a Unix socket that stands in for vsock, and a file
/// that stands in for the console.
#[derive(Debug, Clone)]
pub struct UnixTransport {
    /// The host's socket; the port is ignored.
    pub path: PathBuf,
    /// Where protocol 1 frames go; `None`: connecting never reports
    /// `Unsupported`, so protocol 1 is never used.
    pub console: Option<PathBuf>,
    /// Report `Unsupported` from every connect (to test the fallback).
    pub no_vsock: bool,
}

impl UnixTransport {
    /// A transport to the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> UnixTransport {
        UnixTransport {
            path: path.into(),
            console: None,
            no_vsock: false,
        }
    }
}

impl Transport for UnixTransport {
    fn connect(&self, _port: u32) -> io::Result<Conn> {
        if self.no_vsock {
            return Err(no_vsock(Errno::ENODEV));
        }
        UnixStream::connect(&self.path).map(Conn::Unix)
    }

    fn console(&self) -> io::Result<Box<dyn Write>> {
        let paths: Vec<PathBuf> = self.console.iter().cloned().collect();
        open_console(&paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn unix_transport_connects_and_conn_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut conn = UnixTransport::new(&path).connect(1024).unwrap();
        let (mut host, _) = listener.accept().unwrap();
        conn.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        conn.set_nonblocking(true).unwrap();
        let err = conn.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        host.write_all(b"pong").unwrap();
        conn.set_nonblocking(false).unwrap();
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn no_vsock_is_unsupported() {
        let t = UnixTransport {
            no_vsock: true,
            ..UnixTransport::new("/nonexistent")
        };
        assert_eq!(t.connect(1).unwrap_err().kind(), io::ErrorKind::Unsupported);
        assert_eq!(
            no_vsock(Errno::EAFNOSUPPORT).kind(),
            io::ErrorKind::Unsupported
        );
        assert_eq!(
            no_vsock(Errno::ECONNRESET).kind(),
            io::ErrorKind::ConnectionReset
        );
        assert!(t.console().is_err());
    }
}
