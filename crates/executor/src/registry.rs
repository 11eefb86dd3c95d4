//! The registry: the one owner of the map of executions, of the budget
//! their VMs take from the host, and of when finished ones expire.
//!
//! Every other module asks it; none holds the map. An execution is
//! *reserved* when its start is accepted (which checks the id is free and
//! its memory fits the budget), *released* when it ends (its memory goes
//! back), and *removed* by `remove`, `cleanup` or expiry.
//!
//! Finished executions of earlier executors are not in the map until asked
//! for (see `executor::history`); their expiry can be scheduled by id
//! before that ([`Registry::expire_on_disk`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use crate::error::ExecutorError;
use crate::execution::Execution;

/// How much the executions of one executor may take together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Memory of all live VMs together, MiB.
    pub memory_mib: u64,
    /// Live executions at once.
    pub live: usize,
}

#[derive(Debug)]
struct Entry {
    exec: Arc<Execution>,
    /// Memory it holds from the budget (MiB) while it counts as live.
    holds: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    used_mib: u64,
    live: usize,
    /// Finished executions by expiry time (Unix ms, then a sequence number).
    expiries: BTreeMap<(u64, u64), Due>,
    next_seq: u64,
}

/// A scheduled expiry.
#[derive(Debug)]
enum Due {
    /// An execution in the map.
    Loaded(Weak<Execution>),
    /// A finished execution known by id only (on disk, not loaded).
    OnDisk(String),
}

/// What expired (see [`Registry::take_expired`]).
#[derive(Debug)]
pub enum Expired {
    /// An execution in the map: delete its files, then remove it.
    Loaded(Arc<Execution>),
    /// The id of a finished execution on disk, not in the map: delete its
    /// files if its record still says so.
    OnDisk(String),
}

/// The map of executions and the budget.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    budget: Budget,
    /// Woken when an earlier expiry is scheduled.
    expiry_changed: Notify,
}

impl Registry {
    /// An empty registry with `budget`.
    pub fn new(budget: Budget) -> Registry {
        Registry {
            inner: Mutex::new(Inner::default()),
            budget,
            expiry_changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here can panic while holding the lock; a poisoned lock
        // still holds a consistent map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Accepts a new execution taking `memory_mib`: refused when its id is
    /// in use or the budget cannot hold it.
    pub fn reserve(&self, exec: Arc<Execution>, memory_mib: u64) -> Result<(), ExecutorError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.entries.get(&exec.id) {
            return Err(if existing.exec.phase().is_terminal() {
                ExecutorError::AlreadyFinished(exec.id.clone())
            } else {
                ExecutorError::AlreadyStarted(exec.id.clone())
            });
        }
        if inner.live >= self.budget.live {
            return Err(ExecutorError::OverBudget {
                id: exec.id.clone(),
                reason: format!(
                    "{} executions are live, the most this executor runs at once",
                    inner.live
                ),
            });
        }
        let free = self.budget.memory_mib.saturating_sub(inner.used_mib);
        if memory_mib > free {
            return Err(ExecutorError::OverBudget {
                id: exec.id.clone(),
                reason: format!(
                    "it needs {memory_mib} MiB of memory and {free} MiB of the executor's \
                     {} MiB budget are free",
                    self.budget.memory_mib
                ),
            });
        }
        inner.used_mib += memory_mib;
        inner.live += 1;
        inner.entries.insert(
            exec.id.clone(),
            Entry {
                exec,
                holds: Some(memory_mib),
            },
        );
        Ok(())
    }

    /// Adds an execution found at start-up. A live one counts against the
    /// budget without a check: its VM already exists.
    pub fn insert_recovered(&self, exec: Arc<Execution>, memory_mib: u64) {
        let mut inner = self.lock();
        let holds = exec.phase().is_live().then_some(memory_mib);
        if let Some(mib) = holds {
            inner.used_mib += mib;
            inner.live += 1;
        }
        let id = exec.id.clone();
        if let Some(old) = inner.entries.insert(id, Entry { exec, holds }) {
            release_entry(&mut inner, old);
        }
    }

    /// Registers an execution loaded from disk on demand (a finished one),
    /// unless one with its id is registered already (another caller loaded
    /// it first, or it was started meanwhile). Returns the one registered,
    /// and true when it is `exec`.
    pub fn insert_loaded(&self, exec: Arc<Execution>) -> (Arc<Execution>, bool) {
        let mut inner = self.lock();
        if let Some(existing) = inner.entries.get(&exec.id) {
            return (existing.exec.clone(), false);
        }
        let id = exec.id.clone();
        inner.entries.insert(
            id,
            Entry {
                exec: exec.clone(),
                holds: None,
            },
        );
        (exec, true)
    }

    /// Runs `f` unless an execution with this id is registered, holding the
    /// map meanwhile, so that no execution with this id is registered (and
    /// its directory created) while `f` deletes the files of an old one.
    /// Blocking while `f` runs: call it on the blocking pool.
    pub fn unless_registered<R>(&self, id: &str, f: impl FnOnce() -> R) -> Option<R> {
        let inner = self.lock();
        (!inner.entries.contains_key(id)).then(f)
    }

    /// True when an execution with this id is registered.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// Gives back the budget `exec` holds (it ended).
    pub fn release(&self, exec: &Arc<Execution>) {
        let mut inner = self.lock();
        let held = match inner.entries.get_mut(&exec.id) {
            Some(entry) if Arc::ptr_eq(&entry.exec, exec) => entry.holds.take(),
            _ => None,
        };
        if let Some(mib) = held {
            inner.used_mib = inner.used_mib.saturating_sub(mib);
            inner.live = inner.live.saturating_sub(1);
        }
    }

    /// Forgets `exec` (this very execution, not a later one with its id),
    /// giving back its budget. True when it was there.
    pub fn remove(&self, exec: &Arc<Execution>) -> bool {
        let mut inner = self.lock();
        match inner.entries.get(&exec.id) {
            Some(entry) if Arc::ptr_eq(&entry.exec, exec) => {
                if let Some(entry) = inner.entries.remove(&exec.id) {
                    release_entry(&mut inner, entry);
                }
                true
            }
            _ => false,
        }
    }

    /// The execution with this id.
    pub fn get(&self, id: &str) -> Result<Arc<Execution>, ExecutorError> {
        self.lock()
            .entries
            .get(id)
            .map(|e| e.exec.clone())
            .ok_or_else(|| ExecutorError::NotFound(id.to_string()))
    }

    /// Every execution.
    pub fn all(&self) -> Vec<Arc<Execution>> {
        self.lock()
            .entries
            .values()
            .map(|e| e.exec.clone())
            .collect()
    }

    /// Memory reserved by live executions, MiB, and how many are live.
    pub fn used(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.used_mib, inner.live)
    }

    /// Schedules `exec` to be forgotten at `at_ms` (Unix ms).
    pub fn expire_at(&self, exec: &Arc<Execution>, at_ms: u64) {
        self.schedule(at_ms, Due::Loaded(Arc::downgrade(exec)));
    }

    /// Schedules the finished execution `id`, on disk and not loaded, to be
    /// deleted at `at_ms` (Unix ms) unless one with its id is registered then.
    pub fn expire_on_disk(&self, id: String, at_ms: u64) {
        self.schedule(at_ms, Due::OnDisk(id));
    }

    fn schedule(&self, at_ms: u64, due: Due) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let earliest = inner.expiries.keys().next().map(|k| k.0);
        inner.expiries.insert((at_ms, seq), due);
        drop(inner);
        if earliest.map_or(true, |e| at_ms < e) {
            self.expiry_changed.notify_one();
        }
    }

    /// The executions whose expiry is at or before `now_ms` (left in the map
    /// until [`Registry::remove`], once their files are gone), the ids of
    /// those on disk due (and not registered), and the time of the next
    /// expiry.
    pub fn take_expired(&self, now_ms: u64) -> (Vec<Expired>, Option<u64>) {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while let Some(entry) = inner.expiries.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            due.push(entry.remove());
        }
        let mut expired = Vec::new();
        for d in due {
            match d {
                Due::Loaded(exec) => {
                    let Some(exec) = exec.upgrade() else { continue };
                    let registered = inner.entries.get(&exec.id);
                    if registered.is_some_and(|e| Arc::ptr_eq(&e.exec, &exec)) {
                        expired.push(Expired::Loaded(exec));
                    }
                }
                // Registered meanwhile: its own expiry, if any, decides.
                Due::OnDisk(id) if inner.entries.contains_key(&id) => {}
                Due::OnDisk(id) => expired.push(Expired::OnDisk(id)),
            }
        }
        let next = inner.expiries.keys().next().map(|k| k.0);
        (expired, next)
    }

    /// Resolves when an earlier expiry may have been scheduled.
    pub async fn expiry_changed(&self) {
        self.expiry_changed.notified().await
    }
}

fn release_entry(inner: &mut Inner, entry: Entry) {
    if let Some(mib) = entry.holds {
        inner.used_mib = inner.used_mib.saturating_sub(mib);
        inner.live = inner.live.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::Snapshot;
    use crate::lifecycle::Phase;
    use crate::result::ExecutionResult;
    use crate::spec::Mode;

    fn exec(id: &str) -> Arc<Execution> {
        let paths = crate::state_dir::ExecPaths::for_tests(&std::env::temp_dir().join(id));
        Arc::new(Execution::new(
            id.into(),
            "j".into(),
            paths,
            Mode::Plain,
            Snapshot {
                phase: Phase::Pending,
                result: None,
            },
            None,
            tokio_util::sync::CancellationToken::new(),
        ))
    }

    fn registry(memory_mib: u64, live: usize) -> Registry {
        Registry::new(Budget { memory_mib, live })
    }

    #[test]
    fn memory_is_reserved_at_start_and_given_back_at_the_end() {
        let r = registry(300, 10);
        let (a, b, c) = (exec("a"), exec("b"), exec("c"));
        r.reserve(a.clone(), 200).unwrap();
        let err = r.reserve(b.clone(), 200).unwrap_err();
        assert!(
            matches!(err, ExecutorError::OverBudget { .. }) && err.to_string().contains("100 MiB"),
            "{err}"
        );
        r.reserve(c.clone(), 100).unwrap();
        assert_eq!(r.used(), (300, 2));
        a.finish(Phase::Failed, ExecutionResult::failed("x")).ok();
        r.release(&a);
        r.release(&a);
        assert_eq!(r.used(), (100, 1));
        r.reserve(b, 200).unwrap();
        assert!(r.remove(&a));
        assert!(r.remove(&c));
        assert_eq!(r.used(), (200, 1));
    }

    #[test]
    fn ids_are_unique_and_live_count_is_bounded() {
        let r = registry(1000, 2);
        r.reserve(exec("a"), 1).unwrap();
        assert!(matches!(
            r.reserve(exec("a"), 1),
            Err(ExecutorError::AlreadyStarted(_))
        ));
        r.reserve(exec("b"), 1).unwrap();
        let err = r.reserve(exec("c"), 1).unwrap_err();
        assert!(err.to_string().contains("2 executions are live"), "{err}");
    }

    #[test]
    fn removal_is_of_this_execution_only() {
        let r = registry(1000, 10);
        let (old, new) = (exec("a"), exec("a"));
        r.reserve(old.clone(), 1).unwrap();
        assert!(r.remove(&old));
        r.reserve(new.clone(), 1).unwrap();
        assert!(!r.remove(&old));
        assert!(Arc::ptr_eq(&r.get("a").unwrap(), &new));
    }

    #[test]
    fn expiry_takes_what_is_due_in_order() {
        let r = registry(1000, 10);
        let (a, b) = (exec("a"), exec("b"));
        for e in [&a, &b] {
            r.reserve(e.clone(), 1).unwrap();
            e.finish(Phase::Failed, ExecutionResult::failed("x"))
                .unwrap();
            r.release(e);
        }
        r.expire_at(&b, 200);
        r.expire_at(&a, 100);
        let (due, next) = r.take_expired(150);
        assert!(matches!(&due[..], [Expired::Loaded(e)] if e.id == "a"));
        assert_eq!(next, Some(200));
        assert!(r.remove(&a));
        assert!(r.get("a").is_err() && r.get("b").is_ok());
        assert_eq!(r.take_expired(250).0.len(), 1);
        assert!(r.remove(&b));
        assert_eq!(r.used(), (0, 0));
    }

    #[test]
    fn an_expiry_on_disk_yields_to_an_execution_registered_meanwhile() {
        let r = registry(1000, 10);
        r.expire_on_disk("a".into(), 100);
        r.expire_on_disk("b".into(), 100);
        let (loaded, fresh) = r.insert_loaded(exec("b"));
        assert!(fresh && r.contains("b"));
        assert!(!r.insert_loaded(exec("b")).1);
        assert!(Arc::ptr_eq(&r.get("b").unwrap(), &loaded));
        let (due, next) = r.take_expired(100);
        assert!(matches!(&due[..], [Expired::OnDisk(id)] if id == "a"));
        assert_eq!(next, None);
        assert!(r.get("b").is_ok());
        assert_eq!(r.unless_registered("b", || ()), None);
        assert_eq!(r.unless_registered("a", || 1), Some(1));
    }
}
