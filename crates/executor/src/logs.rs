//! Reading an execution's stored output: all of it, its last lines, and
//! following it as it grows, during the run and after it.
//!
//! Output lives in files (see [`crate::state_dir`]); the supervisor publishes
//! how many bytes of each stream are stored. A reader keeps an offset per
//! stream, reads up to the published length, and when it has caught up waits
//! for the next publication, or ends when the execution is done (or when it
//! was not asked to follow).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::execution::{Execution, LogProgress};

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The workload's stdout (the serial console in plain mode).
    Stdout,
    /// The workload's stderr.
    Stderr,
    /// The guest's console (serial), a diagnostic log, when the agent
    /// reports over vsock; see [`crate::inspect::console_logs`].
    Console,
}

/// What [`crate::Executor::logs`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the execution ends.
    pub follow: bool,
    /// Start with only the last this many lines of each stream.
    pub tail: Option<usize>,
}

/// A piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Its stream.
    pub stream: LogStream,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The largest chunk returned at once (here and by [`crate::inspect`]).
pub(crate) const CHUNK: u64 = 64 * 1024;

/// One output file being read: its stream, and how far.
#[derive(Debug)]
pub(crate) struct Cursor {
    pub stream: LogStream,
    pub path: PathBuf,
    pub offset: u64,
}

/// A stream of an execution's output. Holds its execution alive, not its VM.
/// Files are read on the blocking pool, never on the runtime's workers.
#[derive(Debug)]
pub struct Logs {
    execution: Arc<Execution>,
    cursors: [Cursor; 2],
    progress: watch::Receiver<LogProgress>,
    follow: bool,
    /// `tail`, until the first read places the cursors.
    tail: Option<usize>,
}

impl Logs {
    /// Opens the logs of an execution.
    pub fn open(execution: Arc<Execution>, options: LogOptions) -> Logs {
        let progress = execution.log_progress();
        let (out, err) = (execution.stdout_path(), execution.stderr_path());
        let cursors = [
            Cursor {
                stream: LogStream::Stdout,
                offset: 0,
                path: out,
            },
            Cursor {
                stream: LogStream::Stderr,
                offset: 0,
                path: err,
            },
        ];
        Logs {
            execution,
            cursors,
            progress,
            follow: options.follow,
            tail: options.tail,
        }
    }

    /// The next chunk of output, or `None` at the end.
    pub async fn next(&mut self) -> Option<std::io::Result<LogChunk>> {
        if let Some(lines) = self.tail.take() {
            self.place_at_tail(lines).await;
        }
        loop {
            let now = *self.progress.borrow_and_update();
            for cursor in &mut self.cursors {
                let end = match cursor.stream {
                    LogStream::Stdout => now.stdout,
                    LogStream::Stderr => now.stderr,
                    LogStream::Console => now.console,
                };
                if cursor.offset < end {
                    let (path, offset) = (cursor.path.clone(), cursor.offset);
                    let read = tokio::task::spawn_blocking(move || read_at(&path, offset, end));
                    let data = match read.await {
                        Ok(Ok(data)) => data,
                        Ok(Err(e)) => return Some(Err(e)),
                        Err(e) => return Some(Err(std::io::Error::other(e))),
                    };
                    // A file shorter than published was removed underneath us.
                    cursor.offset = if data.is_empty() {
                        end
                    } else {
                        offset + data.len() as u64
                    };
                    return Some(Ok(LogChunk {
                        stream: cursor.stream,
                        data,
                    }));
                }
            }
            if now.done || !self.follow {
                return None;
            }
            tokio::select! {
                changed = self.progress.changed() => if changed.is_err() {
                    return None;
                },
                // The executor let go of the execution (shutdown).
                _ = self.execution.released() => return None,
            }
        }
    }

    /// Places each cursor `lines` lines before its stream's current end.
    async fn place_at_tail(&mut self, lines: usize) {
        let now = *self.progress.borrow();
        let paths = [self.cursors[0].path.clone(), self.cursors[1].path.clone()];
        let offsets = tokio::task::spawn_blocking(move || {
            [
                tail_offset(&paths[0], now.stdout, lines),
                tail_offset(&paths[1], now.stderr, lines),
            ]
        })
        .await
        .unwrap_or([now.stdout, now.stderr]);
        for (cursor, offset) in self.cursors.iter_mut().zip(offsets) {
            cursor.offset = offset;
        }
    }

    /// Reads everything up to the end into one buffer per stream.
    pub async fn collect(mut self) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            match chunk.stream {
                LogStream::Stdout => out.extend(chunk.data),
                LogStream::Stderr => err.extend(chunk.data),
                LogStream::Console => {}
            }
        }
        Ok((out, err))
    }
}

/// Reads at most [`CHUNK`] bytes of `path` from `offset`, not past `end`.
pub(crate) fn read_at(path: &Path, offset: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let len = (end - offset).min(CHUNK);
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut data)?;
    Ok(data)
}

/// The offset where the last `lines` lines before `end` start.
pub fn tail_offset(path: &Path, end: u64, lines: usize) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return end;
    };
    if lines == 0 {
        return end;
    }
    let mut pos = end;
    let mut newlines = 0;
    let mut buf = vec![0u8; 8192];
    // A final newline ends the last line; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let n = (pos.min(buf.len() as u64)) as usize;
        pos -= n as u64;
        if file.seek(SeekFrom::Start(pos)).is_err() || file.read_exact(&mut buf[..n]).is_err() {
            return 0;
        }
        for i in (0..n).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 + 1 == end {
                    skip_last = false;
                    continue;
                }
                newlines += 1;
                if newlines == lines {
                    return pos + i as u64 + 1;
                }
            }
            skip_last = false;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"one\ntwo\nthree\n").unwrap();
        let end = 14;
        assert_eq!(tail_offset(&path, end, 1), 8);
        assert_eq!(tail_offset(&path, end, 2), 4);
        assert_eq!(tail_offset(&path, end, 3), 0);
        assert_eq!(tail_offset(&path, end, 10), 0);
        assert_eq!(tail_offset(&path, end, 0), end);
        std::fs::write(&path, b"one\ntwo").unwrap();
        assert_eq!(tail_offset(&path, 7, 1), 4);
        assert_eq!(tail_offset(&dir.path().join("none"), 0, 3), 0);
    }
}
