//! The frames and their parts.

use core::fmt;

use crate::{kind, KEY_LEN};

/// One of the workload's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// Both streams, in index order.
    pub const ALL: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    /// 0 for stdout, 1 for stderr: handy for per-stream arrays.
    pub const fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    /// `"stdout"` or `"stderr"`.
    pub const fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The kind code of this stream's output frames.
    pub const fn kind(self) -> u8 {
        match self {
            Stream::Stdout => kind::STDOUT,
            Stream::Stderr => kind::STDERR,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(u8),
    /// It was killed by this signal (1 to [`MAX_SIGNAL`](crate::MAX_SIGNAL)).
    Signal(u8),
}

impl fmt::Display for ExitStatus {
    /// `exited with code N` or `killed by signal N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// A frame the guest agent sends to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestFrame<'a> {
    /// The first frame of every connection.
    Hello {
        /// The protocol version the agent speaks ([`VERSION`](crate::VERSION)).
        version: u16,
        /// The execution key, raw bytes.
        key: [u8; KEY_LEN],
        /// The agent's [`capability`](crate::capability) bits.
        capabilities: u32,
        /// The agent's name, at most [`MAX_AGENT_NAME`](crate::MAX_AGENT_NAME) bytes.
        agent: &'a str,
    },
    /// Bytes the workload wrote to one of its streams.
    Output {
        /// Which stream.
        stream: Stream,
        /// The offset of `data[0]` in the stream.
        offset: u64,
        /// The bytes, at most [`MAX_DATA`](crate::MAX_DATA) of them.
        data: &'a [u8],
    },
    /// The workload ended.
    Exit {
        /// How it ended.
        status: ExitStatus,
        /// Total bytes it ever wrote to stdout.
        stdout_len: u64,
        /// Total bytes it ever wrote to stderr.
        stderr_len: u64,
    },
    /// The agent itself failed.
    Fail {
        /// Why, 1 to [`MAX_REASON`](crate::MAX_REASON) bytes.
        reason: &'a str,
    },
    /// The agent is alive.
    Heartbeat {
        /// Milliseconds since the agent started.
        uptime_ms: u64,
    },
}

impl GuestFrame<'_> {
    /// The frame's kind code (see [`kind`](crate::kind)).
    pub const fn kind(&self) -> u8 {
        match self {
            GuestFrame::Hello { .. } => kind::HELLO,
            GuestFrame::Output { stream, .. } => stream.kind(),
            GuestFrame::Exit { .. } => kind::EXIT,
            GuestFrame::Fail { .. } => kind::FAIL,
            GuestFrame::Heartbeat { .. } => kind::HEARTBEAT,
        }
    }

    /// The frame kind's name: `hello`, `stdout`, `stderr`, `exit`, `fail` or `heartbeat`.
    pub const fn kind_name(&self) -> &'static str {
        match self {
            GuestFrame::Hello { .. } => "hello",
            GuestFrame::Output { stream, .. } => stream.name(),
            GuestFrame::Exit { .. } => "exit",
            GuestFrame::Fail { .. } => "fail",
            GuestFrame::Heartbeat { .. } => "heartbeat",
        }
    }
}

/// A frame the host sends to the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostFrame {
    /// The reply to hello: the agent (re)sends output from these offsets.
    Attach {
        /// Where stdout resumes.
        stdout_offset: u64,
        /// Where stderr resumes.
        stderr_offset: u64,
    },
    /// The host has stored output up to these offsets.
    Ack {
        /// Stdout stored up to here.
        stdout_offset: u64,
        /// Stderr stored up to here.
        stderr_offset: u64,
    },
    /// Terminate the workload, and kill it after the grace time.
    Cancel {
        /// Milliseconds between terminating and killing.
        grace_ms: u32,
    },
    /// The host has the whole result; the agent may power the VM off.
    Done,
}

impl HostFrame {
    /// The frame's kind code (see [`kind`](crate::kind)).
    pub const fn kind(&self) -> u8 {
        match self {
            HostFrame::Attach { .. } => kind::ATTACH,
            HostFrame::Ack { .. } => kind::ACK,
            HostFrame::Cancel { .. } => kind::CANCEL,
            HostFrame::Done => kind::DONE,
        }
    }

    /// The frame kind's name: `attach`, `ack`, `cancel` or `done`.
    pub const fn kind_name(&self) -> &'static str {
        match self {
            HostFrame::Attach { .. } => "attach",
            HostFrame::Ack { .. } => "ack",
            HostFrame::Cancel { .. } => "cancel",
            HostFrame::Done => "done",
        }
    }
}
