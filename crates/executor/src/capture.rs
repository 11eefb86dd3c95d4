//! Output capture: following the guest's serial console file as the VMM
//! writes it, and turning its bytes into the workload's stdout and stderr.
//!
//! The VMM's stdout is a file in the execution's directory, so output is
//! stored the moment it is written and survives an executor restart. A
//! [`SerialTail`] wakes on inotify's modify events and reads what is new.
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

/// Follows a file that another process appends to.
#[derive(Debug)]
pub struct SerialTail {
    file: File,
    changes: Subscription,
}

impl SerialTail {
    /// Starts following `path` from its beginning.
    pub fn open(path: &Path) -> std::io::Result<SerialTail> {
        let changes = Watcher::global()
            .and_then(|w| w.subscribe(path, WatchMask::MODIFY))
            .map_err(std::io::Error::other)?;
        let file = File::open(path)?;
        Ok(SerialTail { file, changes })
    }

    /// Resolves when the file was written to since the last call. Cancel-safe.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        self.changes.changed().await;
        Ok(())
    }

    /// Reads what is new into `buf`; 0 at the end. The caller owns the
    /// buffer, so an idle execution holds none.
    pub fn read_new(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
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
            Sink::Plain { len } => {
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
            Sink::Plain { .. } => Ok(()),
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
            Sink::Agent(agent) => agent.progress,
        }
    }

    /// What the agent reported so far (empty in plain mode).
    pub fn report(&self) -> AgentReport {
        match self {
            Sink::Plain { .. } => AgentReport::default(),
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
                Event::Exit(code) => self.report.exit = Some(code),
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

/// Reads a whole output file as text (invalid UTF-8 replaced).
pub fn read_text(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f
            .seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut bytes));
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
