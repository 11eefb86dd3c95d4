//! Waiting for a file to appear, to change, or to hold a line, without a
//! busy loop.
//!
//! The VMM signals API readiness by creating its socket, a started guest by a
//! line in its log, and new guest output by a write to its serial file. All
//! of it goes through one inotify instance per process ([`Watcher::global`]):
//! Linux allows a user only 128 instances by default, fewer than the VMs one
//! executor runs, while it allows hundreds of thousands of watches. A
//! dedicated thread reads the events and wakes each [`Subscription`] of the
//! watched file, so waiting costs no CPU and is independent of any async
//! runtime. The thread reads at most once per [`COALESCE`], so a VMM writing
//! its serial output byte by byte wakes us a bounded number of times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub use inotify::WatchMask;
use inotify::{Inotify, WatchDescriptor, Watches};
use tokio::sync::Notify;

/// Why watching a file failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path has no parent directory or file name to watch.
    #[error("cannot watch {0}: it has no parent directory or no file name")]
    BadPath(PathBuf),
    /// inotify could not be set up, or the file could not be read.
    #[error("cannot watch {path}: {source}")]
    Inotify {
        /// The watched path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// How long the reader lets events gather after each batch: the most a
/// change waits to be seen, and what bounds the wakeups per second. (Measured
/// here: 4 ms instead of 1 ms took the executor's CPU per execution from
/// about 2.6 ms to 1.4 ms; each wakeup is a context switch, dear in a VM.)
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(4);

/// Subscribers per watch descriptor.
type Subscribers = HashMap<WatchDescriptor, Vec<Weak<Notify>>>;

/// The process's inotify instance and who listens to which watch.
#[derive(Debug)]
pub struct Watcher {
    /// Adds and removes watches.
    watches: Mutex<Watches>,
    /// Who to wake for each watch.
    subscribers: Arc<Mutex<Subscribers>>,
}

/// A watch on one path. Dropping it removes the watch once no one else uses it.
#[derive(Debug)]
pub struct Subscription {
    notify: Arc<Notify>,
    wd: WatchDescriptor,
    watcher: &'static Watcher,
}

impl Watcher {
    /// The process-wide watcher, started on first use.
    pub fn global() -> Result<&'static Watcher, WatchError> {
        static GLOBAL: OnceLock<Result<Watcher, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Watcher::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| WatchError::Inotify {
                path: PathBuf::from("inotify"),
                source: std::io::Error::other(e.clone()),
            })
    }

    fn start() -> std::io::Result<Watcher> {
        let mut inotify = Inotify::init()?;
        let watches = inotify.watches();
        let subscribers: Arc<Mutex<Subscribers>> = Arc::default();
        let subs = subscribers.clone();
        std::thread::Builder::new()
            .name("fc-inotify".into())
            .spawn(move || {
                let mut buffer = [0u8; 4096];
                loop {
                    let events = match inotify.read_events_blocking(&mut buffer) {
                        Ok(events) => events,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "inotify reader stopped");
                            return;
                        }
                    };
                    {
                        let subs = subs.lock().unwrap_or_else(|e| e.into_inner());
                        for event in events {
                            for notify in subs.get(&event.wd).into_iter().flatten() {
                                if let Some(notify) = notify.upgrade() {
                                    notify.notify_one();
                                }
                            }
                        }
                    }
                    // Let events gather: the VMM writes serial output a byte
                    // at a time, and waking on each write would cost far more
                    // CPU (in context switches) than the output is worth.
                    std::thread::sleep(COALESCE);
                }
            })?;
        Ok(Watcher {
            watches: Mutex::new(watches),
            subscribers,
        })
    }

    /// Watches `path` for `mask` events.
    pub fn subscribe(
        &'static self,
        path: &Path,
        mask: WatchMask,
    ) -> Result<Subscription, WatchError> {
        let notify = Arc::new(Notify::new());
        // Held across the add, so a concurrent drop of the last subscription
        // of the same watch cannot remove it in between.
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let wd = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(path, mask | WatchMask::MASK_ADD)
            .map_err(|source| WatchError::Inotify {
                path: path.to_path_buf(),
                source,
            })?;
        subs.entry(wd.clone())
            .or_default()
            .push(Arc::downgrade(&notify));
        drop(subs);
        Ok(Subscription {
            notify,
            wd,
            watcher: self,
        })
    }
}

impl Subscription {
    /// Resolves after the next event on the path (or at once if one came
    /// since the last call). Cancel-safe.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self
            .watcher
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now_empty = match subs.get_mut(&self.wd) {
            Some(list) => {
                list.retain(|w| {
                    w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.notify))
                });
                list.is_empty()
            }
            None => false,
        };
        if now_empty {
            subs.remove(&self.wd);
            // The watch may be gone already (its file was deleted).
            let _ = self
                .watcher
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.wd.clone());
        }
    }
}

/// Resolves once `path` exists. The caller bounds it with a deadline.
pub async fn until_exists(path: &Path) -> Result<(), WatchError> {
    let Some(dir) = path.parent().filter(|_| path.file_name().is_some()) else {
        return Err(WatchError::BadPath(path.to_path_buf()));
    };
    let sub = Watcher::global()?.subscribe(dir, WatchMask::CREATE | WatchMask::MOVED_TO)?;
    // Checked after the watch is armed, so a creation in between is not missed.
    while !path.exists() {
        sub.changed().await;
    }
    Ok(())
}

/// Resolves once `path` (which must exist) holds `needle`, reading only what
/// is appended after each change. The caller bounds it with a deadline.
pub async fn until_contains(path: &Path, needle: &[u8]) -> Result<(), WatchError> {
    use std::io::Read;
    let fail = |source| WatchError::Inotify {
        path: path.to_path_buf(),
        source,
    };
    let sub = Watcher::global()?.subscribe(path, WatchMask::MODIFY)?;
    let mut file = std::fs::File::open(path).map_err(fail)?;
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
        sub.changed().await;
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
    async fn two_subscriptions_of_one_file_both_wake_and_unwatch_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let watcher = Watcher::global().unwrap();
        let a = watcher.subscribe(&path, WatchMask::MODIFY).unwrap();
        let b = watcher.subscribe(&path, WatchMask::MODIFY).unwrap();
        std::fs::write(&path, b"x").unwrap();
        for sub in [&a, &b] {
            tokio::time::timeout(Duration::from_secs(5), sub.changed())
                .await
                .unwrap();
        }
        drop(a);
        std::fs::write(&path, b"y").unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.changed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn more_subscriptions_than_inotify_instances() {
        let dir = tempfile::tempdir().unwrap();
        let subs: Vec<Subscription> = (0..300)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                std::fs::write(&path, b"").unwrap();
                Watcher::global()
                    .unwrap()
                    .subscribe(&path, WatchMask::MODIFY)
                    .unwrap()
            })
            .collect();
        assert_eq!(subs.len(), 300);
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error() {
        let err = until_exists(Path::new("/nonexistent-dir/x"))
            .await
            .unwrap_err();
        assert!(matches!(err, WatchError::Inotify { .. }), "{err}");
    }
}
