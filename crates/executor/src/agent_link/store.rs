//! The files protocol 2 output goes to: `stdout` and `stderr` in the
//! execution's data directory, appended to as frames arrive and never
//! rewritten, so a restarted executor resumes at their lengths and readers
//! (`logs`, also from another process) read them as they grow.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fcexec_guest_protocol::Stream;

use super::session::Output;

/// One stream's file, created on its first byte (most jobs write no stderr).
#[derive(Debug)]
struct StreamFile {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl StreamFile {
    fn open(path: &Path) -> std::io::Result<StreamFile> {
        let len = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(StreamFile {
            path: path.to_path_buf(),
            file: None,
            len,
        })
    }

    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }
}

/// stdout and stderr on disk, with the executor's output cap.
#[derive(Debug)]
pub struct OutputStore {
    streams: [StreamFile; 2],
    limit: u64,
}

impl OutputStore {
    /// Opens the streams at `stdout` and `stderr`, resuming at their
    /// lengths, taking in at most `limit` bytes of both together.
    pub fn open(stdout: &Path, stderr: &Path, limit: u64) -> std::io::Result<OutputStore> {
        Ok(OutputStore {
            streams: [StreamFile::open(stdout)?, StreamFile::open(stderr)?],
            limit,
        })
    }

    /// The cap.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Output for OutputStore {
    fn append(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<usize> {
        let total: u64 = self.streams.iter().map(|s| s.len).sum();
        let room = self.limit.saturating_sub(total);
        let take = (data.len() as u64).min(room) as usize;
        if take > 0 {
            self.streams[stream.index()].append(&data[..take])?;
        }
        Ok(take)
    }

    fn stored(&self) -> [u64; 2] {
        [self.streams[0].len, self.streams[1].len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_resumes_at_the_file_lengths_and_caps_both_streams_together() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut store = OutputStore::open(&out, &err, 10).unwrap();
        assert_eq!(store.stored(), [0, 0]);
        assert!(!err.exists(), "stderr is created on its first byte");
        assert_eq!(store.append(Stream::Stdout, b"hello").unwrap(), 5);
        assert_eq!(store.append(Stream::Stderr, b"abc").unwrap(), 3);
        drop(store);
        let mut store = OutputStore::open(&out, &err, 10).unwrap();
        assert_eq!(store.stored(), [5, 3]);
        assert_eq!(store.append(Stream::Stdout, b"world").unwrap(), 2);
        assert_eq!(store.append(Stream::Stdout, b"x").unwrap(), 0);
        assert_eq!(std::fs::read(&out).unwrap(), b"hellowo");
        assert_eq!(std::fs::read(&err).unwrap(), b"abc");
    }
}
