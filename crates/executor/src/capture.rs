//! Output capture: following the guest's serial console file as the VMM
//! writes it, and turning its bytes into the workload's stdout and stderr.
//!
//! The VMM's stdout is a file in the execution's directory, so output is
//! stored the moment it is written and survives an executor restart. The
//! supervisor wakes on inotify's modify events ([`watch_serial`]) and a
//! [`Capture`] reads what is new, up to the executor's output cap.
//! A [`Sink`] then routes it: in plain mode the serial file *is* stdout; in
//! agent mode the frames are decoded into the `stdout` and `stderr` files and
//! the agent's report.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use firecracker_api::watch::{Subscription, WatchMask, Watcher};

use crate::config_drive::Key;
use crate::execution::LogProgress;
use crate::guest_protocol::{Event, FrameDecoder};
use crate::outcome::AgentReport;

/// Bytes read from the serial file per step.
pub const READ_STEP: usize = 16 * 1024;

/// The serial console file, read as the VMM appends to it, with a cap on
/// how much of it is taken in.
#[derive(Debug)]
pub struct Capture {
    path: std::path::PathBuf,
    file: Option<File>,
    sink: Sink,
    /// Serial bytes taken in so far.
    taken: u64,
    /// The most serial bytes taken in (stdout, stderr and console together).
    limit: u64,
    /// True once more than `limit` bytes were offered.
    over_limit: bool,
}

impl Capture {
    /// Starts reading `serial` from its beginning into `sink`, taking in at
    /// most `limit` bytes. A missing file is read as empty.
    pub fn open(serial: &Path, sink: Sink, limit: u64) -> std::io::Result<Capture> {
        let file = match File::open(serial) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Capture {
            path: serial.to_path_buf(),
            file,
            sink,
            taken: 0,
            limit,
            over_limit: false,
        })
    }

    /// Reads everything new into the sink (blocking: call it off the
    /// runtime's workers) and returns the progress.
    pub fn pump(&mut self) -> LogProgress {
        let Some(file) = self.file.as_mut() else {
            return self.sink.progress();
        };
        let mut buf = vec![0u8; READ_STEP];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = self.limit.saturating_sub(self.taken);
                    let take = (n as u64).min(room) as usize;
                    if take < n {
                        self.over_limit = true;
                    }
                    self.taken += take as u64;
                    if let Err(e) = self.sink.feed(&buf[..take]) {
                        tracing::warn!(error = %e, "cannot store output");
                    }
                    if self.over_limit {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the serial output");
                    break;
                }
            }
        }
        self.sink.progress()
    }

    /// The serial stream has ended: decodes what is left.
    pub fn finish(&mut self) -> LogProgress {
        if let Err(e) = self.sink.finish() {
            tracing::warn!(error = %e, "cannot store output");
        }
        self.sink.progress()
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the output went past the limit.
    pub fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// The most serial bytes taken in.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Serial bytes taken in.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// What the agent reported so far (empty in plain mode).
    pub fn report(&self) -> AgentReport {
        self.sink.report()
    }

    /// True once the agent reported the workload's end (exit or failure).
    pub fn agent_ended(&self) -> bool {
        match &self.sink {
            Sink::Plain { .. } | Sink::Console { .. } => false,
            Sink::Agent(agent) => agent.report.exit.is_some() || agent.report.fail.is_some(),
        }
    }

    /// True once the agent said hello (always false in plain mode).
    pub fn agent_said_hello(&self) -> bool {
        match &self.sink {
            Sink::Plain { .. } | Sink::Console { .. } => false,
            Sink::Agent(agent) => agent.report.hello.is_some(),
        }
    }
}

/// Wakes when `path` is written to (inotify), so the supervisor reads only
/// when there is something new.
pub fn watch_serial(path: &Path) -> std::io::Result<Subscription> {
    Watcher::global()
        .and_then(|w| w.subscribe(path, WatchMask::MODIFY))
        .map_err(std::io::Error::other)
}

/// Where serial bytes go.
#[derive(Debug)]
pub enum Sink {
    /// Plain mode: the serial file is stdout; we only count.
    Plain {
        /// Bytes seen.
        len: u64,
    },
    /// Agent mode: frames decoded into files and a report.
    Agent(Box<AgentSink>),
    /// The agent reports over vsock: the serial file is the console log.
    Console {
        /// Bytes seen.
        len: u64,
    },
}

/// The agent-mode sink.
#[derive(Debug)]
pub struct AgentSink {
    decoder: FrameDecoder,
    stdout: OutputFile,
    stderr: OutputFile,
    progress: LogProgress,
    report: AgentReport,
}

impl Sink {
    /// A plain-mode sink.
    pub fn plain() -> Sink {
        Sink::Plain { len: 0 }
    }

    /// A sink for a serial console that carries no output (protocol 2).
    pub fn console() -> Sink {
        Sink::Console { len: 0 }
    }

    /// An agent-mode sink writing `stdout` and `stderr` (truncated first, so
    /// that a restarted executor can decode the serial file again from its start).
    pub fn agent(key: Key, stdout: &Path, stderr: &Path) -> std::io::Result<Sink> {
        Ok(Sink::Agent(Box::new(AgentSink {
            decoder: FrameDecoder::new(key),
            stdout: OutputFile::new(stdout)?,
            stderr: OutputFile::new(stderr)?,
            progress: LogProgress::default(),
            report: AgentReport::default(),
        })))
    }

    /// Takes new serial bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain { len } | Sink::Console { len } => {
                *len += bytes.len() as u64;
                Ok(())
            }
            Sink::Agent(agent) => {
                let events = agent.decoder.push(bytes);
                agent.apply(events)
            }
        }
    }

    /// The serial stream has ended.
    pub fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain { .. } | Sink::Console { .. } => Ok(()),
            Sink::Agent(agent) => {
                let events = agent.decoder.finish();
                agent.apply(events)
            }
        }
    }

    /// How much output is stored.
    pub fn progress(&self) -> LogProgress {
        match self {
            Sink::Plain { len } => LogProgress {
                stdout: *len,
                ..LogProgress::default()
            },
            Sink::Console { len } => LogProgress {
                console: *len,
                ..LogProgress::default()
            },
            Sink::Agent(agent) => agent.progress,
        }
    }

    /// What the agent reported so far (empty in plain mode).
    pub fn report(&self) -> AgentReport {
        match self {
            Sink::Plain { .. } | Sink::Console { .. } => AgentReport::default(),
            Sink::Agent(agent) => agent.report.clone(),
        }
    }
}

impl AgentSink {
    fn apply(&mut self, events: Vec<Event>) -> std::io::Result<()> {
        for event in events {
            match event {
                Event::Console(_) => {}
                Event::Stdout(data) => {
                    self.stdout.write_all(&data)?;
                    self.progress.stdout += data.len() as u64;
                }
                Event::Stderr(data) => {
                    self.stderr.write_all(&data)?;
                    self.progress.stderr += data.len() as u64;
                }
                Event::Hello(text) => self.report.hello = Some(text),
                Event::Exit(code) => {
                    self.report.exit = Some(fcexec_guest_protocol::ExitStatus::Code(code))
                }
                Event::Fail(reason) => self.report.fail = Some(reason),
                Event::ProtocolError(error) => {
                    tracing::warn!(%error, "guest protocol error");
                    self.report.protocol_error.get_or_insert(error);
                }
            }
        }
        Ok(())
    }
}

/// A stream's file, created on its first byte: most jobs write no stderr,
/// and every file created costs system time (see BENCHMARKS.md).
#[derive(Debug)]
struct OutputFile {
    path: std::path::PathBuf,
    file: Option<File>,
}

impl OutputFile {
    /// Forgets what an earlier decoding of the same serial output wrote.
    fn new(path: &Path) -> std::io::Result<OutputFile> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(OutputFile {
            path: path.to_path_buf(),
            file: None,
        })
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::create(&self.path)?),
        };
        file.write_all(data)
    }
}

/// Reads at most the last `limit` bytes of an output file as text (invalid
/// UTF-8 replaced); true when the file held more. A missing file is empty.
pub fn read_tail(path: &Path, limit: u64) -> (String, bool) {
    let Ok(mut file) = File::open(path) else {
        return (String::new(), false);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(limit);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(limit).read_to_end(&mut bytes);
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        // The cut may split a character: drop its replacement at the front.
        if let Some(rest) = text.strip_prefix('\u{FFFD}') {
            text = rest.to_string();
        }
    }
    (text, start > 0)
}
