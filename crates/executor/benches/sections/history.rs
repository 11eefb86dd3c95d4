//! Section H: does the executor stay flat as history grows? Start-up,
//! `fcexec ps`, `logs` and `run` with N finished executions kept, and the
//! two answers that are O(N) by nature, `list()` and `fcexec ps -a`.
//!
//! Setup, in fcexec's default shape: the runtime tree (`<bench dir>/h`, as
//! `/run/fcexec`) apart from the data tree (`<bench dir>/h-data`, as
//! `/var/lib/fcexec`). An executor `hist` runs the one-line job once for real
//! and keeps it; its data files are then stamped N times under new ids
//! (`history/fill.rs`), growing the data tree from one N to the next. So at
//! "N" the data tree holds N copies plus that real execution, whose logs are
//! the ones read, and the runtime tree no execution (none is live).
//!
//! Per N, `runs` times each (medians), in this process first:
//! `Executor::new` (lock, the remembered firecracker version, the start-up
//! scan of the runtime tree; finished executions are read only when asked
//! for by id), the heap it then holds (glibc `mallinfo2`), `list()` (which
//! reads every finished execution) and the heap held after it, `logs(id)`
//! read to the end, and one `run` (then `remove`d, not timed), each with a
//! fresh executor that is shut down after; then the CLI as whole processes,
//! in rotating order: `fcexec ps` (live executions: none), `fcexec ps -a`
//! (all N + 1), `fcexec logs ID`, `fcexec run` (the demo guest; the execution
//! it leaves is deleted afterwards, not timed). The page cache is warm (the same files are read
//! every time), as for a restarted service on a running host. No raw
//! baseline: the in-process executions use the executor's default transport
//! (protocol 2 over vsock), as `fcexec run` does.

mod fill;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcexec::{Executor, LogOptions};

use crate::support::context::{check_output, hi_job, Ctx, HI, RUN_LIMIT};
use crate::support::process::{CliBin, Proc};
use crate::support::procfs;
use crate::support::report::kib;
use crate::support::stats::{ms2, summarize};
use crate::support::table::Table;
use fill::Template;

/// The executor id of the history.
const EXECUTOR: &str = "hist";
/// The id of `fcexec run`'s execution, deleted after each run: known, so
/// that deleting it does not list the data tree's N copies.
const CLI_RUN: &str = "hcli";
/// Removing one execution (not timed).
const REMOVE_LIMIT: Duration = Duration::from_secs(10);

/// The samples of one N.
#[derive(Default)]
struct Column {
    n: usize,
    new: Vec<Duration>,
    heap: Vec<f64>,
    heap_listed: Vec<f64>,
    list: Vec<Duration>,
    logs: Vec<Duration>,
    run: Vec<Duration>,
    ps: Vec<Proc>,
    ps_all: Vec<Proc>,
    cli_logs: Vec<Proc>,
    cli_run: Vec<Proc>,
    /// `list()` answers that missed executions: (count, fewest listed).
    short_lists: (usize, usize),
    /// `fcexec ps -a` tables that missed executions: (count, fewest rows).
    short_ps: (usize, usize),
    /// `fcexec ps` tables that listed a finished execution: (count, most rows).
    long_ps: (usize, usize),
    /// `fcexec logs ID` runs that failed, and the first error.
    failed_logs: (usize, Option<String>),
    /// `logs(id)` calls in this process that failed, and the first error.
    failed_in_logs: (usize, Option<String>),
}

impl Column {
    /// What went wrong at this N, for the notes; `None` when nothing did.
    fn problems(&self, runs: usize) -> Option<String> {
        let mut said = Vec::new();
        if self.short_lists.0 > 0 {
            said.push(format!(
                "`list()` missed executions in {} of {runs} calls (fewest: {} of {})",
                self.short_lists.0,
                self.short_lists.1,
                self.n + 1
            ));
        }
        if self.short_ps.0 > 0 {
            said.push(format!(
                "`fcexec ps -a` missed executions in {} of {runs} runs (fewest: {} of {})",
                self.short_ps.0,
                self.short_ps.1,
                self.n + 1
            ));
        }
        if self.long_ps.0 > 0 {
            said.push(format!(
                "`fcexec ps` listed finished executions in {} of {runs} runs (most: {})",
                self.long_ps.0, self.long_ps.1
            ));
        }
        if let (k @ 1.., Some(e)) = (self.failed_in_logs.0, &self.failed_in_logs.1) {
            said.push(format!("`logs(id)` failed {k} of {runs} times ({e:.200})"));
        }
        if let (k @ 1.., Some(e)) = (self.failed_logs.0, &self.failed_logs.1) {
            said.push(format!(
                "`fcexec logs ID` failed {k} of {runs} times ({e:.200})"
            ));
        }
        (!said.is_empty()).then(|| format!("history, N={}: {}", self.n, said.join("; ")))
    }
}

/// Section H for each N of `sizes` (ascending), `runs` samples each.
pub async fn history(
    ctx: &Arc<Ctx>,
    sizes: &[usize],
    runs: usize,
    cli: Option<&CliBin>,
) -> Result<(), String> {
    eprintln!("H: history of {sizes:?} finished executions, {runs} runs each");
    let roots = Roots {
        run: ctx.dir.join("h"),
        data: ctx.dir.join("h-data"),
    };
    let (template, real) = seed(ctx, &roots).await?;
    let dir = roots.data.join(EXECUTOR);
    let mut columns = Vec::new();
    let mut have = 0;
    for &n in sizes {
        let began = Instant::now();
        let (t, d) = (template.clone(), dir.clone());
        tokio::task::spawn_blocking(move || t.stamp(&d, have, n.max(have)))
            .await
            .map_err(|e| e.to_string())??;
        // Written back before measuring: otherwise a run's durable record
        // save waits for the copies' writeback in the same journal.
        let _ = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await;
        eprintln!(
            "H: N={n}: copies written and synced in {:.1} s",
            began.elapsed().as_secs_f64()
        );
        have = have.max(n);
        let column = measure(ctx, &roots, &real, n, runs, cli).await?;
        if let Some(problems) = column.problems(runs) {
            eprintln!("H: {problems}");
            ctx.report.lock().unwrap().notes.push(problems);
        }
        columns.push(column);
    }
    for root in [roots.run, roots.data] {
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(root)).await;
        if !matches!(removed, Ok(Ok(()))) {
            eprintln!("H: could not remove the history: {removed:?}");
        }
    }
    let mut report = ctx.report.lock().unwrap();
    report.history = table(&columns);
    report.notes.push(format!(
        "history: each copy holds {} (the one-line job's execution, ended)",
        template.names().join(", ")
    ));
    Ok(())
}

/// The two trees of the history's executor.
struct Roots {
    /// Runtime tree (`--state-dir`): lock, sockets, live VMs' files.
    run: PathBuf,
    /// Data tree (`--data-dir`): records and output.
    data: PathBuf,
}

/// One real execution of the one-line job, kept: its files and its id.
async fn seed(ctx: &Ctx, roots: &Roots) -> Result<(Arc<Template>, String), String> {
    let executor = open(ctx, roots).await?;
    let request = ctx.request_default("real", &hi_job());
    let result = tokio::time::timeout(RUN_LIMIT, executor.run(&request)).await;
    check_output(result, HI)?;
    executor.shutdown().await;
    let dir = executor.state_dir().join(&request.execution_id);
    drop(executor);
    Ok((Arc::new(Template::read(&dir)?), request.execution_id))
}

async fn open(ctx: &Ctx, roots: &Roots) -> Result<Executor, String> {
    let config = fcexec::ExecutorConfig {
        state_root: Some(roots.run.clone()),
        data_root: Some(roots.data.clone()),
        ..ctx.executor_config("h")
    };
    Executor::new(EXECUTOR, config)
        .await
        .map_err(|e| format!("Executor::new ({EXECUTOR}): {e}"))
}

/// Every measurement at one N.
async fn measure(
    ctx: &Ctx,
    roots: &Roots,
    real: &str,
    n: usize,
    runs: usize,
    cli: Option<&CliBin>,
) -> Result<Column, String> {
    let mut c = Column {
        n,
        ..Column::default()
    };
    for _ in 0..runs {
        let heap = procfs::heap_in_use().unwrap_or(0);
        let began = Instant::now();
        let executor = open(ctx, roots).await?;
        c.new.push(began.elapsed());
        c.heap
            .push(procfs::heap_in_use().unwrap_or(0) as f64 / 1024.0 - heap as f64 / 1024.0);
        let began = Instant::now();
        let listed = executor.list().len();
        c.list.push(began.elapsed());
        c.heap_listed
            .push(procfs::heap_in_use().unwrap_or(0) as f64 / 1024.0 - heap as f64 / 1024.0);
        // A short answer is a finding, not the end of the section: right
        // after start-up the background loader may hold a batch that
        // `list()` neither sees nor waits for.
        if listed != n + 1 {
            let fewest = if c.short_lists.0 == 0 {
                listed
            } else {
                c.short_lists.1.min(listed)
            };
            c.short_lists = (c.short_lists.0 + 1, fewest);
        }
        let began = Instant::now();
        let logs = match executor.logs(real, LogOptions::default()) {
            Ok(logs) => Some(logs.collect().await.map_err(|e| e.to_string())?),
            // Counted, not fatal: the background loader may hold the id.
            Err(e) => {
                c.failed_in_logs.0 += 1;
                c.failed_in_logs.1.get_or_insert(e.to_string());
                None
            }
        };
        if let Some((out, _)) = logs {
            c.logs.push(began.elapsed());
            if out != HI.as_bytes() {
                return Err(format!("logs({real}) gave {out:?}"));
            }
        }
        let request = ctx.request_default("hr", &hi_job());
        let began = Instant::now();
        let result = tokio::time::timeout(RUN_LIMIT, executor.run(&request)).await;
        c.run.push(began.elapsed());
        check_output(result, HI)?;
        executor
            .remove(&request.execution_id, REMOVE_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        executor.shutdown().await;
    }
    if let Some(cli) = cli {
        let out = ctx.dir.join("h-cli.out");
        let greeting = format!("{}\n", test_guest::GREETING);
        let data = roots
            .data
            .to_str()
            .ok_or("the bench directory is not UTF-8")?;
        let base = ["--data-dir", data, "--executor", EXECUTOR];
        let rows = |out: &Path| {
            std::fs::read_to_string(out)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        let root = roots.run.as_path();
        for i in 0..runs {
            for k in 0..4 {
                match (i + k) % 4 {
                    0 => {
                        let ps = cli.run(root, &args(&base, &["ps"]), &out, |_| true).await?;
                        // The header only: nothing is live.
                        let listed = rows(&out).saturating_sub(1);
                        if listed != 0 {
                            c.long_ps = (c.long_ps.0 + 1, c.long_ps.1.max(listed));
                        }
                        c.ps.push(ps);
                    }
                    1 => {
                        let ps = cli
                            .run(root, &args(&base, &["ps", "-a"]), &out, |_| true)
                            .await?;
                        // The header, the real execution, the copies.
                        let listed = rows(&out).saturating_sub(1);
                        if listed != n + 1 {
                            let fewest = match c.short_ps.0 {
                                0 => listed,
                                _ => c.short_ps.1.min(listed),
                            };
                            c.short_ps = (c.short_ps.0 + 1, fewest);
                        }
                        c.ps_all.push(ps);
                    }
                    2 => match cli
                        .run(root, &args(&base, &["logs", real]), &out, |s| s == HI)
                        .await
                    {
                        Ok(p) => c.cli_logs.push(p),
                        Err(e) => {
                            c.failed_logs.0 += 1;
                            c.failed_logs.1.get_or_insert(e);
                        }
                    },
                    _ => {
                        let run = cli
                            .run(root, &args(&base, &["run", "--id", CLI_RUN]), &out, |s| {
                                s == greeting
                            })
                            .await;
                        remove_cli_runs(&roots.run.join(EXECUTOR));
                        remove_cli_runs(&roots.data.join(EXECUTOR));
                        c.cli_run.push(run?);
                    }
                }
            }
        }
    }
    Ok(c)
}

/// `base`, then `rest`: one command line.
fn args<'a>(base: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    [base, rest].concat()
}

/// Deletes the execution `fcexec run` left ([`CLI_RUN`]) under `dir`.
fn remove_cli_runs(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(CLI_RUN));
}

/// The table: one column per N, then each N's ratio to the first, then the
/// cost added per 1,000 finished executions (first to last N).
fn table(columns: &[Column]) -> Table {
    let mut header = vec!["measurement (median)".to_string()];
    header.extend(columns.iter().map(|c| format!("N={}", c.n)));
    header.extend(
        columns
            .iter()
            .skip(1)
            .map(|c| format!("N={} / N={}", c.n, columns[0].n)),
    );
    header.push("added per 1,000 finished".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    let row =
        |t: &mut Table, name: &str, value: &dyn Fn(&Column) -> f64, fmt: &dyn Fn(f64) -> String| {
            let values: Vec<f64> = columns.iter().map(value).collect();
            if values.iter().all(|v| *v == 0.0) {
                return;
            }
            let mut cells = vec![name.to_string()];
            cells.extend(values.iter().map(|v| fmt(*v)));
            cells.extend(values.iter().skip(1).map(|v| ratio(*v, values[0])));
            let (first, last) = (&columns[0], &columns[columns.len() - 1]);
            let slope = if last.n > first.n {
                let per =
                    (values[values.len() - 1] - values[0]) / (last.n - first.n) as f64 * 1000.0;
                fmt(per)
            } else {
                String::new()
            };
            cells.push(slope);
            t.row(&cells);
        };
    let d = |v: f64| ms2(Duration::from_secs_f64(v.max(0.0) / 1e3));
    let med = |v: &[Duration]| summarize(v).p50.as_secs_f64() * 1e3;
    let wall = |v: &[Proc]| med(&v.iter().map(|p| p.wall).collect::<Vec<_>>());
    let cpu = |v: &[Proc]| med(&v.iter().map(|p| p.cpu.total()).collect::<Vec<_>>());
    let rss = |v: &[Proc]| {
        let mut r: Vec<f64> = v.iter().map(|p| p.max_rss_kib as f64).collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    };
    let median = |v: &[f64]| {
        let mut h = v.to_vec();
        h.sort_by(f64::total_cmp);
        h.get(h.len() / 2).copied().unwrap_or(0.0)
    };
    row(
        &mut t,
        "`Executor::new` (lock, version remembered, scan of the runtime tree)",
        &|c| med(&c.new),
        &d,
    );
    row(
        &mut t,
        "  heap it holds afterwards (mallinfo2)",
        &|c| median(&c.heap),
        &|v| kib(v),
    );
    row(
        &mut t,
        "`list()` (reads every finished execution: O(N) by design)",
        &|c| med(&c.list),
        &d,
    );
    row(
        &mut t,
        "  heap the executor holds after it (mallinfo2)",
        &|c| median(&c.heap_listed),
        &|v| kib(v),
    );
    row(
        &mut t,
        "`logs(id)` of one ended execution, read to the end",
        &|c| med(&c.logs),
        &d,
    );
    row(
        &mut t,
        "`run` (one-line job), in this process",
        &|c| med(&c.run),
        &d,
    );
    row(
        &mut t,
        "`fcexec ps` process (live ones): wall",
        &|c| wall(&c.ps),
        &d,
    );
    row(&mut t, "  CPU (user+sys, wait4)", &|c| cpu(&c.ps), &d);
    row(&mut t, "  max RSS", &|c| rss(&c.ps), &|v| kib(v));
    row(
        &mut t,
        "`fcexec ps -a` process (all: O(N) by design): wall",
        &|c| wall(&c.ps_all),
        &d,
    );
    row(&mut t, "  CPU (user+sys, wait4)", &|c| cpu(&c.ps_all), &d);
    row(&mut t, "  max RSS", &|c| rss(&c.ps_all), &|v| kib(v));
    row(
        &mut t,
        "`fcexec logs ID` process: wall",
        &|c| wall(&c.cli_logs),
        &d,
    );
    row(&mut t, "  CPU (user+sys, wait4)", &|c| cpu(&c.cli_logs), &d);
    row(
        &mut t,
        "`fcexec run` process (demo guest): wall",
        &|c| wall(&c.cli_run),
        &d,
    );
    row(
        &mut t,
        "  CPU (user+sys, wait4; with the VMM's)",
        &|c| cpu(&c.cli_run),
        &d,
    );
    t
}

fn ratio(v: f64, base: f64) -> String {
    if base == 0.0 {
        "-".into()
    } else {
        format!("{:.2}", v / base)
    }
}
