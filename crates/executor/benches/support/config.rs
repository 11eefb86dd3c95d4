//! The bench's counts and switches, read from the environment
//! (`FCEXEC_BENCH_*`, listed in `benches/executor.rs`).

/// Counts and switches, from the environment.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub quick: bool,
    pub pairs: usize,
    pub first: usize,
    pub cpu_runs: usize,
    pub concurrency: Vec<usize>,
    pub live: usize,
    pub breakdown: usize,
    pub breakdown_at_once: usize,
    pub endurance: bool,
    pub endurance_runs: usize,
    pub endurance_batch: usize,
    pub workers: usize,
    /// Rounds of section C's A/B (`fcexec run` and two raw variants).
    pub cli_pairs: usize,
    /// Rounds of section C's anatomy.
    pub cli_runs: usize,
    /// Section H's numbers of finished executions, ascending.
    pub history: Vec<usize>,
    /// Samples of each of section H's measurements per N.
    pub history_runs: usize,
    /// Section T: runs of each bulk transfer (vsock and serial).
    pub throughput_runs: usize,
    /// Section T: bytes of stdout of the vsock (protocol 2) bulk job.
    pub vsock_bulk: u64,
    /// Section T: bytes of stdout of the serial (protocol 1) bulk job.
    pub serial_bulk: u64,
    /// Section T: A/B pairs of the one-line job, vsock vs serial.
    pub transport_pairs: usize,
    /// Section J: A/B pairs, jailed vs unjailed.
    pub jail_pairs: usize,
    /// Section T: runs of the ticking job, each transport.
    pub follow_runs: usize,
    /// Sections to run (`FCEXEC_BENCH_SECTIONS`, e.g. `1,B`); empty: all.
    pub sections: Vec<String>,
}

/// A comma-separated list of numbers, e.g. `1,10,50`; `None` when unset or empty.
fn env_list(name: &str) -> Option<Vec<usize>> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|v| !v.is_empty())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name)
        .ok()
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

impl Cfg {
    pub fn from_env() -> Cfg {
        let quick = env_flag("FCEXEC_BENCH_QUICK").unwrap_or(false);
        let q = |full: usize, small: usize| if quick { small } else { full };
        let concurrency = env_list("FCEXEC_BENCH_CONCURRENCY")
            .map(|v| v.into_iter().filter(|&n| n > 0).collect::<Vec<usize>>())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                if quick {
                    vec![1, 10, 50]
                } else {
                    vec![1, 10, 50, 200]
                }
            });
        Cfg {
            quick,
            pairs: env_usize("FCEXEC_BENCH_PAIRS", q(30, 8)).max(1),
            first: env_usize("FCEXEC_BENCH_FIRST", q(30, 8)).max(1),
            cpu_runs: env_usize("FCEXEC_BENCH_CPU_RUNS", q(50, 10)).max(1),
            concurrency,
            live: env_usize("FCEXEC_BENCH_LIVE", q(200, 50)).max(1),
            breakdown: env_usize("FCEXEC_BENCH_BREAKDOWN", q(30, 8)).max(1),
            breakdown_at_once: env_usize("FCEXEC_BENCH_BREAKDOWN_AT_ONCE", q(200, 50)),
            endurance: env_flag("FCEXEC_BENCH_ENDURANCE").unwrap_or(!quick),
            endurance_runs: env_usize("FCEXEC_BENCH_ENDURANCE_RUNS", 1000),
            endurance_batch: env_usize("FCEXEC_BENCH_ENDURANCE_BATCH", 200),
            workers: env_usize("FCEXEC_BENCH_WORKERS", 2).max(1),
            cli_pairs: env_usize("FCEXEC_BENCH_CLI_PAIRS", q(30, 8)).max(1),
            cli_runs: env_usize("FCEXEC_BENCH_CLI_RUNS", q(15, 5)).max(1),
            history: {
                let mut sizes = env_list("FCEXEC_BENCH_HISTORY").unwrap_or_else(|| {
                    if quick {
                        vec![0, 1000]
                    } else {
                        vec![0, 1000, 10_000]
                    }
                });
                sizes.sort_unstable();
                sizes.dedup();
                sizes
            },
            history_runs: env_usize("FCEXEC_BENCH_HISTORY_RUNS", q(7, 3)).max(1),
            throughput_runs: env_usize("FCEXEC_BENCH_THROUGHPUT_RUNS", q(5, 3)).max(1),
            vsock_bulk: env_usize("FCEXEC_BENCH_VSOCK_BULK", 64 << 20).max(1) as u64,
            serial_bulk: env_usize("FCEXEC_BENCH_SERIAL_BULK", q(256 << 10, 64 << 10)).max(1)
                as u64,
            transport_pairs: env_usize("FCEXEC_BENCH_TRANSPORT_PAIRS", q(10, 4)).max(1),
            jail_pairs: env_usize("FCEXEC_BENCH_JAIL_PAIRS", q(30, 8)).max(1),
            follow_runs: env_usize("FCEXEC_BENCH_FOLLOW_RUNS", q(3, 1)).max(1),
            sections: std::env::var("FCEXEC_BENCH_SECTIONS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_uppercase())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// True when section `name` should run.
    pub fn wants(&self, name: &str) -> bool {
        if name == "E" && !self.sections.iter().any(|s| s == "E") && !self.endurance {
            return false;
        }
        self.sections.is_empty() || self.sections.iter().any(|s| s == name)
    }
}
