//! The host end of guest protocol 2: the agent's connection over
//! Firecracker's hybrid vsock.
//!
//! The agent connects from the guest to the host (CID 2) on a port;
//! Firecracker turns that into a connection to the Unix socket
//! `<uds_path>_<port>`, on which an [`AgentLink`] listens, bound before the
//! VMM is spawned so the agent never has to retry its first connection.
//! One connection at a time is served; another one is refused and logged.
//! When a connection ends before the agent's report is complete (the
//! executor restarted, say) the agent connects again and the
//! [`session::Session`] resumes where the stored output ends.
//!
//! [`AgentLink::next`] is cancel-safe, so the supervisor polls it in its
//! `select!` beside everything else. File writes run on the blocking pool.

pub mod session;
pub mod store;

use std::os::unix::net::UnixListener as StdListener;
use std::path::Path;
use std::time::Duration;

use fcexec_guest_protocol::{capability, decode_guest, HostFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::outcome::AgentReport;
use session::{Output, Session};
use store::OutputStore;

/// Bytes read from the connection before they are decoded and stored.
const READ_BATCH: usize = 1 << 20;

/// Binds the agent's socket at `path`, replacing a stale one (left by an
/// executor that died). Blocking; done before the VMM is spawned.
pub fn bind(path: &Path) -> std::io::Result<StdListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = StdListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What an [`AgentLink`] is made of, prepared off the runtime (binding
/// and opening files block) before the VMM is spawned or adopted.
#[derive(Debug)]
pub struct LinkParts {
    listener: StdListener,
    key: [u8; fcexec_guest_protocol::KEY_LEN],
    store: OutputStore,
}

impl LinkParts {
    /// Binds the agent's socket under `paths` and opens the output files
    /// (resuming at their lengths), with output cap `limit`.
    pub fn open(
        paths: &crate::state_dir::ExecPaths,
        key: &crate::config_drive::Key,
        limit: u64,
    ) -> std::io::Result<LinkParts> {
        let socket = paths.agent_socket(fcexec_guest_protocol::DEFAULT_PORT);
        let listener = bind(&socket).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} for the agent: {e}", socket.display()),
            )
        })?;
        Ok(LinkParts {
            listener,
            key: *key.as_bytes(),
            store: OutputStore::open(&paths.stdout(), &paths.stderr(), limit)?,
        })
    }
}

/// What [`AgentLink::next`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An agent connected and said a valid hello.
    Attached,
    /// More output is stored: bytes of (stdout, stderr) now.
    Stored([u64; 2]),
    /// The agent reported the end (exit or fail) and was told `done`.
    Ended,
    /// The agent broke the protocol (the report holds the reason).
    ProtocolError(String),
    /// The output cap was reached.
    OverLimit,
    /// An agent that promised heartbeats sent nothing for this long.
    Silent(Duration),
}

/// The session and the files, handed to the blocking pool and back.
#[derive(Debug)]
struct Work {
    session: Session,
    store: OutputStore,
    buf: Vec<u8>,
}

/// What woke [`AgentLink::next`].
enum Wake {
    Accepted(std::io::Result<UnixStream>),
    Read(std::io::Result<usize>),
    Written(std::io::Result<()>),
    Silent(Duration),
}

/// What one batch of bytes did.
#[derive(Debug, Default)]
struct Batch {
    replies: Vec<HostFrame>,
    stored: bool,
    over_limit: bool,
    error: Option<String>,
}

/// One execution's agent connection (see the module doc).
#[derive(Debug)]
pub struct AgentLink {
    listener: UnixListener,
    conn: Option<UnixStream>,
    work: Option<Work>,
    processing: Option<JoinHandle<(Work, Batch)>>,
    /// Encoded frames waiting to be written to the agent.
    outgoing: Vec<u8>,
    /// A cancel to send once an agent is attached: its grace period.
    pending_cancel: Option<Duration>,
    last_heard: Instant,
    /// How long an agent that promised heartbeats may stay silent.
    silence_limit: Option<Duration>,
    /// True while the VM is paused (and rightly silent).
    paused: bool,
    stored: [u64; 2],
    /// Set once the end was reported, so it is said once.
    ended_said: bool,
    /// Whether the current connection said hello, as last reported.
    attached: bool,
}

impl AgentLink {
    /// Serves the parts' socket; an agent that promised heartbeats and
    /// stays silent for `silence_limit` is reported. Needs a Tokio runtime.
    pub fn new(parts: LinkParts, silence_limit: Option<Duration>) -> std::io::Result<AgentLink> {
        let LinkParts {
            listener,
            key,
            store,
        } = parts;
        let stored = store.stored();
        Ok(AgentLink {
            listener: UnixListener::from_std(listener)?,
            conn: None,
            work: Some(Work {
                session: Session::new(key),
                store,
                buf: Vec::new(),
            }),
            processing: None,
            outgoing: Vec::new(),
            pending_cancel: None,
            last_heard: Instant::now(),
            silence_limit,
            paused: false,
            stored,
            ended_said: false,
            attached: false,
        })
    }

    /// The next thing that happened on the link. Cancel-safe.
    pub async fn next(&mut self) -> LinkEvent {
        loop {
            if let Some(event) = self.settle().await {
                return event;
            }
            let silence = self.silence_deadline();
            let AgentLink {
                listener,
                conn,
                work,
                outgoing,
                ..
            } = self;
            let (reader, writer) = match conn.as_mut().map(|c| c.split()) {
                Some((r, w)) => (Some(r), Some(w)),
                None => (None, None),
            };
            let wake = tokio::select! {
                accepted = listener.accept() => Wake::Accepted(accepted.map(|(s, _)| s)),
                read = read_some(reader, work) => Wake::Read(read),
                written = write_some(writer, outgoing), if !outgoing.is_empty() => Wake::Written(written),
                _ = sleep_until(silence) => Wake::Silent(silence.map_or(Duration::ZERO, |s| s.1)),
            };
            match wake {
                Wake::Accepted(Ok(stream)) => self.accept(stream),
                Wake::Accepted(Err(e)) => {
                    tracing::warn!(error = %e, "cannot accept the agent's connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Wake::Read(Ok(0)) => self.disconnect("the agent closed its connection"),
                Wake::Read(Ok(_)) => {
                    self.last_heard = Instant::now();
                    self.start_batch();
                }
                Wake::Read(Err(e)) => {
                    self.disconnect(&format!("the agent's connection failed: {e}"))
                }
                Wake::Silent(limit) => return LinkEvent::Silent(limit),
                Wake::Written(Ok(())) => {}
                Wake::Written(Err(e)) => {
                    self.disconnect(&format!("cannot write to the agent: {e}"))
                }
            }
        }
    }

    /// Finishes a batch handed to the blocking pool, if any.
    async fn settle(&mut self) -> Option<LinkEvent> {
        let handle = self.processing.as_mut()?;
        let joined = handle.await;
        self.processing = None;
        let (work, batch) = match joined {
            Ok(done) => done,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => return std::future::pending().await,
            },
        };
        self.stored = work.store.stored();
        let attached = work.session.attached();
        let ended = work.session.ended();
        self.work = Some(work);
        for reply in &batch.replies {
            self.queue(reply);
        }
        if attached {
            if let Some(grace) = self.pending_cancel.take() {
                self.queue(&cancel_frame(grace));
            }
        }
        if let Some(error) = batch.error {
            return Some(LinkEvent::ProtocolError(error));
        }
        if batch.over_limit {
            return Some(LinkEvent::OverLimit);
        }
        if ended && !self.ended_said {
            self.ended_said = true;
            return Some(LinkEvent::Ended);
        }
        if attached && !self.attached {
            self.attached = true;
            if !batch.stored {
                return Some(LinkEvent::Attached);
            }
        }
        batch.stored.then_some(LinkEvent::Stored(self.stored))
    }

    fn accept(&mut self, stream: UnixStream) {
        if self.conn.as_ref().is_some_and(|c| !closed(c)) {
            tracing::warn!("refused a second connection on the agent's port: one agent connection per execution");
            return;
        }
        if self.conn.is_some() {
            // The agent reconnected before its old connection's end was read.
            self.disconnect("the agent closed its connection");
        }
        tracing::debug!("the agent connected");
        self.conn = Some(stream);
        self.outgoing.clear();
        self.last_heard = Instant::now();
        if let Some(work) = &mut self.work {
            work.buf.clear();
            work.session.connected();
        }
    }

    fn disconnect(&mut self, why: &str) {
        self.conn = None;
        self.attached = false;
        self.outgoing.clear();
        if let Some(work) = &mut self.work {
            if !work.buf.is_empty() {
                let error = format!(
                    "the connection closed in the middle of a frame ({} bytes of it arrived)",
                    work.buf.len()
                );
                tracing::warn!(%error, "guest protocol error");
                work.session.fail(error);
                work.buf.clear();
            }
            work.session.disconnected();
        }
        tracing::info!(why, "the agent's connection ended");
    }

    /// Decodes and stores what was read, on the blocking pool.
    fn start_batch(&mut self) {
        let Some(mut work) = self.work.take() else {
            return;
        };
        self.processing = Some(tokio::task::spawn_blocking(move || {
            let batch = process(&mut work);
            (work, batch)
        }));
    }

    fn queue(&mut self, frame: &HostFrame) {
        let mut bytes = [0u8; HostFrame::MAX_LEN];
        match frame.encode(&mut bytes) {
            Ok(n) => self.outgoing.extend_from_slice(&bytes[..n]),
            Err(e) => tracing::error!(error = %e, "cannot encode a frame for the agent"),
        }
    }

    /// Asks the agent to stop the workload, killing it after `grace`.
    /// Returns false when the agent cannot take a cancel (it never said
    /// hello, or it does not support it): stop the VM instead. An agent
    /// between connections gets the cancel when it is back.
    pub fn cancel(&mut self, grace: Duration) -> bool {
        let Some(work) = &self.work else {
            // A batch is being stored; the session is known to be attached.
            self.pending_cancel = Some(grace);
            return true;
        };
        if work.session.report().hello.is_none() || !work.session.can(capability::CANCEL) {
            return false;
        }
        match work.session.attached() {
            true => self.queue(&cancel_frame(grace)),
            false => self.pending_cancel = Some(grace),
        }
        true
    }

    /// While `paused`, silence is not held against the agent; when the VM
    /// resumes, the agent counts as heard from then.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        self.last_heard = Instant::now();
    }

    /// When a silent agent counts as hung: the limit after the last byte.
    fn silence_deadline(&self) -> Option<(Instant, Duration)> {
        let limit = self.silence_limit.filter(|_| !self.paused)?;
        self.expects_heartbeats()
            .then(|| (self.last_heard + limit, limit))
    }

    /// True while an agent is connected and has said hello.
    pub fn attached(&self) -> bool {
        self.attached
    }

    /// True when the agent said hello and promised heartbeats.
    pub fn expects_heartbeats(&self) -> bool {
        self.work
            .as_ref()
            .is_some_and(|w| w.session.report().hello.is_some() && w.session.sends_heartbeats())
    }

    /// What the agent reported so far.
    pub fn report(&self) -> AgentReport {
        self.work
            .as_ref()
            .map(|w| w.session.report().clone())
            .unwrap_or_default()
    }

    /// Bytes of (stdout, stderr) stored.
    pub fn stored(&self) -> [u64; 2] {
        self.stored
    }

    /// The output cap.
    pub fn limit(&self) -> u64 {
        self.work.as_ref().map_or(0, |w| w.store.limit())
    }

    /// Writes every frame queued for the agent (the `done` after its end).
    pub async fn flush(&mut self) {
        while !self.outgoing.is_empty() {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.write(&self.outgoing).await {
                Ok(n) if n > 0 => {
                    self.outgoing.drain(..n);
                }
                _ => return,
            }
        }
    }

    /// The VM ended: stores what its VMM passed on before it went (a
    /// batch under way, then what is left in the socket up to its end), so
    /// the report is complete.
    pub async fn drain(&mut self) {
        let _ = self.settle().await;
        // Bounded: a dead VMM's socket holds what it was sent, then its end.
        for _ in 0..256 {
            let (Some(conn), Some(work)) = (self.conn.as_ref(), self.work.as_mut()) else {
                return;
            };
            work.buf.reserve(READ_BATCH);
            match conn.try_read_buf(&mut work.buf) {
                Ok(0) => return self.disconnect("the VM ended"),
                Ok(_) => {
                    self.start_batch();
                    let _ = self.settle().await;
                }
                Err(_) => return,
            }
        }
    }
}

async fn sleep_until(deadline: Option<(Instant, Duration)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// True when the peer closed `conn` and nothing is left to read from it.
fn closed(conn: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    // A peek neither consumes data nor blocks.
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(recv(conn.as_raw_fd(), &mut byte, flags), Ok(0))
}

fn cancel_frame(grace: Duration) -> HostFrame {
    HostFrame::Cancel {
        grace_ms: u32::try_from(grace.as_millis()).unwrap_or(u32::MAX),
    }
}

/// Decodes every whole frame in the buffer and applies it.
fn process(work: &mut Work) -> Batch {
    let mut batch = Batch::default();
    let mut used = 0;
    while used < work.buf.len() {
        let frame = match decode_guest(&work.buf[used..]) {
            Ok(Some((frame, len))) => {
                used += len;
                frame
            }
            Ok(None) => break,
            Err(e) => {
                batch.error = Some(work.session.fail(e.to_string()));
                break;
            }
        };
        match work.session.on_frame(frame, &mut work.store) {
            Ok(step) => {
                batch.stored |= step.stored;
                batch.replies.extend(step.replies);
                if step.over_limit {
                    batch.over_limit = true;
                    break;
                }
            }
            Err(e) => {
                batch.error = Some(work.session.fail(e));
                break;
            }
        }
    }
    work.buf.drain(..used);
    if batch.stored {
        batch.replies.insert(0, Session::ack(&work.store));
    }
    batch
}

/// Reads what the connection has (waiting for at least one byte); pending
/// forever without a connection or while a batch is stored.
async fn read_some(conn: Option<ReadHalf<'_>>, work: &mut Option<Work>) -> std::io::Result<usize> {
    let (Some(mut conn), Some(work)) = (conn, work.as_mut()) else {
        return std::future::pending().await;
    };
    let buf = &mut work.buf;
    buf.reserve(READ_BATCH.saturating_sub(buf.len()).max(4096));
    let first = conn.read_buf(buf).await?;
    if first == 0 {
        return Ok(0);
    }
    // Take what else is already there, so a fast agent is stored in big batches.
    let mut total = first;
    while buf.len() < READ_BATCH {
        match conn.try_read_buf(buf) {
            Ok(n) if n > 0 => total += n,
            _ => break,
        }
    }
    Ok(total)
}

/// Writes some of `outgoing`; pending forever without a connection.
async fn write_some(conn: Option<WriteHalf<'_>>, outgoing: &mut Vec<u8>) -> std::io::Result<()> {
    let Some(mut conn) = conn else {
        return std::future::pending().await;
    };
    let n = conn.write(outgoing).await?;
    outgoing.drain(..n);
    Ok(())
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
