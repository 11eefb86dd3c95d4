//! Section 2: `start()` call to the first stdout chunk of `logs(follow)`, vs
//! the raw VMM's first decoded stdout frame.

use std::time::{Duration, Instant};

use fcexec::{LogOptions, LogStream};

use crate::support::context::{hi_job, remove, Ctx, HI, RUN_LIMIT};
use crate::support::raw::RawMode;
use crate::support::report::pair;
use crate::support::stats::{dratio, summarize};

/// Section 2: `start()` call to the first stdout chunk of `logs(follow)`.
pub async fn first_output(ctx: &Ctx, runs: usize) -> Result<(), String> {
    eprintln!("2: first output, {runs} runs each");
    let (mut started, mut first, mut raw_first) = (Vec::new(), Vec::new(), Vec::new());
    let mut already = 0;
    for i in 0..runs {
        for side in [i % 2, 1 - i % 2] {
            if side == 1 {
                let run = ctx.raw.run(RawMode::FirstOutput).await;
                match (run.error, run.first_stdout) {
                    (None, Some(d)) => raw_first.push(d),
                    (e, _) => eprintln!("raw first-output run failed: {e:?}"),
                }
                continue;
            }
            let request = ctx.request("f", &hi_job());
            let id = request.execution_id.clone();
            let t0 = Instant::now();
            let measured = async {
                ctx.executor
                    .start(&request)
                    .await
                    .map_err(|e| e.to_string())?;
                let returned = t0.elapsed();
                let mut logs = ctx
                    .executor
                    .logs(
                        &id,
                        LogOptions {
                            follow: true,
                            tail: None,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                loop {
                    match logs.next().await {
                        Some(Ok(chunk)) if chunk.stream == LogStream::Stdout => {
                            return Ok::<_, String>((returned, t0.elapsed(), chunk.data));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("the logs ended without stdout".into()),
                    }
                }
            };
            match tokio::time::timeout(RUN_LIMIT, measured).await {
                Ok(Ok((returned, at, data))) => {
                    started.push(returned);
                    first.push(at);
                    // The whole line in the first chunk means it was already
                    // stored when `logs` was opened.
                    if data == HI.as_bytes() && ctx.executor.status(&id).is_ok() {
                        already +=
                            usize::from(at.saturating_sub(returned) < Duration::from_micros(300));
                    }
                }
                Ok(Err(e)) => eprintln!("first-output run failed: {e}"),
                Err(_) => eprintln!("first-output run timed out"),
            }
            let _ = tokio::time::timeout(RUN_LIMIT, ctx.executor.wait(&id)).await;
            remove(ctx, &id).await;
        }
    }
    let (s, f, r) = (
        summarize(&started),
        summarize(&first),
        summarize(&raw_first),
    );
    ctx.add(&[
        "2".into(),
        format!(
            "`start()` call → it returns (VM running): p50 / p95 (n={})",
            s.n
        ),
        pair(s.p50, s.p95),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "2".into(),
        format!(
            "`start()` call → first stdout chunk of `logs(follow)`: p50 / p95 (n={}; raw: spawn → first decoded stdout frame on a pipe)",
            f.n
        ),
        pair(f.p50, f.p95),
        pair(r.p50, r.p95),
        format!("{:.2}", dratio(f.p50, r.p50)),
        String::new(),
        String::new(),
    ]);
    ctx.report.lock().unwrap().notes.push(format!(
        "section 2: in {already} of {} executor runs the first chunk came within 0.3 ms of `start()` returning, i.e. the guest had printed before `start()` returned",
        f.n
    ));
    Ok(())
}
