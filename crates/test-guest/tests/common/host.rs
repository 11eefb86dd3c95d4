//! A minimal protocol 2 host for the tests: listens on the vsock device's
//! `<uds_path>_<port>` socket (Firecracker connects there when the guest
//! connects to the host's port), decodes guest frames with
//! `fcexec_guest_protocol`, keeps a [`Transcript`] of everything — output
//! must arrive at exactly the offset already stored, so gaps and duplicates
//! are errors — acks what it stored and answers.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fcexec_guest_protocol::{decode_guest, ExitStatus, GuestFrame, HostFrame, Stream, KEY_LEN};

use super::{spawn, Outcome, Vm, VmSpec, KEY};

/// [`KEY`] as raw bytes.
pub fn key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&KEY[2 * i..2 * i + 2], 16).expect("hex key");
    }
    key
}

/// A guest frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u16,
        key: [u8; KEY_LEN],
        capabilities: u32,
        agent: String,
    },
    Output {
        stream: Stream,
        offset: u64,
        data: Vec<u8>,
    },
    Exit {
        status: ExitStatus,
        stdout_len: u64,
        stderr_len: u64,
    },
    Fail(String),
    Heartbeat(u64),
}

impl From<GuestFrame<'_>> for Frame {
    fn from(f: GuestFrame<'_>) -> Self {
        match f {
            GuestFrame::Hello {
                version,
                key,
                capabilities,
                agent,
            } => Frame::Hello {
                version,
                key,
                capabilities,
                agent: agent.to_string(),
            },
            GuestFrame::Output {
                stream,
                offset,
                data,
            } => Frame::Output {
                stream,
                offset,
                data: data.to_vec(),
            },
            GuestFrame::Exit {
                status,
                stdout_len,
                stderr_len,
            } => Frame::Exit {
                status,
                stdout_len,
                stderr_len,
            },
            GuestFrame::Fail { reason } => Frame::Fail(reason.to_string()),
            GuestFrame::Heartbeat { uptime_ms } => Frame::Heartbeat(uptime_ms),
        }
    }
}

/// The listening socket for one vsock port; removed when dropped, so that
/// Firecracker's connection attempts are refused again.
pub struct Listener {
    pub path: PathBuf,
    listener: UnixListener,
}

impl Listener {
    /// Listens on `<uds>_<port>`.
    pub fn bind(uds: &Path, port: u32) -> Listener {
        let path = PathBuf::from(format!("{}_{port}", uds.display()));
        let listener = UnixListener::bind(&path).expect("bind the vsock port socket");
        listener.set_nonblocking(true).expect("nonblocking");
        Listener { path, listener }
    }

    /// Accepts the guest's next connection (within 10 s) and attaches at the
    /// offsets `t` has stored; panics when that fails.
    pub fn attach(&self, t: &mut Transcript) -> Conn {
        let mut conn = self
            .accept(Duration::from_secs(10))
            .expect("the guest did not connect within 10 s");
        conn.handshake(t, &key()).expect("handshake");
        conn
    }

    /// The next connection, or `None` after `timeout`.
    pub fn accept(&self, timeout: Duration) -> Option<Conn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Some(Conn::new(stream)),
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why [`Conn::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The guest sent its exit or fail frame.
    Ended,
    /// The guest's end of the connection went away.
    Closed,
    /// The caller's condition became true.
    Until,
}

/// One accepted connection.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        stream.set_nonblocking(false).expect("blocking");
        Conn {
            stream,
            buf: vec![0; 4 << 20],
            pos: 0,
            len: 0,
        }
    }

    /// Sends a host frame.
    pub fn send(&mut self, frame: HostFrame) {
        let mut buf = [0u8; HostFrame::MAX_LEN];
        let n = frame.encode(&mut buf).expect("encode a host frame");
        self.send_raw(&buf[..n]);
    }

    /// Sends bytes as they are (for malformed frames); errors are ignored.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next frame: `Ok(None)` when the guest's end is gone; `Err` on a
    /// decode error or when nothing whole arrives within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<(Frame, Instant)>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some((frame, Instant::now())));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no whole frame within {timeout:?}"));
            }
            if self.pos > 0 && self.buf.len() - self.len < (1 << 20) {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .expect("read timeout");
            match self.stream.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(None),
                Ok(n) => self.len += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Ok(None),
            }
        }
    }

    /// A whole frame from the buffer, if there is one.
    fn buffered(&mut self) -> Result<Option<Frame>, String> {
        match decode_guest(&self.buf[self.pos..self.len]) {
            Ok(Some((frame, used))) => {
                let frame = Frame::from(frame);
                self.pos += used;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("guest protocol error: {e}")),
        }
    }

    /// True when a whole frame is already buffered.
    fn has_buffered(&self) -> bool {
        matches!(decode_guest(&self.buf[self.pos..self.len]), Ok(Some(_)))
    }

    /// Reads the hello (it must carry `key`) and attaches at the offsets the
    /// transcript has stored.
    pub fn handshake(&mut self, t: &mut Transcript, key: &[u8; KEY_LEN]) -> Result<(), String> {
        let (frame, _) = self
            .next(Duration::from_secs(10))?
            .ok_or("the connection closed before the hello")?;
        let Frame::Hello { key: got, .. } = &frame else {
            return Err(format!("the first frame is not a hello: {frame:?}"));
        };
        if got != key {
            return Err(format!("hello with the wrong key {got:02x?}"));
        }
        t.hellos.push(frame);
        let (stdout_offset, stderr_offset) = t.offsets();
        self.send(HostFrame::Attach {
            stdout_offset,
            stderr_offset,
        });
        t.acked = [stdout_offset, stderr_offset];
        Ok(())
    }

    /// Reads frames into `t`, acking what it stored whenever no more whole
    /// frames are buffered, until the guest's end frame, the end of the
    /// connection or `until(t)`; `Err` on a protocol error or timeout.
    pub fn serve(
        &mut self,
        t: &mut Transcript,
        until: impl Fn(&Transcript) -> bool,
        timeout: Duration,
    ) -> Result<Stop, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if until(t) {
                return Ok(Stop::Until);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((frame, at)) = self.next(left)? else {
                return Ok(Stop::Closed);
            };
            let ended = matches!(frame, Frame::Exit { .. } | Frame::Fail(_));
            t.take(frame, at)?;
            if !self.has_buffered() && t.offsets() != (t.acked[0], t.acked[1]) && t.acks {
                let (stdout_offset, stderr_offset) = t.offsets();
                self.send(HostFrame::Ack {
                    stdout_offset,
                    stderr_offset,
                });
                t.acked = [stdout_offset, stderr_offset];
            }
            if ended {
                return Ok(Stop::Ended);
            }
        }
    }
}

/// Everything a host received in one run, over any number of connections.
#[derive(Debug)]
pub struct Transcript {
    pub started: Instant,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub hellos: Vec<Frame>,
    /// Heartbeats: when they arrived and their uptime.
    pub heartbeats: Vec<(Instant, u64)>,
    /// The exit or fail frame.
    pub end: Option<Frame>,
    pub first_output: Option<Instant>,
    pub end_at: Option<Instant>,
    /// Output frames received (including empty ones).
    pub output_frames: usize,
    /// The offsets last acked (or attached at).
    pub acked: [u64; 2],
    /// Send acks (true unless a test wants the guest's window to fill).
    pub acks: bool,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript {
            started: Instant::now(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            hellos: Vec::new(),
            heartbeats: Vec::new(),
            end: None,
            first_output: None,
            end_at: None,
            output_frames: 0,
            acked: [0; 2],
            acks: true,
        }
    }
}

impl Transcript {
    /// Bytes stored per stream: where the next output must start.
    pub fn offsets(&self) -> (u64, u64) {
        (self.stdout.len() as u64, self.stderr.len() as u64)
    }

    /// Stores one frame; `Err` for a gap, a duplicate, a second hello on one
    /// connection or anything after the end.
    pub fn take(&mut self, frame: Frame, at: Instant) -> Result<(), String> {
        if let Some(end) = &self.end {
            return Err(format!("{frame:?} after the end {end:?}"));
        }
        match frame {
            Frame::Hello { .. } => return Err("a second hello on one connection".into()),
            Frame::Output {
                stream,
                offset,
                data,
            } => {
                let out = match stream {
                    Stream::Stdout => &mut self.stdout,
                    Stream::Stderr => &mut self.stderr,
                };
                if offset != out.len() as u64 {
                    return Err(format!(
                        "{stream} output at offset {offset}, but {} bytes are stored",
                        out.len()
                    ));
                }
                out.extend_from_slice(&data);
                self.first_output.get_or_insert(at);
                self.output_frames += 1;
            }
            Frame::Heartbeat(uptime) => self.heartbeats.push((at, uptime)),
            Frame::Exit { .. } | Frame::Fail(_) => {
                self.end = Some(frame);
                self.end_at = Some(at);
            }
        }
        Ok(())
    }

    /// The exit status, checking the exit frame's totals against the output.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match &self.end {
            Some(Frame::Exit {
                status,
                stdout_len,
                stderr_len,
            }) => {
                assert_eq!(*stdout_len, self.stdout.len() as u64, "stdout total");
                assert_eq!(*stderr_len, self.stderr.len() as u64, "stderr total");
                Some(*status)
            }
            _ => None,
        }
    }

    /// The fail reason, if the agent failed.
    pub fn fail_reason(&self) -> Option<&str> {
        match &self.end {
            Some(Frame::Fail(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// A test guest VM with a vsock device and a protocol 2 config drive.
pub struct VsockVm {
    pub vm: Vm,
    /// The socket directory (the vsock device's `uds_path` is `v.sock` in it).
    pub dir: tempfile::TempDir,
    pub uds: PathBuf,
}

impl VsockVm {
    /// Listens on a guest port (1024 unless the config said otherwise).
    pub fn listen(&self, port: u32) -> Listener {
        Listener::bind(&self.uds, port)
    }

    /// Waits (30 s at most) for the VMM to exit, and checks it exited 0.
    pub fn finish(self) -> Outcome {
        let out = self.vm.wait(Duration::from_secs(30));
        assert!(out.status.success(), "{}\n{}", out.status, out.log);
        out
    }
}

/// [`spawn_vsock`], listening on port 1024 before boot.
pub fn boot(vmm: &testkit::Vmm, job: &test_guest::Job, lines: &[&str]) -> (VsockVm, Listener) {
    spawn_vsock(vmm, job, lines, |uds| Listener::bind(uds, 1024))
}

/// Boots the test guest with a vsock device and a config drive holding the
/// key, `proto=2`, the job and `lines`; `listen` is called (to bind the host
/// socket) before the VMM starts.
pub fn spawn_vsock<T>(
    vmm: &testkit::Vmm,
    job: &test_guest::Job,
    lines: &[&str],
    listen: impl FnOnce(&Path) -> T,
) -> (VsockVm, T) {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("v.sock");
    let cfg = dir.path().join("config.img");
    let mut all = vec!["proto=2".to_string(), format!("job={job}")];
    all.extend(lines.iter().map(|l| l.to_string()));
    super::config_drive_lines(&cfg, KEY, &all);
    let listening = listen(&uds);
    let spec = VmSpec::new("console=ttyS0")
        .drive(&cfg, true)
        .with_vsock(&uds);
    let vm = spawn(vmm, &spec);
    (VsockVm { vm, dir, uds }, listening)
}

/// Runs a whole exchange on one connection: accept, handshake, serve to the
/// end, `done`; returns the transcript (the VM is left to exit).
pub fn run_to_end(listener: &Listener, timeout: Duration) -> Transcript {
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    let stop = conn.serve(&mut t, |_| false, timeout).expect("serve");
    assert_eq!(stop, Stop::Ended, "the connection closed before the end");
    conn.send(HostFrame::Done);
    t
}
