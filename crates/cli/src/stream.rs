//! Copying an execution's output to the terminal, from the executor (`run`,
//! which owns it) or read with [`fcexec::inspect::logs`] (`logs`, whether or
//! not it owns the executor: from the files, or decoded from the serial
//! console while no supervisor has written them).
//!
//! When a read-only follower finds that the owner went away before the
//! execution ended, `fcexec logs -f` opens the executor itself and goes on
//! where it stopped: it reads from the start again and drops the bytes it
//! already printed ([`Copier`] counts them per stream; a stream's positions
//! are the same whether read from its file or decoded from the console).

use fcexec::inspect::FileLogs;
use fcexec::{LogChunk, LogStream, Logs};

use crate::output::Terminal;

/// Where output comes from.
#[derive(Debug)]
pub enum Source {
    /// The executor's own log stream.
    Owner(Logs),
    /// The files (or the decoded serial console), read directly.
    Files(FileLogs),
}

impl Source {
    /// The next chunk, or `None` at the end.
    pub async fn next(&mut self) -> Option<std::io::Result<LogChunk>> {
        match self {
            Source::Owner(logs) => logs.next().await,
            Source::Files(logs) => logs.next().await,
        }
    }
}

/// Copies chunks to the terminal, skipping what was printed before.
#[derive(Debug, Default)]
pub struct Copier {
    /// Destination.
    terminal: Terminal,
    /// Per stream (stdout, stderr): stream offset up to which output was printed.
    printed: [u64; 2],
    /// Per stream: stream offset of the next byte the current source yields.
    position: [u64; 2],
}

impl Copier {
    /// A copier that has printed nothing.
    pub fn new() -> Copier {
        Copier::default()
    }

    /// Starts a new source whose streams begin at `start` (stdout, stderr);
    /// what lies before `start` counts as printed (a `--tail` cut it off).
    pub fn restart_at(&mut self, start: (u64, u64)) {
        self.position = [start.0, start.1];
        for (printed, start) in self.printed.iter_mut().zip(self.position) {
            *printed = (*printed).max(start);
        }
    }

    /// Copies everything `source` yields until its end.
    pub async fn copy(&mut self, source: &mut Source) -> anyhow::Result<()> {
        while let Some(chunk) = source.next().await {
            if let Some(fresh) = self.unprinted(chunk?) {
                self.terminal.write(&fresh)?;
            }
        }
        Ok(())
    }

    /// The part of `chunk` not printed yet (counted as printed from now on).
    fn unprinted(&mut self, mut chunk: LogChunk) -> Option<LogChunk> {
        let i = match chunk.stream {
            LogStream::Stdout | LogStream::Console => 0,
            LogStream::Stderr => 1,
        };
        let start = self.position[i];
        let end = start + chunk.data.len() as u64;
        self.position[i] = end;
        if end <= self.printed[i] {
            return None;
        }
        let skip = self.printed[i].saturating_sub(start) as usize;
        chunk.data.drain(..skip);
        self.printed[i] = end;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(data: &str) -> LogChunk {
        LogChunk {
            stream: LogStream::Stdout,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_new_source_from_the_start_prints_nothing_twice() {
        let mut c = Copier::new();
        c.restart_at((4, 0)); // --tail cut "old\n"
        assert_eq!(c.unprinted(out("new\n")), Some(out("new\n")));
        c.restart_at((0, 0));
        assert_eq!(c.unprinted(out("old\nne")), None);
        assert_eq!(c.unprinted(out("w\nmore")), Some(out("more")));
        let err = LogChunk {
            stream: LogStream::Stderr,
            data: b"e".to_vec(),
        };
        assert_eq!(c.unprinted(err.clone()), Some(err));
    }
}
