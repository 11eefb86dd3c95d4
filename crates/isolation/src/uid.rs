//! A uid (and the gid of the same number) per execution, leased from a
//! configured range so that no two VMMs ever share one.
//!
//! A lease is a file `<lock_dir>/<uid>.lease` holding `{"execution_id": ...}`.
//! It is created whole and atomically: the content goes to a temporary file,
//! which is then hard-linked to the lease's name; `link(2)` fails if the name
//! exists, so of two executor processes (or two pools in one process) racing
//! for a uid exactly one wins, and no reader ever sees a half-written lease.
//! Leases outlive the process that took them: after a restart the executor
//! [`UidPool::adopt`]s the uids of the VMMs it recovers and
//! [`UidPool::sweep`]s the rest. Keep the lock directory on a file system that
//! is emptied at boot (`/run`), as the VMMs are gone then too.
//!
//! The default range is [`DEFAULT_FIRST_UID`], [`DEFAULT_UID_COUNT`] long; see
//! there for why it sits where it does. [`UidPool::new`] refuses a range that
//! overlaps a user or group in `/etc/passwd` and `/etc/group`, or a
//! subordinate range in `/etc/subuid` and `/etc/subgid`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// First uid of the default range: 1879048192 (0x7000_0000).
///
/// Where ids live on a Linux host (systemd's UIDS-GIDS.md, shadow's
/// login.defs): 0–999 system, 1000–60000 regular users, 61184–65519 systemd's
/// dynamic users, 65534 nobody; `useradd` hands out *subordinate* ranges for
/// rootless containers from SUB_UID_MIN 100000 up to SUB_UID_MAX 600100000 in
/// blocks of 65536, and systemd-nspawn picks container ranges in
/// 524288–1879048191. A range starting at 900000 would sit inside both (it is
/// the subordinate block of the 13th user with a subuid entry), so a rootless
/// container's uid could equal a VMM's uid and signal it or open its files.
/// 0x7000_0000 is the first id of the block systemd leaves unused
/// (1879048192–2147352575), above every subordinate range `useradd` makes,
/// and below 2^31, so no tool that keeps uids in a signed int misreads it.
pub const DEFAULT_FIRST_UID: u32 = 0x7000_0000;

/// Length of the default range: 65536 concurrent executions, far more than a
/// host runs, and one conventional 16-bit block.
pub const DEFAULT_UID_COUNT: u32 = 65536;

/// Where leases live by default: under `/run`, emptied at boot.
pub const DEFAULT_LOCK_DIR: &str = "/run/fcexec/uids";

/// What a lease file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRecord {
    /// The execution that holds the uid.
    execution_id: String,
}

/// Why a uid could not be leased, adopted or released.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// The range itself is unusable.
    #[error("uid range of {count} from {first} is invalid: {reason}")]
    InvalidRange {
        /// First uid.
        first: u32,
        /// How many.
        count: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The range overlaps ids the host already uses.
    #[error(
        "uid range {first}..{end} overlaps `{name}` ({start}..{stop}) in {}: \
         configure a range no user, group or subordinate range uses, such as the default {DEFAULT_FIRST_UID}",
        file.display()
    )]
    RangeInUse {
        /// First uid of the pool.
        first: u32,
        /// One past its last uid.
        end: u64,
        /// The file with the clash.
        file: PathBuf,
        /// The user or group.
        name: String,
        /// Start of its ids.
        start: u64,
        /// One past their end.
        stop: u64,
    },
    /// A lease file or the lock directory could not be used.
    #[error("cannot use uid lease {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every uid is leased.
    #[error(
        "all {count} uids from {first} are leased: release the uids of finished executions \
         (UidPool::sweep) or configure a larger range"
    )]
    Exhausted {
        /// First uid.
        first: u32,
        /// How many.
        count: u32,
    },
    /// The execution holds a lease already.
    #[error("execution `{execution_id}` already holds uid {uid}: release it first or adopt it")]
    AlreadyLeased {
        /// The execution.
        execution_id: String,
        /// Its uid.
        uid: u32,
    },
    /// The uid belongs to another execution.
    #[error("uid {uid} is leased to execution `{holder}`, not `{wanted}`")]
    HeldByOther {
        /// The uid.
        uid: u32,
        /// Who holds it.
        holder: String,
        /// Who asked.
        wanted: String,
    },
    /// The uid is not in this pool's range.
    #[error("uid {uid} is outside the pool's range {first}..{end}")]
    OutOfRange {
        /// The uid.
        uid: u32,
        /// First uid of the pool.
        first: u32,
        /// One past its last.
        end: u64,
    },
    /// The execution id cannot be recorded.
    #[error("execution id `{0}` is empty or longer than 256 bytes")]
    InvalidId(String),
}

/// A uid held by one execution until [`UidPool::release`]d. Dropping it
/// releases nothing: a lease must survive the executor's restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidLease {
    /// The uid (and gid).
    uid: u32,
    /// Who holds it.
    execution_id: String,
}

impl UidLease {
    /// The uid the VMM runs as.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The gid the VMM runs as: the same number.
    pub fn gid(&self) -> u32 {
        self.uid
    }

    /// The execution holding it.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }
}

/// Leases uids from `first..first + count`, recorded in a lock directory
/// shared by every executor process on the host.
#[derive(Debug)]
pub struct UidPool {
    /// First uid of the range.
    first: u32,
    /// How many uids.
    count: u32,
    /// Where the lease files are.
    lock_dir: PathBuf,
    /// Offset where the next search starts, so a just-released uid is not
    /// handed out again at once (files it owned may still be on disk).
    cursor: AtomicU32,
}

impl UidPool {
    /// A pool over `first..first + count` keeping its leases in `lock_dir`
    /// (created, mode 0700). Fails on a range that includes root, nobody or
    /// (uid_t)-1, or that overlaps the host's users, groups or subordinate
    /// ranges.
    pub fn new(first: u32, count: u32, lock_dir: PathBuf) -> Result<UidPool, UidError> {
        let end = u64::from(first) + u64::from(count);
        let invalid = |reason| UidError::InvalidRange {
            first,
            count,
            reason,
        };
        if count == 0 {
            return Err(invalid("it is empty"));
        }
        if first == 0 {
            return Err(invalid("it includes root (uid 0)"));
        }
        if end > u64::from(u32::MAX) {
            return Err(invalid(
                "it reaches 4294967295, which means \"no change\" to chown and setuid",
            ));
        }
        if u64::from(first) <= 65535 && end > 65534 {
            return Err(invalid("it includes nobody (65534) or 65535"));
        }
        for file in ["/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid"] {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(UidError::Io {
                        path: file.into(),
                        source,
                    })
                }
            };
            if let Some((name, start, stop)) = find_overlap(file, &text, first, count) {
                return Err(UidError::RangeInUse {
                    first,
                    end,
                    file: file.into(),
                    name,
                    start,
                    stop,
                });
            }
        }
        create_private_dir(&lock_dir)?;
        // Start the search somewhere different in every process, so that
        // concurrent executors rarely probe the same uids.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let cursor = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % count;
        Ok(UidPool {
            first,
            count,
            lock_dir,
            cursor: AtomicU32::new(cursor),
        })
    }

    /// The default pool: [`DEFAULT_FIRST_UID`], [`DEFAULT_UID_COUNT`],
    /// [`DEFAULT_LOCK_DIR`].
    pub fn with_defaults() -> Result<UidPool, UidError> {
        UidPool::new(
            DEFAULT_FIRST_UID,
            DEFAULT_UID_COUNT,
            PathBuf::from(DEFAULT_LOCK_DIR),
        )
    }

    /// Leases a free uid to `execution_id`, unique across every pool on the
    /// same lock directory.
    pub fn allocate(&self, execution_id: &str) -> Result<UidLease, UidError> {
        check_id(execution_id)?;
        if let Some(lease) = self.lease_of(execution_id)? {
            return Err(UidError::AlreadyLeased {
                execution_id: execution_id.to_string(),
                uid: lease.uid,
            });
        }
        let temp = self.write_temp(execution_id)?;
        let start = self.cursor.load(Ordering::Relaxed);
        let result = (0..self.count).find_map(|i| {
            let offset = (start + i) % self.count;
            let uid = self.first + offset;
            match std::fs::hard_link(&temp, self.lease_path(uid)) {
                Ok(()) => {
                    self.cursor
                        .store((offset + 1) % self.count, Ordering::Relaxed);
                    Some(Ok(uid))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(source) => Some(Err(UidError::Io {
                    path: self.lease_path(uid),
                    source,
                })),
            }
        });
        remove_quietly(&temp);
        let uid = result.unwrap_or(Err(UidError::Exhausted {
            first: self.first,
            count: self.count,
        }))?;
        tracing::info!(execution_id, uid, "uid leased");
        Ok(UidLease {
            uid,
            execution_id: execution_id.to_string(),
        })
    }

    /// Gives `lease`'s uid back. Releasing a uid that is no longer leased
    /// succeeds; one leased to another execution meanwhile is left alone
    /// (an error).
    pub fn release(&self, lease: &UidLease) -> Result<(), UidError> {
        let path = self.lease_path(lease.uid);
        match self.read_lease(lease.uid)? {
            None => Ok(()),
            Some(holder) if holder != lease.execution_id => Err(UidError::HeldByOther {
                uid: lease.uid,
                holder,
                wanted: lease.execution_id.clone(),
            }),
            Some(_) => match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(execution_id = %lease.execution_id, uid = lease.uid, "uid released");
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(UidError::Io { path, source }),
            },
        }
    }

    /// Takes back `uid` for `execution_id` after a restart: succeeds if the
    /// uid is leased to that execution or free (it is leased again), fails if
    /// another execution holds it.
    pub fn adopt(&self, execution_id: &str, uid: u32) -> Result<UidLease, UidError> {
        check_id(execution_id)?;
        let end = u64::from(self.first) + u64::from(self.count);
        if uid < self.first || u64::from(uid) >= end {
            return Err(UidError::OutOfRange {
                uid,
                first: self.first,
                end,
            });
        }
        let lease = UidLease {
            uid,
            execution_id: execution_id.to_string(),
        };
        if self.read_lease(uid)?.is_none() {
            let temp = self.write_temp(execution_id)?;
            let linked = std::fs::hard_link(&temp, self.lease_path(uid));
            remove_quietly(&temp);
            match linked {
                Ok(()) => {
                    tracing::info!(execution_id, uid, "uid adopted");
                    return Ok(lease);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(UidError::Io {
                        path: self.lease_path(uid),
                        source,
                    })
                }
            }
        }
        match self.read_lease(uid)? {
            Some(holder) if holder == execution_id => Ok(lease),
            Some(holder) => Err(UidError::HeldByOther {
                uid,
                holder,
                wanted: execution_id.to_string(),
            }),
            // Released between the two reads: try again from the top.
            None => self.adopt(execution_id, uid),
        }
    }

    /// Every lease in the lock directory (within this pool's range), by uid.
    pub fn leases(&self) -> Result<Vec<UidLease>, UidError> {
        let entries = std::fs::read_dir(&self.lock_dir).map_err(|source| UidError::Io {
            path: self.lock_dir.clone(),
            source,
        })?;
        let end = u64::from(self.first) + u64::from(self.count);
        let mut leases = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".lease"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if uid < self.first || u64::from(uid) >= end {
                continue;
            }
            if let Some(execution_id) = self.read_lease(uid)? {
                leases.push(UidLease { uid, execution_id });
            }
        }
        leases.sort_by_key(|l| l.uid);
        Ok(leases)
    }

    /// The lease `execution_id` holds, if any.
    pub fn lease_of(&self, execution_id: &str) -> Result<Option<UidLease>, UidError> {
        Ok(self
            .leases()?
            .into_iter()
            .find(|l| l.execution_id == execution_id))
    }

    /// Releases every lease whose execution `keep` does not know any more;
    /// returns them.
    pub fn sweep(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<UidLease>, UidError> {
        let mut released = Vec::new();
        for lease in self.leases()? {
            if !keep(&lease.execution_id) {
                self.release(&lease)?;
                released.push(lease);
            }
        }
        Ok(released)
    }

    fn lease_path(&self, uid: u32) -> PathBuf {
        self.lock_dir.join(format!("{uid}.lease"))
    }

    /// The execution holding `uid`, if any. A lease that cannot be parsed is
    /// reported as held by `?` so it is never handed out twice.
    fn read_lease(&self, uid: u32) -> Result<Option<String>, UidError> {
        let path = self.lease_path(uid);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<LeaseRecord>(&bytes) {
                Ok(record) => Ok(Some(record.execution_id)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable uid lease");
                    Ok(Some("?".to_string()))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(UidError::Io { path, source }),
        }
    }

    /// A temporary file holding the lease record, for linking into place.
    fn write_temp(&self, execution_id: &str) -> Result<PathBuf, UidError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .lock_dir
            .join(format!(".tmp-{}-{n}", std::process::id()));
        let record = LeaseRecord {
            execution_id: execution_id.to_string(),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| UidError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&path, bytes).map_err(|source| UidError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

fn check_id(id: &str) -> Result<(), UidError> {
    if id.is_empty() || id.len() > 256 {
        return Err(UidError::InvalidId(id.to_string()));
    }
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary lease file");
    }
}

fn create_private_dir(dir: &Path) -> Result<(), UidError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| UidError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The first entry of `/etc/passwd`, `/etc/group`, `/etc/subuid` or
/// `/etc/subgid` text (`file` says which) whose ids fall in
/// `first..first + count`: its name and its ids as a half-open range.
pub fn find_overlap(file: &str, text: &str, first: u32, count: u32) -> Option<(String, u64, u64)> {
    let (lo, hi) = (u64::from(first), u64::from(first) + u64::from(count));
    let sub = file.ends_with("subuid") || file.ends_with("subgid");
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let fields: Vec<&str> = line.split(':').collect();
        let name = fields.first().copied().unwrap_or("").to_string();
        let ranges: Vec<(u64, u64)> = if sub {
            match (
                fields.get(1).and_then(|s| s.parse::<u64>().ok()),
                fields.get(2).and_then(|s| s.parse::<u64>().ok()),
            ) {
                (Some(start), Some(n)) => vec![(start, start + n)],
                _ => continue,
            }
        } else {
            // passwd: name:x:uid:gid:...; group: name:x:gid:...
            fields
                .iter()
                .skip(2)
                .take(if file.ends_with("passwd") { 2 } else { 1 })
                .filter_map(|s| s.parse::<u64>().ok())
                .map(|id| (id, id + 1))
                .collect()
        };
        if let Some((start, stop)) = ranges
            .into_iter()
            .find(|(start, stop)| *start < hi && lo < *stop)
        {
            return Some((name, start, stop));
        }
    }
    None
}

#[cfg(test)]
mod tests;
