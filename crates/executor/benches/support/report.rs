//! The tables printed at the end (main, breakdown, throughput, endurance,
//! CLI, history, notes) and the formatting of their cells.

use std::time::Duration;

use super::config::Cfg;
use super::context::Ctx;
use super::stats::Summary;
use super::table::Table;

/// The tables printed at the end.
pub struct Report {
    pub main: Table,
    pub breakdown: Table,
    /// Section T: throughput and the cost of the vsock path.
    pub throughput: Table,
    pub endurance: Table,
    /// Section C: where `fcexec run`'s time goes.
    pub cli: Table,
    /// Section H: the costs with N finished executions.
    pub history: Table,
    pub notes: Vec<String>,
    /// Section 1's executor and raw summaries, for the breakdown.
    pub e2e: Option<(Summary, Summary)>,
}

impl Report {
    pub fn new() -> Report {
        Report {
            main: Table::new(&[
                "#",
                "measurement",
                "executor",
                "raw VMM",
                "exec/raw",
                "target",
                "result",
            ]),
            breakdown: Table::default(),
            throughput: Table::new(&[
                "#",
                "measurement",
                "vsock (protocol 2, default)",
                "serial (protocol 1)",
                "vsock/serial",
                "target",
                "result",
            ]),
            endurance: Table::default(),
            cli: Table::default(),
            history: Table::default(),
            notes: Vec::new(),
            e2e: None,
        }
    }

    pub fn print(&self, cfg: &Cfg, ctx: &Ctx) {
        let version = std::process::Command::new(&ctx.firecracker)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_default();
        println!();
        println!(
            "fcexec executor benchmark: {version}; {} host CPUs; {} tokio workers; kernel {}; source {}{}",
            ctx.host.cpus,
            cfg.workers,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            source_revision(),
            if cfg.quick {
                "; QUICK (small counts)"
            } else {
                ""
            }
        );
        println!();
        if !self.main.is_empty() {
            print!("{}", self.main.render());
            println!();
        }
        if !self.breakdown.is_empty() {
            println!(
                "Where one launch's time goes (the executor's steps, timed by its `LaunchHook`):"
            );
            println!();
            print!("{}", self.breakdown.render());
            println!();
        }
        if !self.throughput.is_empty() {
            println!("Throughput and the cost of the vsock path (section T):");
            println!();
            print!("{}", self.throughput.render());
            println!();
        }
        if !self.endurance.is_empty() {
            println!("Endurance:");
            println!();
            print!("{}", self.endurance.render());
            println!();
        }
        if !self.cli.is_empty() {
            println!("Where `fcexec run`'s time goes (section C):");
            println!();
            print!("{}", self.cli.render());
            println!();
        }
        if !self.history.is_empty() {
            println!("With N finished executions in the state directory (section H):");
            println!();
            print!("{}", self.history.render());
            println!();
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

/// The git commit measured, `+changes` when the executor's or the API
/// crate's sources differ from it.
fn source_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let changed = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "../firecracker-api/src",
    ])
    .is_some_and(|s| !s.is_empty());
    format!("{head}{}", if changed { "+changes" } else { "" })
}

pub fn verdict(ok: bool) -> String {
    if ok { "met" } else { "MISSED" }.to_string()
}

pub fn kib(v: f64) -> String {
    if v.abs() >= 10.0 * 1024.0 {
        format!("{:.1} MiB", v / 1024.0)
    } else {
        format!("{v:.0} KiB")
    }
}

pub fn pair(a: Duration, b: Duration) -> String {
    format!(
        "{:.1} / {:.1} ms",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3
    )
}
