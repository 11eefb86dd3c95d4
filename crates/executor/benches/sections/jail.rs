//! Section J: what jailing costs. A/B pairs of one `run` (print a line,
//! exit 0) on a jailed executor and on an unjailed one (both fresh, beside
//! the bench's own), interleaved: end-to-end time and CPU (this process,
//! which runs the executor, plus its reaped children: the jailer and the
//! VMM), median of each side, as a ratio. Needs root (the jailer does).

use std::time::{Duration, Instant};

use fcexec::{Executor, ExecutorConfig};

use crate::support::context::{check_output, hi_job, Ctx, HI, RUN_LIMIT};
use crate::support::procfs;
use crate::support::report::verdict;
use crate::support::stats::{dratio, ms, ms2, summarize};

/// The most jailed time (and CPU) per unjailed time that meets the target.
const TARGET: f64 = 1.3;

/// One `run` of the one-line job on `ex`: wall time and CPU.
async fn once(ctx: &Ctx, ex: &Executor) -> Result<(Duration, Duration), String> {
    let request = ctx.request_default("j", &hi_job());
    let (c0, v0) = (procfs::cpu_self(), procfs::cpu_children());
    let start = Instant::now();
    let result = tokio::time::timeout(RUN_LIMIT, ex.run(&request)).await;
    let took = start.elapsed();
    let (c1, v1) = (procfs::cpu_self(), procfs::cpu_children());
    check_output(result, HI)?;
    let _ = ex
        .remove(&request.execution_id, Duration::from_secs(5))
        .await;
    Ok((took, c1.since(c0).total() + v1.since(v0).total()))
}

fn executor_config(ctx: &Ctx, root: &str, jailed: bool) -> ExecutorConfig {
    let mut config = ctx.executor_config(root);
    config.jail.enabled = jailed;
    config
}

pub async fn jail(ctx: &Ctx, pairs: usize) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("J: skipped, jailing needs root");
        return Ok(());
    }
    eprintln!("J: jailed vs unjailed, {pairs} A/B pairs");
    let jailed = Executor::new("bench-jailed", executor_config(ctx, "sj", true))
        .await
        .map_err(|e| format!("jailed executor: {e}"))?;
    let unjailed = Executor::new("bench-unjailed", executor_config(ctx, "su", false))
        .await
        .map_err(|e| format!("unjailed executor: {e}"))?;
    // Warm both up (the first jailed launch creates the cgroup parent).
    for _ in 0..3 {
        once(ctx, &jailed).await?;
        once(ctx, &unjailed).await?;
    }
    let (mut jt, mut jc, mut ut, mut uc) = (vec![], vec![], vec![], vec![]);
    for i in 0..pairs {
        // Alternate which side goes first.
        let order = [(&jailed, true), (&unjailed, false)];
        let order = if i % 2 == 0 {
            order
        } else {
            [order[1], order[0]]
        };
        for (ex, is_jailed) in order {
            let (t, c) = once(ctx, ex).await?;
            if is_jailed {
                jt.push(t);
                jc.push(c);
            } else {
                ut.push(t);
                uc.push(c);
            }
        }
    }
    jailed.cleanup().await.map_err(|e| e.to_string())?;
    unjailed.cleanup().await.map_err(|e| e.to_string())?;
    jailed.shutdown().await;
    unjailed.shutdown().await;
    let (jt, ut, jc, uc) = (
        summarize(&jt),
        summarize(&ut),
        summarize(&jc),
        summarize(&uc),
    );
    let time_ratio = dratio(jt.p50, ut.p50);
    let cpu_ratio = dratio(jc.p50, uc.p50);
    eprintln!(
        "J: time {} vs {} ms ({time_ratio:.2}), CPU {} vs {} ms ({cpu_ratio:.2})",
        ms(jt.p50),
        ms(ut.p50),
        ms2(jc.p50),
        ms2(uc.p50)
    );
    ctx.add(&[
        "J".into(),
        format!("end to end, one `run`: jailed (executor column) vs unjailed (raw column), median of {pairs} A/B pairs"),
        ms(jt.p50),
        ms(ut.p50),
        format!("{time_ratio:.2}"),
        format!("≤ {TARGET}"),
        verdict(time_ratio <= TARGET),
    ]);
    ctx.add(&[
        "J".into(),
        "CPU per `run` (executor process + jailer + VMM): jailed vs unjailed, median".into(),
        ms2(jc.p50),
        ms2(uc.p50),
        format!("{cpu_ratio:.2}"),
        format!("≤ {TARGET}"),
        verdict(cpu_ratio <= TARGET),
    ]);
    ctx.add(&[
        "J".into(),
        "end to end: p95, jailed vs unjailed".into(),
        ms(jt.p95),
        ms(ut.p95),
        format!("{:.2}", dratio(jt.p95, ut.p95)),
        String::new(),
        String::new(),
    ]);
    Ok(())
}
