//! `fcexec ps [-a]`: the executor's live executions (with `-a`, every one
//! kept, finished ones too) as a table (ID, STATUS, JOB, CREATED, EXIT,
//! ISOLATION, NETWORK: the guest's address and published ports) or as JSON;
//! `fcexec inspect ID`: one of them as JSON, with its isolation in full
//! (uid, chroot, cgroup, limits).
//!
//! The columns come from the persisted records. Plain `ps`, like `docker
//! ps`, finds the live executions in the runtime tree
//! ([`fcexec::inspect::list_live`]) and reads their records only, so it does
//! not grow with history; `-a` reads every record ([`fcexec::inspect::list`]).
//! When this process can open the executor, it does, so that VMs left running
//! are re-attached and those that ended while nobody watched are settled; the
//! executor's statuses then win over the records', and it is shut down (its
//! VMs left running) before the table is printed (without `-a`, those that
//! turned out to have ended are left out). Otherwise (another process owns
//! it) the records are shown as they are.
//!
//! With `-a`, an execution whose record cannot be read is listed as corrupt:
//! STATUS `corrupt` in the table, with the reason on stderr (and `fcexec rm
//! ID` to delete it); in JSON, status `failed`, the reason in `corrupt` and,
//! as the executor reports it, `error_msg`.

use std::time::Duration;

use fcexec::inspect::{self, Summary};
use fcexec::record::now_ms;

use crate::args::{IdArg, PsArgs};
use crate::context::{Access, Context};
use crate::exit::Exit;
use crate::output;

/// How long re-attached supervisors get to settle executions whose VMM
/// ended while nobody watched.
const SETTLE: Duration = Duration::from_millis(100);

/// Runs `fcexec ps`.
pub async fn run(ctx: &Context, args: PsArgs) -> anyhow::Result<Exit> {
    let listed = |data: &std::path::Path, runtime: &std::path::Path| match args.all {
        true => inspect::list(data),
        false => inspect::list_live(data, runtime),
    };
    let mut all = match ctx.open_or_view().await? {
        Access::Owner(executor) => {
            // Each record is read once; only the live ones are asked again.
            let mut all = listed(executor.state_dir(), executor.runtime_dir());
            let deadline = tokio::time::Instant::now() + SETTLE;
            for summary in all.iter_mut().filter(|s| !s.status.is_terminal()) {
                let id = summary.execution_id.clone();
                let _ = tokio::time::timeout_at(deadline, executor.wait(&id)).await;
                match inspect::record(executor.state_dir(), &id) {
                    Ok(record) => *summary = Summary::from(&record),
                    Err(_) => continue,
                }
                if let Ok(status) = executor.status(&id) {
                    summary.status = status;
                }
            }
            executor.shutdown().await;
            all
        }
        Access::ReadOnly { dir, runtime } => listed(&dir, &runtime),
    };
    if !args.all {
        all.retain(|s| !s.status.is_terminal());
    }
    if args.json {
        output::print_json(&all)?;
    } else {
        print!("{}", table(&all, now_ms()));
        for s in &all {
            if let Some(reason) = &s.corrupt {
                eprintln!(
                    "fcexec: execution {id} is corrupt: {reason}; `fcexec rm {id}` deletes it",
                    id = s.execution_id
                );
            }
        }
    }
    Ok(Exit::Success)
}

/// The table of `fcexec ps`.
fn table(all: &[Summary], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let exit = match (s.exit_code, s.killed) {
                _ if s.corrupt.is_some() => "-".to_string(),
                (Some(code), false) => code.to_string(),
                (Some(code), true) => format!("{code} (killed)"),
                (None, _) => "-".to_string(),
            };
            let status = match s.corrupt {
                Some(_) => "corrupt".to_string(),
                None => s.status.to_string(),
            };
            let job = match s.job_id.as_str() {
                "" => "-".to_string(),
                job => job.to_string(),
            };
            vec![
                s.execution_id.clone(),
                status,
                job,
                output::ago(now_ms, s.created_ms),
                exit,
                isolation(s),
                s.network.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "STATUS",
            "JOB",
            "CREATED",
            "EXIT",
            "ISOLATION",
            "NETWORK",
        ],
        &rows,
    )
}

/// The ISOLATION column: `jailed uid <n>`, or `none` for an unjailed VMM.
fn isolation(s: &Summary) -> String {
    match &s.isolation {
        Some(iso) => format!("jailed uid {}", iso.uid),
        None if s.corrupt.is_some() => "-".to_string(),
        None => "none".to_string(),
    }
}

/// Runs `fcexec inspect ID`: the execution's summary as JSON, isolation
/// included.
pub async fn inspect(ctx: &Context, args: IdArg) -> anyhow::Result<Exit> {
    crate::context::check_execution_id(&args.id)?;
    let dir = match ctx.open_or_view().await? {
        Access::Owner(executor) => {
            let dir = executor.state_dir().to_path_buf();
            executor.shutdown().await;
            dir
        }
        Access::ReadOnly { dir, .. } => dir,
    };
    let record = inspect::record(&dir, &args.id)
        .map_err(|e| anyhow::anyhow!("execution {}: {e}", args.id))?;
    output::print_json(&Summary::from(&record))?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fcexec::{ExecutionStatus, Mode, Phase};

    fn summary(id: &str, status: ExecutionStatus, exit: Option<i32>, killed: bool) -> Summary {
        Summary {
            execution_id: id.into(),
            job_id: "demo".into(),
            status,
            phase: Phase::Running,
            mode: Mode::Agent,
            created_ms: 1_000,
            finished_ms: None,
            pid: None,
            exit_code: exit,
            error_msg: String::new(),
            killed,
            corrupt: None,
            network: None,
            isolation: None,
        }
    }

    #[test]
    fn rows_show_exit_codes_and_kills() {
        let mut running = summary("a", ExecutionStatus::Running, None, false);
        running.network = Some("10.213.0.6 8080->80/tcp".into());
        let all = [
            running,
            summary("b", ExecutionStatus::Failed, Some(-1), true),
            summary("c", ExecutionStatus::Success, Some(0), false),
            Summary::corrupt("d", "its record cannot be read: EOF".into(), 1_000),
        ];
        let text = table(&all, 61_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID   STATUS    JOB    CREATED   EXIT          ISOLATION   NETWORK"
        );
        assert_eq!(
            lines[1],
            "a    running   demo   1m ago    -             none        10.213.0.6 8080->80/tcp"
        );
        assert_eq!(
            lines[2],
            "b    failed    demo   1m ago    -1 (killed)   none        -"
        );
        assert_eq!(
            lines[3],
            "c    success   demo   1m ago    0             none        -"
        );
        assert_eq!(
            lines[4],
            "d    corrupt   -      1m ago    -             -           -"
        );
    }
}
