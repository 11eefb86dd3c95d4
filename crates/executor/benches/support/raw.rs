//! The baseline: the raw VMM, `firecracker --no-api --config-file`, booting
//! exactly the VM the executor would boot for the same request.
//!
//! The configuration comes from the executor's own planner ([`VmPlan`]): same
//! kernel, command line (`console=ttyS0 fcx.job=...`), machine size, root
//! drive and agent-mode config drive with a key. It is written once; every
//! run only creates its serial and log files, spawns the VMM, and waits for
//! it to exit. The output is decoded and checked afterwards, outside the
//! timed part (except in [`RawMode::FirstOutput`], which decodes as it reads).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fcexec::plan::VmPlan;
use fcexec::state_dir::StateDir;
use fcexec::{Event, ExecutionRequest, FrameDecoder, HostLimits, Key};
use tokio::io::AsyncReadExt;

/// The longest a raw run may take before it counts as failed (and is killed).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How a raw run is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMode {
    /// `--no-api`, serial output to a file: the baseline of end-to-end runs.
    NoApi,
    /// `--no-api`, serial output to a pipe decoded as it arrives, to time the
    /// first stdout bytes.
    FirstOutput,
    /// `--api-sock <path>` but no API call: what the API socket alone costs the VMM.
    ApiSocket,
}

/// One raw run.
#[derive(Debug, Clone, Default)]
pub struct RawRun {
    /// Spawn to the VMM reaped.
    pub total: Duration,
    /// When it was spawned, seconds since midnight UTC (as [`log_times`]).
    pub spawned_at: f64,
    /// Spawn to the first decoded stdout bytes ([`RawMode::FirstOutput`]).
    pub first_stdout: Option<Duration>,
    /// Bytes of serial output (frames and console text).
    pub serial_bytes: usize,
    /// The VMM's first and last log lines' times (see [`log_times`]).
    pub vmm_times: Option<(f64, f64)>,
    /// Why the run failed: the VMM failed, or the output was not the expected one.
    pub error: Option<String>,
}

/// A prepared raw VMM configuration.
pub struct RawVmm {
    firecracker: PathBuf,
    config: PathBuf,
    runs: PathBuf,
    key: Key,
    expected: Vec<u8>,
    next: AtomicU64,
    _state: StateDir,
}

impl RawVmm {
    /// Plans the VM of `request` with the executor's planner under `root`;
    /// each run must print `expected` on stdout and exit 0.
    pub fn prepare(
        root: &Path,
        firecracker: &Path,
        request: &ExecutionRequest,
        host: &HostLimits,
        expected: &[u8],
    ) -> Result<RawVmm, String> {
        let valid = fcexec::validate(request, host).map_err(|e| e.to_string())?;
        let state = StateDir::open(root, root, "raw").map_err(|e| e.to_string())?;
        let paths = state.execution("template").map_err(|e| e.to_string())?;
        paths.create().map_err(|e| e.to_string())?;
        let key = Key::generate().map_err(|e| e.to_string())?;
        let settings = fcexec::plan::PlanSettings {
            heartbeat: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        VmPlan::new(&valid, &paths, Some(key.clone()), &settings)
            .write(&paths)
            .map_err(|e| e.to_string())?;
        let runs = state.path().join("runs");
        std::fs::create_dir_all(&runs).map_err(|e| e.to_string())?;
        Ok(RawVmm {
            firecracker: firecracker.to_path_buf(),
            config: paths.vm_config(),
            runs,
            key,
            expected: expected.to_vec(),
            next: AtomicU64::new(0),
            _state: state,
        })
    }

    /// Boots the VM once and waits for the VMM to exit.
    pub async fn run(&self, mode: RawMode) -> RawRun {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.runs.join(format!("r{i}"));
        if let Err(e) = std::fs::create_dir(&dir) {
            return RawRun {
                error: Some(format!("cannot create {}: {e}", dir.display())),
                ..RawRun::default()
            };
        }
        let run = tokio::time::timeout(RUN_LIMIT, self.run_in(&dir, i, mode)).await;
        let result = match run {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => RawRun {
                error: Some(e),
                ..RawRun::default()
            },
            Err(_) => RawRun {
                total: RUN_LIMIT,
                error: Some(format!("the VMM ran longer than {RUN_LIMIT:?}")),
                ..RawRun::default()
            },
        };
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn run_in(&self, dir: &Path, i: u64, mode: RawMode) -> Result<RawRun, String> {
        let serial_path = dir.join("serial.log");
        let log_path = dir.join("firecracker.log");
        let started = Instant::now();
        let spawned_at = second_of_day(std::time::SystemTime::now());
        let open = |p: &Path| {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot create {}: {e}", p.display()))
        };
        open(&log_path)?;
        let mut cmd = tokio::process::Command::new(&self.firecracker);
        cmd.arg("--id").arg(format!("raw{i}"));
        match mode {
            RawMode::ApiSocket => cmd.arg("--api-sock").arg(dir.join("api.sock")),
            RawMode::NoApi | RawMode::FirstOutput => cmd.arg("--no-api"),
        };
        cmd.arg("--config-file")
            .arg(&self.config)
            .arg("--log-path")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if mode == RawMode::FirstOutput {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(open(&serial_path)?);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot spawn: {e}"))?;
        let mut decoded = Decoded::new(self.key.clone(), started);
        let mut serial_bytes = 0;
        if let Some(mut pipe) = child.stdout.take() {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = pipe.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                serial_bytes += n;
                decoded.push(&buf[..n]);
            }
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        let total = started.elapsed();
        let vmm_times = log_times(&log_path);
        if mode != RawMode::FirstOutput {
            let serial = std::fs::read(&serial_path).map_err(|e| e.to_string())?;
            serial_bytes = serial.len();
            decoded.push(&serial);
        }
        decoded.finish();
        let error = if !status.success() {
            Some(format!(
                "the VMM exited with {status}; its log ends with: {}",
                firecracker_api::exit::log_tail(&log_path, 3)
            ))
        } else if decoded.exit != Some(0) || decoded.stdout != self.expected {
            Some(format!(
                "unexpected guest output: exit {:?}, stdout {:?}",
                decoded.exit,
                String::from_utf8_lossy(&decoded.stdout)
            ))
        } else {
            None
        };
        Ok(RawRun {
            total,
            spawned_at,
            first_stdout: decoded
                .first_stdout
                .filter(|_| mode == RawMode::FirstOutput),
            serial_bytes,
            vmm_times,
            error,
        })
    }
}

/// The workload's stdout and exit code as decoded from serial output.
struct Decoded {
    decoder: FrameDecoder,
    started: Instant,
    stdout: Vec<u8>,
    exit: Option<u8>,
    first_stdout: Option<Duration>,
}

impl Decoded {
    fn new(key: Key, started: Instant) -> Decoded {
        Decoded {
            decoder: FrameDecoder::new(key),
            started,
            stdout: Vec::new(),
            exit: None,
            first_stdout: None,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let events = self.decoder.push(bytes);
        self.apply(events);
    }

    fn finish(&mut self) {
        let events = self.decoder.finish();
        self.apply(events);
    }

    fn apply(&mut self, events: Vec<Event>) {
        let started = self.started;
        for event in events {
            match event {
                Event::Stdout(data) => {
                    self.first_stdout.get_or_insert_with(|| started.elapsed());
                    self.stdout.extend(data);
                }
                Event::Exit(code) => self.exit = Some(code),
                _ => {}
            }
        }
    }
}

/// Seconds since midnight UTC of `at`.
pub fn second_of_day(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86_400.0)
        .unwrap_or(0.0)
}

/// The times (seconds since midnight UTC) of a Firecracker log's first line
/// (the VMM started: "Running Firecracker") and last line (it exited).
pub fn log_times(path: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let stamp = |line: &str| -> Option<f64> {
        // 2026-11-28T03:42:16.469248220 [id:main] ...
        let time = line.get(11..)?.split_whitespace().next()?;
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let first = stamp(text.lines().next()?)?;
    let last = stamp(text.lines().rev().find(|l| !l.trim().is_empty())?)?;
    Some((first, last))
}

/// `to - from` in seconds of the day, across midnight.
pub fn day_delta(from: f64, to: f64) -> Duration {
    let mut d = to - from;
    if d < -43_200.0 {
        d += 86_400.0;
    }
    Duration::from_secs_f64(d.max(0.0))
}
