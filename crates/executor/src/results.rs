//! What an execution leaves in its `results_dir` when it ends: each output
//! volume's image (as `<execution id>-<index>-<target name>`, see
//! [`crate::launch::output_name`]), and the workload's `stdout.log` and
//! `stderr.log` (as the reference node's other executors write them).
//!
//! The executor runs as root and `results_dir` may be writable by other
//! users, so every file is written the same guarded way:
//!
//! - `results_dir` is opened once, with `O_DIRECTORY | O_NOFOLLOW`: if it is
//!   a symbolic link the write is refused. (Symbolic links in its parent
//!   components are followed: whoever gives the path owns them.)
//! - Each file is created under a fresh temporary name in that directory
//!   (`openat` with `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing already there
//!   is ever opened), with mode [`RESULT_FILE_MODE`] whatever the source's
//!   mode or the umask, filled, flushed with `fsync`, then renamed over its
//!   final name with `renameat`. A symbolic link (or hard link) planted at
//!   the final name is replaced, never followed: its target keeps its
//!   contents and mode. Readers never see a partly written file.
//! - Holes are kept: only the source's data segments (`SEEK_DATA` /
//!   `SEEK_HOLE`) are copied, and the copy is then given the source's
//!   length, so a mostly empty 1 GiB image copies in milliseconds and stays
//!   sparse.
//!
//! A failed copy leaves no temporary file behind (short of a crash, which
//! may leave a `.fcexec-*.tmp` file). Output copies run on the blocking pool;
//! a failure is returned, and the supervisor reports it in `error_msg`.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{lseek, unlinkat, UnlinkatFlags, Whence};

use crate::execution::Execution;
use crate::record::{ExecutionRecord, OutputCopy};

/// The mode of every file fcexec writes under `results_dir`: read and write
/// for the owner (the executor's user), read for the group, nothing for
/// others. The group is the executor's, or `results_dir`'s when that
/// directory has the set-group-ID bit: that is how a node running as another
/// user is given read access.
pub const RESULT_FILE_MODE: u32 = 0o640;

/// How much of a data segment is read and written at a time.
const COPY_CHUNK: usize = 1 << 20;

/// How many temporary names are tried before giving up (each is 64 random
/// bits, so only a directory someone fills on purpose takes a second try).
const TEMP_ATTEMPTS: usize = 16;

/// Copies each output image under `results_dir`. Every output is tried; the
/// error names each copy that failed.
pub async fn copy_outputs(record: &ExecutionRecord) -> Result<(), String> {
    let Some(dir) = record.results_dir.clone() else {
        return Ok(());
    };
    if record.outputs.is_empty() {
        return Ok(());
    }
    let outputs = record.outputs.clone();
    let path = PathBuf::from(&dir);
    tokio::task::spawn_blocking(move || copy_all(&path, &outputs))
        .await
        .map_err(|e| format!("the copy of the outputs to results_dir {dir} failed: {e}"))?
}

/// Copies `outputs` under `dir`, blocking.
fn copy_all(dir: &Path, outputs: &[OutputCopy]) -> Result<(), String> {
    let results = ResultsDir::open(dir)?;
    let mut errors = Vec::new();
    for output in outputs {
        if let Err(e) = copy_output(&results, output) {
            errors.push(format!(
                "cannot copy output {} to {}: {e}",
                output.image, output.destination
            ));
        }
    }
    if let Err(e) = results.sync() {
        errors.push(format!("cannot flush results_dir {}: {e}", dir.display()));
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

/// Copies one output image to its destination, which must be a name directly
/// under `results_dir`.
fn copy_output(results: &ResultsDir, output: &OutputCopy) -> io::Result<()> {
    let destination = Path::new(&output.destination);
    let name = destination
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|_| destination.parent() == Some(results.path.as_path()))
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidInput,
                "the destination is not a file directly under results_dir",
            )
        })?;
    let source = open_image(Path::new(&output.image))?;
    results.write_file(name, |to| copy_sparse(&source, to))
}

/// Opens an output image for reading: a regular file or a block device (the
/// kinds a request may give), anything else is refused. `O_NONBLOCK` keeps a
/// pipe swapped in for the image from blocking the open.
fn open_image(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    match kind.is_file() || kind.is_block_device() {
        true => Ok(file),
        false => Err(io::Error::new(
            ErrorKind::InvalidInput,
            "the image is not a regular file or a block device",
        )),
    }
}

/// Writes the workload's output as `stdout.log` and `stderr.log` under
/// `results_dir`, when the request gave one. Blocking. Failures are logged:
/// the output stays available through `logs`.
pub fn write_logs(exec: &Execution, record: &ExecutionRecord) {
    let Some(dir) = &record.results_dir else {
        return;
    };
    let mut logs = vec![
        (exec.stdout_path(), "stdout.log"),
        (exec.stderr_path(), "stderr.log"),
    ];
    // Protocol 2: the serial console is a diagnostic log of its own.
    if exec.paths.console().exists() {
        logs.push((exec.paths.console(), "console.log"));
    }
    if let Err(e) = write_log_files(Path::new(dir), &logs) {
        tracing::warn!(dir = %dir, error = %e, "cannot write the logs to results_dir");
    }
}

/// Copies each `(log, name)` to `name` under `dir`; a missing log is written
/// empty. Every log is tried; the error names each that failed.
fn write_log_files(dir: &Path, logs: &[(PathBuf, &str)]) -> Result<(), String> {
    let results = ResultsDir::open(dir)?;
    let mut errors = Vec::new();
    for (from, name) in logs {
        let written = results.write_file(name, |to| match File::open(from) {
            Ok(log) => copy_sparse(&log, to),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        });
        if let Err(e) = written {
            errors.push(format!("cannot write {name}: {e}"));
        }
    }
    if let Err(e) = results.sync() {
        errors.push(format!("cannot flush results_dir {}: {e}", dir.display()));
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

/// `results_dir`, opened without following a symbolic link at its end.
struct ResultsDir {
    path: PathBuf,
    dir: File,
}

impl ResultsDir {
    /// Creates `path` if it is missing and opens it; refuses a symbolic link.
    fn open(path: &Path) -> Result<ResultsDir, String> {
        let refused = || {
            format!(
                "results_dir {} is a symbolic link; refusing to write through it",
                path.display()
            )
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(refused()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => std::fs::create_dir_all(path)
                .map_err(|e| format!("cannot create results_dir {}: {e}", path.display()))?,
            Err(e) => {
                return Err(format!(
                    "cannot inspect results_dir {}: {e}",
                    path.display()
                ))
            }
        }
        // O_NOFOLLOW also catches a link swapped in since the check above.
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => refused(),
                _ => format!("cannot open results_dir {}: {e}", path.display()),
            })?;
        Ok(ResultsDir {
            path: path.to_path_buf(),
            dir,
        })
    }

    /// Writes `name` through a new temporary file that `fill` writes, then
    /// flushes and renames into place (replacing whatever `name` was, a
    /// symbolic link included, without following it).
    fn write_file(&self, name: &str, fill: impl FnOnce(&File) -> io::Result<()>) -> io::Result<()> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("{name:?} is not a file name"),
            ));
        }
        let (temp, file) = self.create_temp()?;
        let dirfd = self.dir.as_raw_fd();
        let written = fill(&file).and_then(|()| file.sync_all()).and_then(|()| {
            renameat(Some(dirfd), temp.as_str(), Some(dirfd), name).map_err(io::Error::from)
        });
        if written.is_err() {
            if let Err(e) = unlinkat(Some(dirfd), temp.as_str(), UnlinkatFlags::NoRemoveDir) {
                tracing::warn!(file = %temp, error = %e, "cannot remove a temporary file in results_dir");
            }
        }
        written
    }

    /// Creates a new file under a random temporary name, mode
    /// [`RESULT_FILE_MODE`].
    fn create_temp(&self) -> io::Result<(String, File)> {
        self.create_temp_named(|| {
            let mut random = [0u8; 8];
            getrandom::getrandom(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
            Ok(format!(".fcexec-{:016x}.tmp", u64::from_ne_bytes(random)))
        })
    }

    /// Creates a new file under the first name from `next_name` that is
    /// free (nothing there, not even a symbolic link), mode
    /// [`RESULT_FILE_MODE`].
    fn create_temp_named(
        &self,
        mut next_name: impl FnMut() -> io::Result<String>,
    ) -> io::Result<(String, File)> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::from_bits_truncate(RESULT_FILE_MODE);
        for _ in 0..TEMP_ATTEMPTS {
            let temp = next_name()?;
            match openat(Some(self.dir.as_raw_fd()), temp.as_str(), flags, mode) {
                Ok(fd) => {
                    // SAFETY: openat just returned this descriptor; nothing
                    // else owns or closes it.
                    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                    // The umask may have taken bits away: the mode is ours.
                    file.set_permissions(Permissions::from_mode(RESULT_FILE_MODE))?;
                    return Ok((temp, file));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            ErrorKind::AlreadyExists,
            "no free temporary name in results_dir",
        ))
    }

    /// Flushes the directory, so the renames survive a crash.
    fn sync(&self) -> io::Result<()> {
        self.dir.sync_all()
    }
}

/// Copies `from` into the empty file `to`, keeping holes: only `from`'s data
/// segments are copied, then `to` gets `from`'s length. Works for block
/// devices too (their whole size is one data segment).
pub(crate) fn copy_sparse(from: &File, to: &File) -> io::Result<()> {
    let len = lseek(from.as_raw_fd(), 0, Whence::SeekEnd)?;
    let mut buf = Vec::new();
    let mut pos = 0;
    while let Some((start, end)) = next_data(from, pos, len)? {
        if buf.is_empty() {
            buf = vec![0u8; COPY_CHUNK];
        }
        copy_range(from, to, start, end, &mut buf)?;
        pos = end;
    }
    to.set_len(len as u64)
}

/// The next data segment of `file` at or after `pos`, cut at `len`; `None`
/// when only a hole is left. A file system without `SEEK_DATA` has no holes.
fn next_data(file: &File, pos: i64, len: i64) -> io::Result<Option<(i64, i64)>> {
    if pos >= len {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let start = match lseek(fd, pos, Whence::SeekData) {
        Ok(start) => start,
        // No data from `pos` on.
        Err(Errno::ENXIO) => return Ok(None),
        Err(Errno::EINVAL) => return Ok(Some((pos, len))),
        Err(e) => return Err(e.into()),
    };
    if start >= len {
        return Ok(None);
    }
    let end = match lseek(fd, start, Whence::SeekHole) {
        Ok(end) if end > start => end.min(len),
        Ok(_) | Err(Errno::ENXIO) | Err(Errno::EINVAL) => len,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, end)))
}

/// Copies bytes `start..end` of `from` to the same offsets of `to`.
fn copy_range(from: &File, to: &File, start: i64, end: i64, buf: &mut [u8]) -> io::Result<()> {
    let (mut at, end) = (start as u64, end as u64);
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let got = match from.read_at(&mut buf[..want], at) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the image shrank during the copy",
                ))
            }
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all_at(&buf[..got], at)?;
        at += got as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn output(image: &Path, dir: &Path, name: &str) -> OutputCopy {
        OutputCopy {
            image: image.display().to_string(),
            destination: dir.join(name).display().to_string(),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    /// The names under `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A file in `dir` holding `bytes`, with `mode`.
    fn file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = file(tmp.path(), "victim", b"precious", 0o644);
        let image = file(tmp.path(), "out.img", b"guest bytes", 0o666);
        let results = tmp.path().join("results");
        std::fs::create_dir(&results).unwrap();
        // Planted as another user would: the directory and the link are
        // nobody's (65534).
        std::os::unix::fs::chown(&results, Some(65534), Some(65534)).unwrap();
        let planted = results.join("e-0-out");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
        // Also one at the logs' names.
        std::os::unix::fs::symlink(&victim, results.join("stdout.log")).unwrap();

        copy_all(&results, &[output(&image, &results, "e-0-out")]).unwrap();
        let log = file(tmp.path(), "stdout", b"hello\n", 0o600);
        let missing = tmp.path().join("no-stderr");
        write_log_files(&results, &[(log, "stdout.log"), (missing, "stderr.log")]).unwrap();

        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&victim), 0o644);
        for (name, bytes) in [
            ("e-0-out", &b"guest bytes"[..]),
            ("stdout.log", b"hello\n"),
            ("stderr.log", b""),
        ] {
            let path = results.join(name);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_file(), "{name} is a regular file");
            assert_eq!(mode(&path), RESULT_FILE_MODE, "{name}'s mode is ours");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
        }
        assert_eq!(
            names(&results),
            ["e-0-out", "stderr.log", "stdout.log"],
            "no temporary file is left"
        );
    }

    #[test]
    fn a_sparse_image_stays_sparse_and_equal() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("sparse.img");
        let len = 256 * MIB;
        {
            let f = File::create(&image).unwrap();
            f.set_len(len).unwrap();
            // Data at the start, in the middle and across a chunk boundary;
            // the file ends in a hole.
            f.write_all_at(b"head", 0).unwrap();
            f.write_all_at(&vec![0xa5; 3 * MIB as usize], 100 * MIB - 7)
                .unwrap();
            f.write_all_at(b"middle", 200 * MIB).unwrap();
        }
        let results = tmp.path().join("results");
        let started = std::time::Instant::now();
        copy_all(&results, &[output(&image, &results, "e-0-sparse.img")]).unwrap();
        let took = started.elapsed();
        let copy = results.join("e-0-sparse.img");
        let (src, dst) = (
            std::fs::metadata(&image).unwrap(),
            std::fs::metadata(&copy).unwrap(),
        );
        assert_eq!(dst.len(), len);
        assert!(
            dst.blocks() <= src.blocks() + 64,
            "{} blocks for the source's {}",
            dst.blocks(),
            src.blocks()
        );
        assert!(dst.blocks() * 512 < 8 * MIB, "{} blocks", dst.blocks());
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
        let (mut a, mut b) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
        let (src, dst) = (File::open(&image).unwrap(), File::open(&copy).unwrap());
        for at in (0..len).step_by(MIB as usize) {
            src.read_exact_at(&mut a, at).unwrap();
            dst.read_exact_at(&mut b, at).unwrap();
            assert!(a == b, "the copy differs in the MiB at {at}");
        }
    }

    #[test]
    fn an_image_with_no_data_or_no_bytes_is_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let hole = tmp.path().join("hole.img");
        File::create(&hole).unwrap().set_len(64 * MIB).unwrap();
        let empty = file(tmp.path(), "empty.img", b"", 0o644);
        let results = tmp.path().join("results");
        copy_all(
            &results,
            &[
                output(&hole, &results, "e-0-hole"),
                output(&empty, &results, "e-1-empty"),
            ],
        )
        .unwrap();
        let meta = std::fs::metadata(results.join("e-0-hole")).unwrap();
        assert_eq!((meta.len(), meta.blocks()), (64 * MIB, 0));
        assert_eq!(
            std::fs::metadata(results.join("e-1-empty")).unwrap().len(),
            0
        );
    }

    #[tokio::test]
    async fn executions_sharing_a_results_dir_do_not_overwrite_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results");
        // Ids and indices chosen so that `<id>-<index>-<target>` alone would
        // run together: ("a", 0, "1-x") and ("a-0", 1, "x").
        let runs = [
            ("a", 0, "/mnt/1-x"),
            ("a-0", 1, "/mnt/x"),
            ("b", 0, "/mnt/1-x"),
        ];
        for (id, index, target) in runs {
            let image = file(tmp.path(), &format!("{id}.img"), id.as_bytes(), 0o644);
            let name = crate::launch::output_name(id, index, target, &image);
            let record: ExecutionRecord = serde_json::from_value(serde_json::json!({
                "version": crate::record::RECORD_VERSION,
                "job_id": "j", "execution_id": id, "phase": "running", "mode": "agent",
                "created_ms": 1, "results_dir": results.display().to_string(),
                "outputs": [output(&image, &results, &name)],
            }))
            .unwrap();
            copy_outputs(&record).await.unwrap();
        }
        assert_eq!(names(&results), ["a-0-1-x", "a-0-1_x", "b-0-1_x"]);
        for (name, bytes) in [("a-0-1_x", "a"), ("a-0-1-x", "a-0"), ("b-0-1_x", "b")] {
            assert_eq!(std::fs::read(results.join(name)).unwrap(), bytes.as_bytes());
        }
    }

    #[test]
    fn a_results_dir_that_is_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let image = file(tmp.path(), "out.img", b"x", 0o644);
        let results = tmp.path().join("results");
        std::os::unix::fs::symlink(&elsewhere, &results).unwrap();
        let err = copy_all(&results, &[output(&image, &results, "e-0-out")]).unwrap_err();
        assert!(err.contains("is a symbolic link"), "{err}");
        let log = file(tmp.path(), "stdout", b"x", 0o644);
        let err = write_log_files(&results, &[(log, "stdout.log")]).unwrap_err();
        assert!(err.contains("is a symbolic link"), "{err}");
        // A dangling one too, and nothing is created through it.
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
        let err = copy_all(&dangling, &[output(&image, &dangling, "e-0-out")]).unwrap_err();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(names(&elsewhere).is_empty());
        assert!(!tmp.path().join("nowhere").exists());
    }

    #[test]
    fn failed_copies_are_reported_and_the_others_still_made() {
        let tmp = tempfile::tempdir().unwrap();
        let image = file(tmp.path(), "out.img", b"ok", 0o644);
        let results = tmp.path().join("results");
        std::fs::create_dir(&results).unwrap();
        // A directory at a destination cannot be replaced by a file.
        std::fs::create_dir(results.join("e-1-dir")).unwrap();
        let outputs = [
            output(&tmp.path().join("missing.img"), &results, "e-0-missing"),
            output(&image, &results, "e-1-dir"),
            output(&image, tmp.path(), "e-2-outside"),
            output(&image, &results, "e-3-fine"),
        ];
        let err = copy_all(&results, &outputs).unwrap_err();
        assert!(
            err.contains("missing.img") && err.contains("No such file"),
            "{err}"
        );
        assert!(err.contains("e-1-dir"), "{err}");
        assert!(
            err.contains("not a file directly under results_dir"),
            "{err}"
        );
        assert!(!err.contains("e-3-fine"), "{err}");
        assert_eq!(std::fs::read(results.join("e-3-fine")).unwrap(), b"ok");
        assert_eq!(
            names(&results),
            ["e-1-dir", "e-3-fine"],
            "no temporary file is left"
        );
        assert!(!tmp.path().join("e-2-outside").exists());
        // A pipe given as the image is refused, not waited on.
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = copy_all(&results, &[output(&fifo, &results, "e-4-fifo")]).unwrap_err();
        assert!(
            err.contains("not a regular file or a block device"),
            "{err}"
        );
    }

    #[test]
    fn a_temporary_name_already_taken_is_skipped_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = file(tmp.path(), "victim", b"precious", 0o644);
        let dir = tmp.path().join("results");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".planted.tmp")).unwrap();
        let results = ResultsDir::open(&dir).unwrap();
        let mut names = [".planted.tmp", ".free.tmp"].into_iter().map(String::from);
        let (temp, mut f) = results
            .create_temp_named(|| Ok(names.next().unwrap_or_default()))
            .unwrap();
        assert_eq!(temp, ".free.tmp");
        f.write_all(b"mine").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&dir.join(".free.tmp")), RESULT_FILE_MODE);
        // Names that are not a single component are refused.
        for bad in ["", ".", "..", "a/b", "../victim"] {
            let err = results.write_file(bad, |_| Ok(())).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
