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
    /// Sections to run (`FCEXEC_BENCH_SECTIONS`, e.g. `1,B`); empty: all.
    pub sections: Vec<String>,
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
        let concurrency = std::env::var("FCEXEC_BENCH_CONCURRENCY")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .filter(|&n| n > 0)
                    .collect::<Vec<usize>>()
            })
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
