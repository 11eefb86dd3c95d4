//! Writing to the terminal: the guest's output streams, JSON, and tables.
//!
//! Output chunks go to fcexec's own stdout and stderr as raw bytes, flushed
//! at once so that a slow job shows its progress. A reader that goes away
//! (`fcexec run | head -1`) only stops the copying of that stream; the
//! execution and the exit code are not affected.

use std::io::{self, Write};

use fcexec::{LogChunk, LogStream};
use serde::Serialize;

/// The process's stdout and stderr, as destinations of guest output.
#[derive(Debug, Default)]
pub struct Terminal {
    /// The reader of stdout went away: drop further stdout output.
    stdout_closed: bool,
    /// The reader of stderr went away: drop further stderr output.
    stderr_closed: bool,
}

impl Terminal {
    /// Writes a chunk to the stream it came from.
    pub fn write(&mut self, chunk: &LogChunk) -> io::Result<()> {
        let closed = match chunk.stream {
            LogStream::Stdout | LogStream::Console => &mut self.stdout_closed,
            LogStream::Stderr => &mut self.stderr_closed,
        };
        if *closed {
            return Ok(());
        }
        let result = match chunk.stream {
            LogStream::Stdout | LogStream::Console => {
                write_all(&mut io::stdout().lock(), &chunk.data)
            }
            LogStream::Stderr => write_all(&mut io::stderr().lock(), &chunk.data),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                *closed = true;
                Ok(())
            }
            other => other,
        }
    }
}

fn write_all(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

/// An error and its causes as `{:#}` shows them (`outer: inner: root`), but
/// without a cause whose text the message already holds (errors that print
/// their source in their own message would otherwise show it twice).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Formats rows as columns separated by three spaces, each as wide as its
/// widest cell (the last one unpadded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push('\n');
    }
    out
}

/// How long ago `then_ms` was, as `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec![
                "a-long-id".to_string(),
                "running".to_string(),
                "-".to_string(),
            ],
            vec!["b".to_string(), "success".to_string(), "0".to_string()],
        ];
        assert_eq!(
            table(&["ID", "STATUS", "EXIT"], &rows),
            "ID          STATUS    EXIT\n\
             a-long-id   running   -\n\
             b           success   0\n"
        );
    }

    #[test]
    fn error_chains_skip_repeated_causes() {
        let inner = std::io::Error::other("disk full");
        let e = anyhow::Error::new(inner)
            .context("cannot write x: disk full")
            .context("run");
        assert_eq!(error_chain(&e), "run: cannot write x: disk full");
        let e = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(error_chain(&e), format!("{e:#}"));
    }

    #[test]
    fn ages() {
        assert_eq!(ago(10_000, 9_000), "1s ago");
        assert_eq!(ago(0, 5), "0s ago");
        assert_eq!(ago(125_000, 0), "2m ago");
        assert_eq!(ago(7_200_000, 0), "2h ago");
        assert_eq!(ago(3 * 86_400_000, 0), "3d ago");
    }
}
