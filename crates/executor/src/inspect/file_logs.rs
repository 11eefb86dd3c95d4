//! Reading an execution's output without owning its executor: the files,
//! or in agent mode before the end, the serial console decoded in memory
//! (see the parent module's docs).

use super::*;
use crate::logs::{read_at, Cursor};

/// An agent-mode `serial.log` being decoded in memory.
#[derive(Debug)]
struct SerialReader {
    path: PathBuf,
    /// Serial bytes decoded so far.
    offset: u64,
    decoder: FrameDecoder,
    /// Bytes of (stdout, stderr) decoded so far.
    decoded: [u64; 2],
}

/// Where output is read from.
#[derive(Debug)]
enum Reader {
    /// Output files (stdout and stderr, or the console).
    Files(Vec<Cursor>),
    /// The serial console, decoded; the files are not complete yet.
    Serial(SerialReader),
}

/// An execution's output, read without owning its executor (see the module
/// doc): from its files, or decoded from its serial console.
#[derive(Debug)]
pub struct FileLogs {
    executor_dir: PathBuf,
    /// Where the owner's lock is (the runtime directory).
    lock_dir: PathBuf,
    id: String,
    reader: Reader,
    /// Output read but not returned yet.
    pending: VecDeque<LogChunk>,
    follow: bool,
    /// True when the caller owns the executor (see [`FileLogs::owned`]).
    owned: bool,
    /// Set once the record was seen terminal or the lock free: one last read,
    /// then the end.
    last_pass: bool,
}

/// Opens the output of execution `id` under `executor_dir`.
pub fn logs(executor_dir: &Path, id: &str, options: LogOptions) -> Result<FileLogs, InspectError> {
    let record = record(executor_dir, id)?;
    let dir = executor_dir.join(id);
    let key = match record.key.as_deref().map(str::parse::<Key>) {
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            tracing::warn!(%id, error = %e, "the record's key is unusable; reading the output files");
            None
        }
        None => None,
    };
    let mut logs = FileLogs {
        lock_dir: executor_dir.to_path_buf(),
        executor_dir: executor_dir.to_path_buf(),
        id: id.to_string(),
        reader: Reader::Files(file_cursors(&dir, record.mode, [0, 0])),
        pending: VecDeque::new(),
        follow: options.follow,
        owned: false,
        last_pass: false,
    };
    // Protocol 2 output is written to the files as it arrives.
    let serial_frames = record.transport == crate::spec::Transport::Serial;
    match (record.mode, key) {
        (Mode::Agent, Some(key)) if serial_frames && !record.phase.is_terminal() => {
            logs.reader = Reader::Serial(SerialReader {
                path: dir.join("serial.log"),
                offset: 0,
                decoder: FrameDecoder::new(key),
                decoded: [0, 0],
            });
            if let Some(lines) = options.tail {
                logs.decode_tail(lines)
                    .map_err(|source| InspectError::Corrupt {
                        id: id.to_string(),
                        reason: format!(
                            "its serial output {} cannot be read: {source}",
                            dir.join("serial.log").display()
                        ),
                    })?;
            }
        }
        _ => {
            if let (Some(lines), Reader::Files(cursors)) = (options.tail, &mut logs.reader) {
                for cursor in cursors {
                    cursor.offset = tail_offset(&cursor.path, file_len(&cursor.path), lines);
                }
            }
        }
    }
    Ok(logs)
}

/// Opens the console log of execution `id` under `executor_dir`: what
/// the guest's serial console printed when its agent reports over vsock
/// (kernel messages, boot noise), as one [`LogStream::Console`] stream.
/// Executions whose serial console is their output have none.
pub fn console_logs(
    executor_dir: &Path,
    id: &str,
    options: LogOptions,
) -> Result<FileLogs, InspectError> {
    record(executor_dir, id)?;
    let mut cursor = Cursor {
        stream: LogStream::Console,
        path: executor_dir.join(id).join("console.log"),
        offset: 0,
    };
    if let Some(lines) = options.tail {
        cursor.offset = tail_offset(&cursor.path, file_len(&cursor.path), lines);
    }
    Ok(FileLogs {
        lock_dir: executor_dir.to_path_buf(),
        executor_dir: executor_dir.to_path_buf(),
        id: id.to_string(),
        reader: Reader::Files(vec![cursor]),
        pending: VecDeque::new(),
        follow: options.follow,
        owned: false,
        last_pass: false,
    })
}

/// The cursors of an execution's output files, at `offsets`.
fn file_cursors(dir: &Path, mode: Mode, offsets: [u64; 2]) -> Vec<Cursor> {
    let stdout = match mode {
        Mode::Plain => dir.join("serial.log"),
        Mode::Agent => dir.join("stdout"),
    };
    vec![
        Cursor {
            stream: LogStream::Stdout,
            path: stdout,
            offset: offsets[0],
        },
        Cursor {
            stream: LogStream::Stderr,
            path: dir.join("stderr"),
            offset: offsets[1],
        },
    ]
}

impl FileLogs {
    /// The next chunk of output, or `None` at the end: at once when not
    /// following, else once the execution ended (or nobody supervises it).
    pub async fn next(&mut self) -> Option<std::io::Result<LogChunk>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            match self.read() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
            if !self.follow || self.last_pass {
                return None;
            }
            let terminal = record(&self.executor_dir, &self.id)
                .map(|r| r.phase.is_terminal())
                // A removed execution writes no more output.
                .unwrap_or(true);
            if terminal {
                // The supervisor wrote the files in full before the record
                // said so: go on there, from where decoding stopped.
                if let Reader::Serial(serial) = &self.reader {
                    let dir = self.executor_dir.join(&self.id);
                    self.reader = Reader::Files(file_cursors(&dir, Mode::Agent, serial.decoded));
                }
                self.last_pass = true;
                continue;
            }
            if !self.owned && lock_holder(&self.lock_dir).is_none() {
                self.last_pass = true;
                continue;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Looks for the owner's lock in `runtime_dir` (`<runtime root>/<executor
    /// id>`), when it is not the directory the output is read from.
    pub fn locked_in(mut self, runtime_dir: &Path) -> FileLogs {
        self.lock_dir = runtime_dir.to_path_buf();
        self
    }

    /// For a caller that owns the executor, whose supervisor settles the
    /// execution: following goes on until the record is terminal, without
    /// looking for the lock's holder.
    pub fn owned(mut self) -> FileLogs {
        self.owned = true;
        self
    }

    /// Where in each stream (stdout, stderr) the output [`FileLogs::next`]
    /// returns next starts, counted from the stream's start (which is the
    /// start of its file, once written). Right after [`logs`], what `tail`
    /// cut off. A console reader's offset comes first.
    pub fn offsets(&self) -> (u64, u64) {
        let mut at = match &self.reader {
            Reader::Files(cursors) => {
                let mut at = [0, 0];
                for cursor in cursors {
                    at[stream_index(cursor.stream)] = cursor.offset;
                }
                at
            }
            Reader::Serial(serial) => serial.decoded,
        };
        for chunk in &self.pending {
            at[stream_index(chunk.stream)] -= chunk.data.len() as u64;
        }
        (at[0], at[1])
    }

    /// Reads what is new into `pending`: one chunk of a file, or one step
    /// of the serial output. False when there was nothing new.
    fn read(&mut self) -> std::io::Result<bool> {
        match &mut self.reader {
            Reader::Files(cursors) => {
                for cursor in cursors {
                    if let Some(chunk) = read_new(cursor)? {
                        self.pending.push_back(chunk);
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Reader::Serial(serial) => {
                let Some(events) = serial.step()? else {
                    return Ok(false);
                };
                for event in events {
                    let (stream, data) = match event {
                        Event::Stdout(data) => (LogStream::Stdout, data),
                        Event::Stderr(data) => (LogStream::Stderr, data),
                        Event::ProtocolError(error) => {
                            tracing::debug!(%error, "guest protocol error");
                            continue;
                        }
                        _ => continue,
                    };
                    serial.decoded[stream_index(stream)] += data.len() as u64;
                    match self.pending.back_mut() {
                        Some(last) if last.stream == stream => last.data.extend(data),
                        _ => self.pending.push_back(LogChunk { stream, data }),
                    }
                }
                Ok(true)
            }
        }
    }

    /// Decodes the serial output to its current end and keeps only the last
    /// `lines` lines of each stream, to be returned first.
    fn decode_tail(&mut self, lines: usize) -> std::io::Result<()> {
        let mut kept: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        while self.read()? {
            for chunk in self.pending.drain(..) {
                let buf = &mut kept[stream_index(chunk.stream)];
                buf.extend(chunk.data);
                if buf.len() > TAIL_TRIM {
                    buf.drain(..tail_start(buf, lines));
                }
            }
        }
        for (i, mut buf) in kept.into_iter().enumerate() {
            buf.drain(..tail_start(&buf, lines));
            if !buf.is_empty() {
                let stream = [LogStream::Stdout, LogStream::Stderr][i];
                self.pending.push_back(LogChunk { stream, data: buf });
            }
        }
        Ok(())
    }
}

impl SerialReader {
    /// Decodes up to [`CHUNK`] new serial bytes; `None` when there are none.
    fn step(&mut self) -> std::io::Result<Option<Vec<Event>>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            // The VMM has not written anything yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.take(CHUNK).read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        self.offset += bytes.len() as u64;
        Ok(Some(self.decoder.push(&bytes)))
    }
}

/// Index of a stream in [`FileLogs::offsets`] (a console reader has no
/// other stream, so it takes the first place).
fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout | LogStream::Console => 0,
        LogStream::Stderr => 1,
    }
}

/// Where the last `lines` lines of `data` start (a final newline ends the
/// last line; it does not start a new one), as [`tail_offset`] counts.
pub(super) fn tail_start(data: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return data.len();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    body.iter()
        .enumerate()
        .rev()
        .filter(|(_, &b)| b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1)
}

/// Reads up to [`CHUNK`] new bytes of a cursor's file; `None` when there are none.
fn read_new(cursor: &mut Cursor) -> std::io::Result<Option<LogChunk>> {
    let end = file_len(&cursor.path);
    if cursor.offset >= end {
        return Ok(None);
    }
    let data = read_at(&cursor.path, cursor.offset, end)?;
    if data.is_empty() {
        return Ok(None);
    }
    cursor.offset += data.len() as u64;
    Ok(Some(LogChunk {
        stream: cursor.stream,
        data,
    }))
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
