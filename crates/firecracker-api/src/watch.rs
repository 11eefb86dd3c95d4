//! Waiting for a file to appear, or for a line to be written to it, without
//! a busy loop.
//!
//! The VMM signals API readiness by creating its socket, and a started guest
//! by a line in its log. We watch with inotify and wake on the change, so
//! waiting costs no CPU and the event is seen within microseconds.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{Inotify, WatchMask};

/// Why waiting for a file failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path has no parent directory or file name to watch.
    #[error("cannot watch {0}: it has no parent directory or no file name")]
    BadPath(PathBuf),
    /// inotify could not be set up.
    #[error("cannot watch {dir} for {name:?}: {source}")]
    Inotify {
        /// The watched directory.
        dir: PathBuf,
        /// The awaited file name.
        name: String,
        /// The inotify error.
        #[source]
        source: std::io::Error,
    },
}

/// Resolves once `path` exists. The caller bounds it with a deadline.
pub async fn until_exists(path: &Path) -> Result<(), WatchError> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return Err(WatchError::BadPath(path.to_path_buf())),
    };
    let fail = |source| WatchError::Inotify {
        dir: dir.to_path_buf(),
        name: name.to_string_lossy().into_owned(),
        source,
    };
    let inotify = Inotify::init().map_err(fail)?;
    inotify
        .watches()
        .add(dir, WatchMask::CREATE | WatchMask::MOVED_TO)
        .map_err(fail)?;
    // Checked after the watch is armed, so a creation in between is not missed.
    if path.exists() {
        return Ok(());
    }
    let mut events = inotify.into_event_stream([0u8; 1024]).map_err(fail)?;
    while let Some(event) = events.next().await {
        let event = event.map_err(fail)?;
        if event.name.as_deref() == Some(OsStr::new(name)) || path.exists() {
            return Ok(());
        }
    }
    Ok(())
}

/// Resolves once `path` (which must exist) holds `needle`, reading only what
/// is appended after each change. The caller bounds it with a deadline.
pub async fn until_contains(path: &Path, needle: &[u8]) -> Result<(), WatchError> {
    use std::io::Read;
    let fail = |source| WatchError::Inotify {
        dir: path.to_path_buf(),
        name: String::from_utf8_lossy(needle).into_owned(),
        source,
    };
    let inotify = Inotify::init().map_err(fail)?;
    inotify
        .watches()
        .add(path, WatchMask::MODIFY)
        .map_err(fail)?;
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut events = inotify.into_event_stream([0u8; 256]).map_err(fail)?;
    // The text read so far, less what cannot be the start of a match any more.
    let mut window: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        loop {
            let n = file.read(&mut chunk).map_err(fail)?;
            if n == 0 {
                break;
            }
            window.extend_from_slice(&chunk[..n]);
            if window.windows(needle.len()).any(|w| w == needle) {
                return Ok(());
            }
            let keep = needle.len().saturating_sub(1).min(window.len());
            window.drain(..window.len() - keep);
        }
        match events.next().await {
            Some(event) => {
                event.map_err(fail)?;
            }
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sees_a_file_created_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later");
        let p2 = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::fs::write(p2, b"x").unwrap();
        });
        tokio::time::timeout(Duration::from_secs(5), until_exists(&path))
            .await
            .expect("in time")
            .unwrap();
    }

    #[tokio::test]
    async fn an_existing_file_resolves_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now");
        std::fs::write(&path, b"x").unwrap();
        until_exists(&path).await.unwrap();
    }

    #[tokio::test]
    async fn sees_a_line_written_later_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"start\nSucc").unwrap();
        let p2 = path.clone();
        tokio::spawn(async move {
            use std::io::Write;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut f = std::fs::OpenOptions::new().append(true).open(p2).unwrap();
            f.write_all(b"essfully started\n").unwrap();
        });
        tokio::time::timeout(
            Duration::from_secs(5),
            until_contains(&path, b"Successfully started"),
        )
        .await
        .expect("in time")
        .unwrap();
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error() {
        let err = until_exists(Path::new("/nonexistent-dir/x"))
            .await
            .unwrap_err();
        assert!(matches!(err, WatchError::Inotify { .. }), "{err}");
    }
}
