//! Starting an execution: validation, reservation in the registry, and the
//! execution's task (launch, then supervision), all in a task of its own so
//! that a caller who gives up does not abandon a start half way.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::ExecutorConfig;
use crate::error::ExecutorError;
use crate::execution::{Execution, Snapshot};
use crate::execution_task::{launch_and_supervise, TaskContext};
use crate::lifecycle::Phase;
use crate::registry::Registry;
use crate::request::ExecutionRequest;
use crate::resources::HostLimits;
use crate::state_dir::StateDir;
use crate::supervisor::Deadlines;
use crate::tasks::Tasks;

/// What a start needs of the executor, owned, so that it runs in a task of
/// its own and goes on when its caller gives up.
pub(super) struct Starter {
    pub host: HostLimits,
    pub config: Arc<ExecutorConfig>,
    pub state: Arc<StateDir>,
    pub registry: Arc<Registry>,
    pub ctx: TaskContext,
    pub tasks: Tasks,
}

impl Starter {
    /// Validates `request`, reserves the execution, and spawns its task
    /// (launch, then supervision); resolves once the guest runs.
    pub async fn start(self, request: ExecutionRequest) -> Result<(), ExecutorError> {
        let validated = crate::validate::validate_within(request, self.host, &self.config);
        let mut valid = tokio::select! {
            valid = validated => valid?,
            // Shutdown does not wait for a validation that is stuck.
            _ = self.ctx.stop.cancelled() => return Err(ExecutorError::ShuttingDown),
        };
        valid.timeout = valid.timeout.or(self.config.default_timeout);
        if valid.persist_logs.is_zero() {
            valid.persist_logs = self.config.default_retention.unwrap_or_default();
        }
        let paths = self.state.execution(&valid.execution_id)?;
        let paths = match &self.ctx.launcher.jail {
            Some(jail) => paths.jailed(jail.chroot(&valid.execution_id))?,
            None => paths.checked()?,
        };
        let (commands, receiver) = mpsc::channel(8);
        let exec = Arc::new(Execution::new(
            valid.execution_id.clone(),
            valid.job_id.clone(),
            paths,
            valid.mode,
            Snapshot {
                phase: Phase::Pending,
                result: None,
            },
            Some(commands),
            self.ctx.stop.clone(),
        ));
        self.registry
            .reserve(exec.clone(), u64::from(valid.mem_mib))?;
        let deadlines = Deadlines {
            boot: valid.boot_timeout,
            end: valid.timeout.map(|t| (tokio::time::Instant::now() + t, t)),
        };
        let (ready, launched) = oneshot::channel();
        let task = launch_and_supervise(
            self.ctx.clone(),
            exec.clone(),
            valid,
            receiver,
            ready,
            deadlines,
        );
        if !self.tasks.spawn(task) {
            self.registry.remove(&exec);
            return Err(ExecutorError::ShuttingDown);
        }
        launched.await.unwrap_or_else(|_| {
            Err(ExecutorError::Internal {
                id: exec.id.clone(),
                reason: "the launch task ended without an answer".into(),
            })
        })
    }
}
