//! The host's rules of guest protocol 2, as a pure state machine: frames
//! in, replies and stored output out. No sockets, no files, no clocks, so
//! every rule (and every malformed input) is tested without a VM.
//!
//! One [`Session`] lives as long as the execution's supervisor; each agent
//! connection starts over at [`Session::connected`] (hello, attach), while
//! the report and the stored offsets carry over, which is what lets an
//! agent resume after the host end went away.

use fcexec_guest_protocol::{
    capability, ExitStatus, GuestFrame, HostFrame, Stream, KEY_LEN, VERSION,
};

use crate::outcome::AgentReport;

/// Where output goes: files in the executor, memory in tests.
pub trait Output {
    /// Stores `data` at the end of `stream`; returns how many bytes were
    /// taken (fewer than given past the output cap).
    fn append(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<usize>;
    /// Bytes stored so far, per stream (stdout, stderr).
    fn stored(&self) -> [u64; 2];
}

/// Where the current connection is in its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No connection.
    Idle,
    /// Connected; the first frame must be hello.
    AwaitHello,
    /// Hello accepted; output, heartbeats, then exit or fail.
    Attached,
    /// Exit or fail received: nothing more may come on this connection.
    Ended,
}

/// What one frame did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// Frames to send back.
    pub replies: Vec<HostFrame>,
    /// True when the frame stored output.
    pub stored: bool,
    /// True when the output cap cut this frame short.
    pub over_limit: bool,
}

/// The host side of one execution's protocol 2 sessions.
#[derive(Debug)]
pub struct Session {
    key: [u8; KEY_LEN],
    stage: Stage,
    capabilities: u32,
    report: AgentReport,
}

impl Session {
    /// A session expecting agents that present `key`.
    pub fn new(key: [u8; KEY_LEN]) -> Session {
        Session {
            key,
            stage: Stage::Idle,
            capabilities: 0,
            report: AgentReport::default(),
        }
    }

    /// A new connection: it must start with hello.
    pub fn connected(&mut self) {
        self.stage = Stage::AwaitHello;
    }

    /// The connection went away.
    pub fn disconnected(&mut self) {
        self.stage = Stage::Idle;
    }

    /// True while a connection has said a valid hello.
    pub fn attached(&self) -> bool {
        self.stage == Stage::Attached
    }

    /// True once the agent reported the end (exit or fail).
    pub fn ended(&self) -> bool {
        self.report.exit.is_some() || self.report.fail.is_some()
    }

    /// The agent's capabilities, from its last hello.
    pub fn can(&self, capability: u32) -> bool {
        self.capabilities & capability != 0
    }

    /// What the agent reported so far.
    pub fn report(&self) -> &AgentReport {
        &self.report
    }

    /// Records a protocol error (the first one stands) and returns it.
    pub fn fail(&mut self, error: String) -> String {
        self.report.protocol_error.get_or_insert(error).clone()
    }

    /// Applies one frame from the agent. An error is a protocol error: the
    /// caller stops the VM and the result reports it.
    pub fn on_frame(
        &mut self,
        frame: GuestFrame<'_>,
        out: &mut dyn Output,
    ) -> Result<Step, String> {
        match (self.stage, frame) {
            (Stage::Idle, _) => Err("a frame arrived with no connection".into()),
            (Stage::AwaitHello, GuestFrame::Hello { .. }) => self.hello(frame, out),
            (Stage::AwaitHello, other) => Err(format!(
                "the first frame of a connection must be hello, not {}",
                other.kind_name()
            )),
            (Stage::Ended, other) => Err(format!(
                "a {} frame arrived after the agent reported the end",
                other.kind_name()
            )),
            (Stage::Attached, GuestFrame::Hello { .. }) => {
                Err("a second hello arrived on one connection".into())
            }
            (
                Stage::Attached,
                GuestFrame::Output {
                    stream,
                    offset,
                    data,
                },
            ) => self.output(stream, offset, data, out),
            (Stage::Attached, GuestFrame::Heartbeat { .. }) => Ok(Step::default()),
            (
                Stage::Attached,
                GuestFrame::Exit {
                    status,
                    stdout_len,
                    stderr_len,
                },
            ) => self.exit(status, [stdout_len, stderr_len], out),
            (Stage::Attached, GuestFrame::Fail { reason }) => {
                self.stage = Stage::Ended;
                self.report.fail.get_or_insert_with(|| reason.to_string());
                Ok(done())
            }
        }
    }

    fn hello(&mut self, frame: GuestFrame<'_>, out: &mut dyn Output) -> Result<Step, String> {
        let GuestFrame::Hello {
            version,
            key,
            capabilities,
            agent,
        } = frame
        else {
            return Err("not a hello".into());
        };
        if version != VERSION {
            return Err(format!(
                "the agent speaks protocol version {version}; this executor speaks {VERSION}"
            ));
        }
        if !same_key(&key, &self.key) {
            return Err("the agent's hello carries the wrong key".into());
        }
        self.stage = Stage::Attached;
        self.capabilities = capabilities;
        self.report
            .hello
            .get_or_insert_with(|| format!("fcexec-guest-protocol/{version} agent={agent}"));
        let [stdout_offset, stderr_offset] = out.stored();
        Ok(Step {
            replies: vec![HostFrame::Attach {
                stdout_offset,
                stderr_offset,
            }],
            ..Step::default()
        })
    }

    fn output(
        &mut self,
        stream: Stream,
        offset: u64,
        data: &[u8],
        out: &mut dyn Output,
    ) -> Result<Step, String> {
        let stored = out.stored()[stream.index()];
        if offset > stored {
            return Err(format!(
                "{stream} output at offset {offset} leaves a gap: {stored} bytes are stored"
            ));
        }
        // Bytes below what is stored were resent after a reconnect.
        let skip = (stored - offset).min(data.len() as u64) as usize;
        let new = &data[skip..];
        if new.is_empty() {
            return Ok(Step::default());
        }
        let taken = out
            .append(stream, new)
            .map_err(|e| format!("cannot store {stream}: {e}"))?;
        Ok(Step {
            stored: taken > 0,
            over_limit: taken < new.len(),
            ..Step::default()
        })
    }

    fn exit(
        &mut self,
        status: ExitStatus,
        lengths: [u64; 2],
        out: &mut dyn Output,
    ) -> Result<Step, String> {
        let stored = out.stored();
        for stream in Stream::ALL {
            let (said, have) = (lengths[stream.index()], stored[stream.index()]);
            if said != have {
                return Err(format!(
                    "the agent reported {said} bytes of {stream} at exit, but {have} arrived"
                ));
            }
        }
        if let Some(first) = self.report.exit.filter(|first| *first != status) {
            return Err(format!(
                "the agent reported the workload {first}, then {status}"
            ));
        }
        self.stage = Stage::Ended;
        self.report.exit = Some(status);
        Ok(done())
    }

    /// The ack for what is stored now.
    pub fn ack(out: &dyn Output) -> HostFrame {
        let [stdout_offset, stderr_offset] = out.stored();
        HostFrame::Ack {
            stdout_offset,
            stderr_offset,
        }
    }

    /// True when the agent said it sends heartbeats.
    pub fn sends_heartbeats(&self) -> bool {
        self.can(capability::HEARTBEAT)
    }
}

fn done() -> Step {
    Step {
        replies: vec![HostFrame::Done],
        ..Step::default()
    }
}

/// Compares keys in time that does not depend on where they differ.
fn same_key(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
