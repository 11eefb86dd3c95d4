//! Section 1: one execution end to end, the executor's `run` vs the raw VMM,
//! interleaved A/B.

use crate::support::context::{exec_once, hi_job, Ctx};
use crate::support::raw::RawMode;
use crate::support::report::verdict;
use crate::support::stats::{dratio, ms, summarize};

/// Section 1: `run` vs the raw VMM, interleaved, alternating which goes first.
pub async fn end_to_end(ctx: &Ctx, pairs: usize) -> Result<(), String> {
    eprintln!("1: end to end, {pairs} interleaved pairs");
    let (mut exec, mut raw) = (Vec::new(), Vec::new());
    let (mut exec_fail, mut raw_fail) = (0, 0);
    for i in 0..pairs {
        for side in [i % 2, 1 - i % 2] {
            if side == 0 {
                match exec_once(ctx, &hi_job()).await {
                    Ok(d) => exec.push(d),
                    Err(e) => {
                        exec_fail += 1;
                        eprintln!("executor run failed: {e}");
                    }
                }
            } else {
                let run = ctx.raw.run(RawMode::NoApi).await;
                match run.error {
                    None => raw.push(run.total),
                    Some(e) => {
                        raw_fail += 1;
                        eprintln!("raw run failed: {e}");
                    }
                }
            }
        }
    }
    let (e, r) = (summarize(&exec), summarize(&raw));
    let median_ratio = dratio(e.p50, r.p50);
    ctx.add(&[
        "1".into(),
        format!("end to end, one `run` (print a line, exit 0): median ({pairs} A/B pairs)"),
        ms(e.p50),
        ms(r.p50),
        format!("{median_ratio:.2}"),
        "≤ 1.25".into(),
        verdict(median_ratio <= 1.25),
    ]);
    ctx.add(&[
        "1".into(),
        "end to end: p95".into(),
        ms(e.p95),
        ms(r.p95),
        format!("{:.2}", dratio(e.p95, r.p95)),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "1".into(),
        "end to end: failures".into(),
        exec_fail.to_string(),
        raw_fail.to_string(),
        String::new(),
        "0".into(),
        verdict(exec_fail == 0),
    ]);
    ctx.report.lock().unwrap().e2e = Some((e, r));
    Ok(())
}
