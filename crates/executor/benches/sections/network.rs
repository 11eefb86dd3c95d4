//! Section N: one execution end to end with a network (its namespace, veth,
//! TAP, addresses, routes and rules made before the VMM starts and removed
//! when it ends) vs the same execution without, interleaved A/B. Skipped
//! when this host cannot network executions (not root, no nftables).

use std::time::Instant;

use crate::support::context::{check_output, hi_job, remove, Ctx, BASELINE, HI, RUN_LIMIT};
use crate::support::stats::{dratio, ms, summarize};

/// Section N: networked vs plain `run`, interleaved, alternating which goes first.
pub async fn network(ctx: &Ctx, pairs: usize) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("N: skipped: networking needs root");
        return Ok(());
    }
    eprintln!("N: networked vs plain, {pairs} interleaved pairs");
    let (mut plain, mut networked) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        for with_network in [i % 2 == 0, i % 2 == 1] {
            let mut request = ctx.request_over("n", &hi_job(), BASELINE);
            if with_network {
                if let Some(spec) = request.engine_spec.as_mut() {
                    spec.params
                        .insert("network".into(), serde_json::json!(true));
                }
            }
            let started = Instant::now();
            let result = tokio::time::timeout(RUN_LIMIT, ctx.executor.run(&request)).await;
            let took = started.elapsed();
            let checked = check_output(result, HI);
            remove(ctx, &request.execution_id).await;
            checked.map_err(|e| format!("N: {e}"))?;
            match with_network {
                true => networked.push(took),
                false => plain.push(took),
            }
        }
    }
    let (n, p) = (summarize(&networked), summarize(&plain));
    ctx.add(&[
        "N".into(),
        format!("end to end with a network vs without: median ({pairs} A/B pairs)"),
        ms(n.p50),
        ms(p.p50),
        format!("{:.2}", dratio(n.p50, p.p50)),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "N".into(),
        "with a network vs without: p95".into(),
        ms(n.p95),
        ms(p.p95),
        format!("{:.2}", dratio(n.p95, p.p95)),
        String::new(),
        String::new(),
    ]);
    Ok(())
}
