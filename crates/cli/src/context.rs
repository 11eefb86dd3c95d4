//! What every command needs: the state directory, the executor id, and a way
//! to open the executor, or to look at its directory read-only when another
//! process owns it.
//!
//! An executor's directory is locked by the process that opens it (see
//! [`fcexec::state_dir`]). So:
//!
//! - `run` opens it, retrying for [`LOCK_PATIENCE`] so that a concurrent
//!   short-lived command (`ps`, `logs`) does not make it fail;
//! - `ps`, `logs` and `wait` open it when free (re-attaching to VMs left
//!   running) and otherwise fall back to [`fcexec::inspect`]'s read-only view;
//! - `cancel`, `rm` and `cleanup` need the owner, and say who holds it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use fcexec::state_dir::{check_id, default_data_root, default_root, StateDirError};
use fcexec::{Executor, ExecutorConfig, ExecutorError};

use crate::args::Global;

/// How long `run` keeps trying to take a lock another process holds.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(3);

/// The resolved global options.
#[derive(Debug, Clone)]
pub struct Context {
    /// Root of the state (runtime) directory.
    pub root: PathBuf,
    /// Root of the data directory (records and output).
    pub data_root: PathBuf,
    /// The executor id.
    pub executor_id: String,
    /// `--no-jail`: VMMs unjailed even as root.
    pub no_jail: bool,
}

/// The executor, or a read-only view of its directory.
#[derive(Debug)]
pub enum Access {
    /// This process owns the executor.
    Owner(Box<Executor>),
    /// Another process owns it: read `dir` with [`fcexec::inspect`].
    ReadOnly {
        /// `<data root>/<executor id>`: records and output.
        dir: PathBuf,
        /// `<root>/<executor id>`: where the owner's lock is.
        runtime: PathBuf,
    },
}

impl Context {
    /// Resolves the global options: the state root (given or default) and a
    /// checked executor id.
    pub fn new(global: &Global) -> anyhow::Result<Context> {
        let root = match &global.state_dir {
            Some(dir) => std::path::absolute(dir)
                .with_context(|| format!("--state-dir {}", dir.display()))?,
            None => default_root().context("pass --state-dir DIR or set FCEXEC_STATE_DIR")?,
        };
        let data_root = match (&global.data_dir, &global.state_dir) {
            (Some(dir), _) => {
                std::path::absolute(dir).with_context(|| format!("--data-dir {}", dir.display()))?
            }
            (None, Some(_)) => root.clone(),
            (None, None) => {
                default_data_root().context("pass --data-dir DIR or set FCEXEC_DATA_DIR")?
            }
        };
        check_id("--executor", &global.executor)?;
        Ok(Context {
            root,
            data_root,
            executor_id: global.executor.clone(),
            no_jail: global.no_jail,
        })
    }

    /// `<root>/<executor id>`: the lock, sockets and VM files.
    pub fn executor_dir(&self) -> PathBuf {
        self.root.join(&self.executor_id)
    }

    /// `<data root>/<executor id>`: records and output.
    pub fn data_dir(&self) -> PathBuf {
        self.data_root.join(&self.executor_id)
    }

    /// The executor's configuration (firecracker from `FIRECRACKER_BIN` or `PATH`).
    pub fn config(&self) -> ExecutorConfig {
        ExecutorConfig {
            state_root: Some(self.root.clone()),
            data_root: Some(self.data_root.clone()),
            launch_hook: Some(Arc::new(crate::progress::LaunchProgress {
                inner: crate::fault::pause_from_env(),
                progress: crate::progress::ImageProgress::new(),
            })),
            jail: fcexec::JailSettings {
                enabled: fcexec::JailSettings::default().enabled && !self.no_jail,
                ..fcexec::JailSettings::default()
            },
            ..ExecutorConfig::default()
        }
    }

    /// Opens the executor; when another process holds it, fails naming it.
    pub async fn open(&self) -> anyhow::Result<Executor> {
        match Executor::new(&self.executor_id, self.config()).await {
            Ok(executor) => Ok(executor),
            Err(e) if is_locked(&e) => Err(self.locked_error()),
            Err(e) => Err(self.open_error(e)),
        }
    }

    /// Opens the executor with `config` ([`Context::config`], possibly
    /// changed), waiting up to `patience` for a lock held by another process.
    pub async fn open_patiently(
        &self,
        config: ExecutorConfig,
        patience: Duration,
    ) -> anyhow::Result<Executor> {
        let deadline = Instant::now() + patience;
        loop {
            match Executor::new(&self.executor_id, config.clone()).await {
                Ok(executor) => return Ok(executor),
                Err(e) if is_locked(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if is_locked(&e) => return Err(self.locked_error()),
                Err(e) => return Err(self.open_error(e)),
            }
        }
    }

    /// Opens the executor, or falls back to a read-only view when another
    /// process holds it.
    pub async fn open_or_view(&self) -> anyhow::Result<Access> {
        match Executor::new(&self.executor_id, self.config()).await {
            Ok(executor) => Ok(Access::Owner(Box::new(executor))),
            Err(e) if is_locked(&e) => {
                tracing::info!(dir = %self.executor_dir().display(), "executor in use; reading its directory");
                Ok(Access::ReadOnly {
                    dir: self.data_dir(),
                    runtime: self.executor_dir(),
                })
            }
            Err(e) => Err(self.open_error(e)),
        }
    }

    /// The message for a lock held by another process.
    pub fn locked_error(&self) -> anyhow::Error {
        let holder = match fcexec::inspect::lock_holder(&self.executor_dir()) {
            Some(pid) => format!(" (pid {pid})"),
            None => String::new(),
        };
        anyhow!(
            "executor {:?} ({}) is in use by another fcexec process{holder}; stop it (Ctrl-C) \
             or use --executor ID",
            self.executor_id,
            self.executor_dir().display()
        )
    }

    fn open_error(&self, e: ExecutorError) -> anyhow::Error {
        anyhow::Error::new(e).context(format!(
            "cannot open executor {:?} in {}",
            self.executor_id,
            self.root.display()
        ))
    }
}

/// True when the executor could not be opened because another process holds it.
pub fn is_locked(e: &ExecutorError) -> bool {
    matches!(e, ExecutorError::StateDir(StateDirError::Locked(_)))
}

/// Gives an execution id a check before it is used as a path.
pub fn check_execution_id(id: &str) -> anyhow::Result<()> {
    check_id("execution id", id)?;
    Ok(())
}
