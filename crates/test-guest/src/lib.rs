//! A tiny freestanding x86_64 guest kernel for fcexec's tests and demo, and a
//! builder for the jobs it runs.
//!
//! The guest (built from `guest/` by this crate's build script for
//! `x86_64-unknown-none`) is an ELF image that Firecracker boots directly in
//! about a millisecond. It reads a job from the kernel command line
//! (`fcx.job=`, see [`Job::to_kernel_arg`]) or from the config drive, runs it,
//! and reports over the serial console (Firecracker's stdout):
//!
//! - *agent mode*, when it has a key (the config drive's `key=` line, or
//!   `fcx.key=` on the command line): frames as `docs/guest-protocol.md`
//!   describes, `hello` first, then `out`/`err`, then `exit` or `fail`;
//! - *agent mode over protocol 2*, when the config drive also says `proto=2`
//!   (and `vsock_port=`, default 1024, and `heartbeat_ms=`, default 0 for
//!   none): binary frames over a virtio-vsock connection to the host's
//!   `<uds_path>_<port>` socket, with acks, resends after a reconnect,
//!   cancels and heartbeats (`fcexec-guest-protocol`); the console then only
//!   carries diagnostic text;
//! - *plain mode*, without a key: text goes to the console as is.
//!
//! After `exit` (or at the end of the job) the guest powers off and Firecracker
//! exits with status 0; plain mode cannot report the exit code. Ctrl+Alt+Del
//! (Firecracker's `SendCtrlAltDel` action) powers the guest off at once,
//! unless the job said [`Job::ignore_cad`]. A [`triple`](Job::triple) fault
//! stops the VM with Firecracker's error log line "Unexpected exit reason on
//! vcpu run: Shutdown", but Firecracker's exit status is then 1 *or* 0 (a race
//! in Firecracker), so only the log tells. A guest failure (a `panic` op, a bad
//! job, a failed copy) is a `fail` frame in agent mode and a
//! `test-guest: <reason>` line followed by a triple fault in plain mode.
//!
//! Network: with a Firecracker network interface (the guest drives the
//! virtio-net device with smoltcp, polling) and its address on the command
//! line as [`ip_kernel_arg`] writes it, the network operations work:
//! [`mmds`](Job::mmds), [`tcp_echo`](Job::tcp_echo),
//! [`udp_echo`](Job::udp_echo) and [`connect`](Job::connect). The guest also
//! takes `169.254.0.2/16`, so that Firecracker's MMDS at `169.254.169.254`
//! (MMDS version 2, enabled on the interface) is on-link. The network
//! operations are for plain mode and protocol 1; protocol 2 rejects them as
//! a bad job. A network operation that fails (no device, no `ip=`, an MMDS
//! error) fails the job as any guest failure does.
//!
//! Speed: the guest boots and prints in about a millisecond, but every byte of
//! serial output is a VM exit (about 17 µs here), so 256 KiB of
//! [`bulk`](Job::bulk) output (about 350 KB of frames) takes about 6 s over
//! protocol 1. Protocol 2 sends output zero-copy in 64 KiB vsock packets.
//!
//! ```
//! use test_guest::Job;
//!
//! let job = Job::new().out("hello, world\n").err("oops").exit(3);
//! assert_eq!(job.to_string(), "out:hello%2C%20world%0A,err:oops,exit:3");
//! assert_eq!(job.to_kernel_arg(), format!("fcx.job={job}"));
//!
//! let dir = std::env::temp_dir().join(format!("test-guest-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let kernel = test_guest::write_kernel(&dir)?;
//! assert_eq!(std::fs::read(&kernel)?, test_guest::kernel());
//! assert_eq!(&test_guest::kernel()[..4], b"\x7fELF");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the guest prints (followed by a newline) when it has no job.
pub const GREETING: &str = "Hello from the fcexec test guest!";

/// The payload of the guest's `hello` frame (protocol 1).
pub const HELLO: &str = "fcexec-guest-protocol/1 agent=test-guest";

/// The agent name in the guest's protocol 2 `hello`.
pub const AGENT_NAME: &str = "test-guest";

/// The bulk pattern's period: byte `i` of [`Job::bulk`] output is `i % 251`.
pub const BULK_MODULUS: u64 = 251;

/// The file name [`write_kernel`] uses.
pub const KERNEL_FILE_NAME: &str = "fcexec-test-guest.elf";

static KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/test-guest.elf"));

/// The guest kernel: an x86_64 ELF image for Firecracker's `kernel_image_path`.
pub fn kernel() -> &'static [u8] {
    KERNEL
}

/// Writes the guest kernel to `dir/fcexec-test-guest.elf` and returns its path.
pub fn write_kernel(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(KERNEL_FILE_NAME);
    std::fs::write(&path, KERNEL)?;
    Ok(path)
}

/// The kernel parameter that gives the guest its address: Linux's
/// `ip=<client>::<gateway>:<netmask>::eth0:off`. The gateway is the host's
/// side of the TAP device.
///
/// ```
/// use std::net::Ipv4Addr;
///
/// let arg = test_guest::ip_kernel_arg(
///     Ipv4Addr::new(172, 31, 0, 2),
///     Ipv4Addr::new(172, 31, 0, 1),
///     Ipv4Addr::new(255, 255, 255, 252),
/// );
/// assert_eq!(arg, "ip=172.31.0.2::172.31.0.1:255.255.255.252::eth0:off");
/// ```
pub fn ip_kernel_arg(client: Ipv4Addr, gateway: Ipv4Addr, netmask: Ipv4Addr) -> String {
    format!("ip={client}::{gateway}:{netmask}::eth0:off")
}

/// The line (with its newline) that [`Job::tcp_echo`] and [`Job::udp_echo`]
/// write to stdout once they listen on `port`.
pub fn listening_line(port: u16) -> String {
    format!("listening on {port}\n")
}

/// One of the workload's output streams, for [`Job::chunked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The first `len` bytes of the bulk pattern: byte `i` is `i % 251`.
pub fn bulk_pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i % BULK_MODULUS) as u8).collect()
}

/// A test guest job: operations the guest runs in order.
///
/// A job that ends without [`exit`](Job::exit) exits 0; an empty job prints
/// [`GREETING`]. Text is binary-safe: every byte other than ASCII letters,
/// digits and `-._~` is percent-encoded (`%20` space, `%2C` comma, `%3A` colon,
/// `%25` percent, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    ops: Vec<String>,
}

impl Job {
    /// An empty job.
    pub fn new() -> Self {
        Self::default()
    }

    fn op(mut self, op: String) -> Self {
        self.ops.push(op);
        self
    }

    /// Write `text` to stdout.
    pub fn out(self, text: impl AsRef<[u8]>) -> Self {
        self.op(format!("out:{}", encode(text.as_ref())))
    }

    /// Write `text` to stderr.
    pub fn err(self, text: impl AsRef<[u8]>) -> Self {
        self.op(format!("err:{}", encode(text.as_ref())))
    }

    /// Report exit code `code` and power off.
    pub fn exit(self, code: u8) -> Self {
        self.op(format!("exit:{code}"))
    }

    /// Wait `ms` milliseconds (by the clock; Ctrl+Alt+Del still works).
    pub fn sleep(self, ms: u64) -> Self {
        self.op(format!("sleep:{ms}"))
    }

    /// Never finish (Ctrl+Alt+Del still works).
    pub fn hang(self) -> Self {
        self.op("hang".into())
    }

    /// Triple-fault the CPU.
    pub fn triple(self) -> Self {
        self.op("triple".into())
    }

    /// Fail as the agent would: a `fail` frame with `text`, then stop.
    pub fn panic(self, text: impl AsRef<[u8]>) -> Self {
        self.op(format!("panic:{}", encode(text.as_ref())))
    }

    /// Copy the first `bytes` bytes of drive `from` to drive `to` (drives are
    /// numbered in Firecracker's order from 0; a partial last sector keeps the
    /// rest of the destination's sector).
    pub fn copy(self, from: usize, to: usize, bytes: u64) -> Self {
        self.op(format!("copy:{from}:{to}:{bytes}"))
    }

    /// Write `bytes` bytes of the bulk pattern ([`bulk_pattern`]) to stdout.
    pub fn bulk(self, bytes: u64) -> Self {
        self.op(format!("bulk:{bytes}"))
    }

    /// From now on ignore Ctrl+Alt+Del (the guest logs
    /// `test-guest: Ctrl+Alt+Del ignored` on the console instead).
    pub fn ignore_cad(self) -> Self {
        self.op("ignore-cad".into())
    }

    /// Write `bytes` bytes of the bulk pattern ([`bulk_pattern`]) to stderr.
    pub fn bulk_err(self, bytes: u64) -> Self {
        self.op(format!("bulk-err:{bytes}"))
    }

    /// Write `bytes` bytes of the bulk pattern to `stream`, `chunk` (at least
    /// 1) bytes per write; over protocol 2 a cancel is noticed between writes.
    pub fn chunked(self, stream: Stream, bytes: u64, chunk: u64) -> Self {
        let stream = match stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        self.op(format!("chunked:{stream}:{bytes}:{chunk}"))
    }

    /// From now on send no heartbeats (protocol 2).
    pub fn no_heartbeat(self) -> Self {
        self.op("no-heartbeat".into())
    }

    /// Write these bytes as they are on the vsock stream, after all output
    /// so far (protocol 2 only; for malformed-frame tests). They are sent once,
    /// on the connection of the moment, and not resent after a reconnect.
    pub fn raw(self, bytes: impl AsRef<[u8]>) -> Self {
        let hex: String = bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.op(format!("raw:{hex}"))
    }

    /// Send this key in every hello instead of the real one (protocol 2 only;
    /// it applies wherever in the job it stands).
    pub fn hello_key(self, key: &[u8; 16]) -> Self {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.op(format!("hello-key:{hex}"))
    }

    /// Power off at once, without reporting anything more.
    pub fn poweroff(self) -> Self {
        self.op("poweroff".into())
    }

    /// From now on a host cancel makes the workload exit with `code`
    /// (protocol 2; by default it is killed by signal 15).
    pub fn on_cancel(self, code: u8) -> Self {
        self.op(format!("on-cancel:{code}"))
    }

    /// From now on the workload ignores a host cancel, and is killed (signal
    /// 9) when the cancel's grace time is over (protocol 2).
    pub fn ignore_cancel(self) -> Self {
        self.op("ignore-cancel".into())
    }

    /// Keep the vCPU busy for `ms` milliseconds by the guest's clock, without
    /// halting (for CPU quota tests). Over protocol 1 and in plain mode,
    /// Ctrl+Alt+Del is noticed only afterwards; protocol 2 still notices a
    /// cancel every millisecond.
    pub fn spin(self, ms: u64) -> Self {
        self.op(format!("spin:{ms}"))
    }

    /// Fetch `path` (for example `/latest/meta-data/id`) from Firecracker's
    /// MMDS version 2 and write the response body to stdout, exactly as
    /// received: `PUT /latest/api/token` with
    /// `X-metadata-token-ttl-seconds: 60`, then `GET <path>` with
    /// `X-metadata-token: <token>` and no `Accept` header (so a string value
    /// comes as the bare string, an object as its keys, one a line). A
    /// status other than 200, or no answer within 10 s, fails the job (the
    /// reason names the status, e.g. `mmds: request: HTTP status 404`).
    /// Network operations: see the crate docs.
    pub fn mmds(self, path: &str) -> Self {
        self.op(format!("mmds:{}", encode(path.as_bytes())))
    }

    /// Serve `connections` TCP connections on `port`, at most two at a time,
    /// echoing all each peer sends until it closes; first write
    /// [`listening_line`] to stdout once listening. No timeout.
    pub fn tcp_echo(self, port: u16, connections: u64) -> Self {
        self.op(format!("tcp-echo:{port}:{connections}"))
    }

    /// Send `datagrams` UDP datagrams received on `port` back to their
    /// senders; first write [`listening_line`] to stdout once bound. No
    /// timeout.
    pub fn udp_echo(self, port: u16, datagrams: u64) -> Self {
        self.op(format!("udp-echo:{port}:{datagrams}"))
    }

    /// Open a TCP connection to `addr` (waiting at most `timeout`, in whole
    /// milliseconds) and write `connected\n` or `failed: <reason>\n` to stdout,
    /// the reason being `connection refused`, `connection reset` or
    /// `timed out`; then close it. The outcome does not fail the job or set
    /// its exit code: later operations do.
    pub fn connect(self, addr: SocketAddrV4, timeout: Duration) -> Self {
        self.op(format!(
            "connect:{}:{}:{}",
            addr.ip(),
            addr.port(),
            timeout.as_millis()
        ))
    }

    /// True when the job has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The kernel command line parameter carrying this job: `fcx.job=<job>`.
    pub fn to_kernel_arg(&self) -> String {
        format!("fcx.job={self}")
    }
}

/// The job string, as it appears after `fcx.job=` or in the config drive's
/// `job=` line.
impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ops.join(","))
    }
}

/// Percent-encodes everything but ASCII letters, digits and `-._~`.
fn encode(text: &[u8]) -> String {
    let mut s = String::with_capacity(text.len());
    for &b in text {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_syntax() {
        let job = Job::new()
            .ignore_cad()
            .out("a b,c:d%e")
            .err(b"\x00\xff")
            .sleep(50)
            .copy(0, 2, 1 << 20)
            .bulk(10)
            .panic("x")
            .hang()
            .triple()
            .exit(255);
        assert_eq!(
            job.to_string(),
            "ignore-cad,out:a%20b%2Cc%3Ad%25e,err:%00%FF,sleep:50,copy:0:2:1048576,\
             bulk:10,panic:x,hang,triple,exit:255"
        );
        let job = Job::new()
            .bulk_err(5)
            .chunked(Stream::Stderr, 100, 7)
            .chunked(Stream::Stdout, 1, 1)
            .no_heartbeat()
            .raw([0x00, 0xab, 0xff])
            .hello_key(&[0x5a; 16])
            .on_cancel(42)
            .ignore_cancel()
            .poweroff();
        assert_eq!(
            job.to_string(),
            format!(
                "bulk-err:5,chunked:err:100:7,chunked:out:1:1,no-heartbeat,raw:00abff,\
                 hello-key:{},on-cancel:42,ignore-cancel,poweroff",
                "5a".repeat(16)
            )
        );
    }

    #[test]
    fn network_operations_have_their_syntax() {
        let job = Job::new()
            .spin(250)
            .mmds("/latest/meta-data/a b")
            .tcp_echo(7, 2)
            .udp_echo(9, 3)
            .connect(
                SocketAddrV4::new(Ipv4Addr::new(172, 31, 0, 1), 8080),
                Duration::from_millis(1500),
            );
        assert_eq!(
            job.to_string(),
            "spin:250,mmds:%2Flatest%2Fmeta-data%2Fa%20b,tcp-echo:7:2,udp-echo:9:3,\
             connect:172.31.0.1:8080:1500"
        );
        assert_eq!(listening_line(7), "listening on 7\n");
    }

    #[test]
    fn kernel_arg_and_empty_job() {
        assert!(Job::new().is_empty());
        assert_eq!(Job::new().to_kernel_arg(), "fcx.job=");
        assert_eq!(Job::new().exit(0).to_kernel_arg(), "fcx.job=exit:0");
    }

    #[test]
    fn bulk_pattern_wraps_at_251() {
        let p = bulk_pattern(600);
        assert_eq!(p[0], 0);
        assert_eq!(p[250], 250);
        assert_eq!(p[251], 0);
        assert_eq!(p[599], (599 % 251) as u8);
    }

    #[test]
    fn kernel_is_a_static_x86_64_elf_loaded_at_1_mib() {
        let k = kernel();
        assert_eq!(&k[..4], b"\x7fELF");
        assert_eq!(k[4], 2, "ELFCLASS64");
        assert_eq!(u16::from_le_bytes([k[18], k[19]]), 62, "EM_X86_64");
        let entry = u64::from_le_bytes(k[24..32].try_into().unwrap());
        assert_eq!(entry, 0x10_0000);
    }
}
