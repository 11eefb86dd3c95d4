//! One execution's task: launch, then supervision, from one future, so the
//! execution's phase has one writer. A guard around it makes sure no waiter
//! or log follower can hang: a task that panics, or ends without a result,
//! leaves a failed result ("internal error: ...") behind.
//!
//! Only the executor spawns these, into its tracked task set.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::agent_link::LinkParts;
use crate::capture::Capture;
use crate::error::{chain, ExecutorError};
use crate::execution::{Command, Execution, LogProgress};
use crate::launch::Launcher;
use crate::lifecycle::Phase;
use crate::machine::Machine;
use crate::record::ExecutionRecord;
use crate::registry::Registry;
use crate::result::ExecutionResult;
use crate::supervisor::{Deadlines, Ended, Settings, Supervisor};
use crate::validate::ValidatedRequest;

/// What an execution's task needs of its executor.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Launches VMs.
    pub launcher: Arc<Launcher>,
    /// The executions.
    pub registry: Arc<Registry>,
    /// Supervision settings.
    pub settings: Settings,
    /// Cancelled when the executor shuts down.
    pub stop: CancellationToken,
}

/// How a task ended, for its guard.
enum TaskEnd {
    Supervised(Ended),
    /// The launch failed: the execution is already unregistered.
    LaunchFailed,
}

/// Launches `valid` and supervises it; `ready` gets the launch's outcome
/// once the guest runs (or the launch failed).
pub async fn launch_and_supervise(
    ctx: TaskContext,
    exec: Arc<Execution>,
    valid: ValidatedRequest,
    commands: mpsc::Receiver<Command>,
    ready: oneshot::Sender<Result<(), ExecutorError>>,
    deadlines: Deadlines,
) {
    let (task_ctx, task_exec) = (ctx.clone(), exec.clone());
    let body = async move {
        let (ctx, exec) = (task_ctx, task_exec);
        let launched = async {
            let spawned = ctx.launcher.spawn(&valid, &exec.paths).await?;
            if let Err(e) = exec.transition(Phase::Booting) {
                ctx.launcher.discard(spawned).await;
                return Err(internal(&exec, e));
            }
            let launched = ctx.launcher.boot(spawned).await?;
            exec.transition(Phase::Running)
                .map_err(|e| internal(&exec, e))?;
            Ok::<_, ExecutorError>(launched)
        }
        .await;
        let launched = match launched {
            Ok(launched) => launched,
            Err(e) => {
                // Anyone already waiting learns why; then the id is free again.
                let _ = exec.finish(Phase::Failed, ExecutionResult::failed(chain(&e)));
                ctx.registry.remove(&exec);
                let _ = ready.send(Err(e));
                return TaskEnd::LaunchFailed;
            }
        };
        let (vmm, record, capture, link) = launched.into_parts();
        let _ = ready.send(Ok(()));
        let output = (capture, link);
        let supervisor = supervisor(&ctx, &exec, Some(vmm), record, output, commands, deadlines);
        TaskEnd::Supervised(supervisor.run().await)
    };
    guard(ctx, exec, body).await
}

/// Supervises an execution found at start-up (its VMM is `None` when it
/// died meanwhile).
pub async fn supervise_recovered<M: Machine>(
    ctx: TaskContext,
    exec: Arc<Execution>,
    found: (Option<M>, ExecutionRecord, (Capture, Option<LinkParts>)),
    commands: mpsc::Receiver<Command>,
    deadlines: Deadlines,
) {
    let (vmm, record, output) = found;
    let supervisor = supervisor(&ctx, &exec, vmm, record, output, commands, deadlines);
    let body = async move { TaskEnd::Supervised(supervisor.run().await) };
    guard(ctx, exec, body).await
}

/// The supervisor of `exec`, with the executor's settings.
fn supervisor<M: Machine>(
    ctx: &TaskContext,
    exec: &Arc<Execution>,
    vmm: Option<M>,
    record: ExecutionRecord,
    output: (Capture, Option<LinkParts>),
    commands: mpsc::Receiver<Command>,
    deadlines: Deadlines,
) -> Supervisor<M> {
    let (stop, settings) = (ctx.stop.clone(), ctx.settings);
    Supervisor::new(
        exec.clone(),
        vmm,
        record,
        output,
        commands,
        stop,
        settings,
        deadlines,
        ctx.launcher.networks.clone(),
    )
}

/// Runs an execution's task body; whatever happens, the execution ends with
/// a result or is let go on purpose (shutdown).
async fn guard(ctx: TaskContext, exec: Arc<Execution>, body: impl Future<Output = TaskEnd>) {
    let ended = AssertUnwindSafe(body).catch_unwind().await;
    let failure = match ended {
        Ok(TaskEnd::LaunchFailed) | Ok(TaskEnd::Supervised(Ended::Detached)) => return,
        Ok(TaskEnd::Supervised(Ended::Finished { expires_ms })) => {
            if let Some(at) = expires_ms {
                ctx.registry.expire_at(&exec, at);
            }
            "the supervisor ended without a result".to_string()
        }
        Err(panic) => format!("the supervisor panicked: {}", panic_message(&*panic)),
    };
    ctx.registry.release(&exec);
    if exec.phase().is_terminal() {
        return;
    }
    tracing::error!(id = %exec.id, reason = %failure, "internal error; the execution is failed");
    let result = ExecutionResult::failed(format!("internal error: {failure}"));
    if let Err(e) = exec.finish(Phase::Failed, result) {
        tracing::error!(id = %exec.id, error = %e, "cannot fail the execution");
    }
    let progress = *exec.log_progress().borrow();
    exec.publish_logs(LogProgress {
        done: true,
        ..progress
    });
}

fn internal(exec: &Execution, e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Internal {
        id: exec.id.clone(),
        reason: e.to_string(),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
