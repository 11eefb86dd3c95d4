//! The supervisor with a fake VMM and paused time: the races and limits
//! that are hard to produce on demand with a real one. The same behaviours
//! are tested against the real VMM in `tests/`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::{oneshot, Notify};

use super::*;
use crate::capture::Sink;
use crate::config_drive::Key;
use crate::execution::Snapshot;
use crate::execution_task::{supervise_recovered, TaskContext};
use crate::guest_protocol::{encode_frame, FrameKind};
use crate::launch::Launcher;
use crate::record::RECORD_VERSION;
use crate::registry::{Budget, Registry};
use crate::result::ExecutionStatus;
use crate::spec::Mode;
use crate::state_dir::ExecPaths;

/// What a test does to, and learns from, its fake VMM.
#[derive(Debug, Default)]
struct Control {
    exit: Mutex<Option<VmmExit>>,
    exited: Notify,
    stops: AtomicUsize,
    detached: AtomicBool,
    killed: AtomicBool,
    cleaned: AtomicBool,
    /// A pause that takes this long, so an exit can race it.
    pause_delay: Mutex<Duration>,
    panic_on_wait: AtomicBool,
}

impl Control {
    fn exit(&self, exit: VmmExit) {
        *self.exit.lock().unwrap() = Some(exit);
        self.exited.notify_waiters();
    }
}

struct FakeVm(Arc<Control>);

impl Machine for FakeVm {
    async fn wait(&mut self) -> VmmExit {
        if self.0.panic_on_wait.load(Ordering::SeqCst) {
            panic!("injected supervisor panic");
        }
        loop {
            let notified = self.0.exited.notified();
            if let Some(exit) = *self.0.exit.lock().unwrap() {
                return exit;
            }
            notified.await;
        }
    }

    async fn stop(&mut self, _policy: StopPolicy) -> VmmExit {
        self.0.stops.fetch_add(1, Ordering::SeqCst);
        let mut exit = self.0.exit.lock().unwrap();
        *exit.get_or_insert(VmmExit::Signaled(9))
    }

    async fn pause(&mut self) -> Result<(), String> {
        let delay = *self.0.pause_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), String> {
        Ok(())
    }

    async fn guest_state(&mut self) -> Option<GuestState> {
        Some(GuestState::Running)
    }

    fn detach(self) {
        self.0.detached.store(true, Ordering::SeqCst);
    }

    fn kill(self) {
        self.0.killed.store(true, Ordering::SeqCst);
    }

    fn clean_up(&mut self) {
        self.0.cleaned.store(true, Ordering::SeqCst);
    }
}

/// One supervised execution with a fake VMM.
struct Rig {
    exec: Arc<Execution>,
    control: Arc<Control>,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
    key: Key,
    _dir: tempfile::TempDir,
}

struct Options {
    mode: Mode,
    phase: Phase,
    max_output: u64,
    deadlines: Deadlines,
    serial: Vec<u8>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: Mode::Plain,
            phase: Phase::Running,
            max_output: 1 << 30,
            deadlines: Deadlines::default(),
            serial: Vec::new(),
        }
    }
}

fn record(id: &str, mode: Mode, phase: Phase, key: &Key) -> ExecutionRecord {
    ExecutionRecord {
        version: RECORD_VERSION,
        job_id: "job".into(),
        execution_id: id.into(),
        phase,
        mode,
        transport: crate::spec::Transport::Serial,
        key: Some(key.to_hex()),
        pid: Some(1),
        pid_start_time: Some(1),
        cancel_requested: false,
        outputs: vec![],
        results_dir: None,
        isolation: None,
        created_ms: now_ms(),
        finished_ms: None,
        persist_ms: 0,
        mem_mib: 128,
        timeout_ms: None,
        result: None,
        network: None,
    }
}

/// Starts a supervisor for a fake VMM through the executor's own task
/// guard (`supervise_recovered`), as an execution found at start-up is.
fn rig(options: Options) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let paths = ExecPaths::for_tests(&dir.path().join("e"));
    paths.create().unwrap();
    std::fs::write(paths.serial(), &options.serial).unwrap();
    let key = Key::generate().unwrap();
    let sink = match options.mode {
        Mode::Agent => Sink::agent(key.clone(), &paths.stdout(), &paths.stderr()).unwrap(),
        Mode::Plain => Sink::plain(),
    };
    let capture = Capture::open(&paths.serial(), sink, options.max_output).unwrap();
    let stop = CancellationToken::new();
    let (commands, receiver) = mpsc::channel(8);
    let exec = Arc::new(Execution::new(
        "e".into(),
        "job".into(),
        paths,
        options.mode,
        Snapshot {
            phase: options.phase,
            result: None,
        },
        Some(commands.clone()),
        stop.clone(),
    ));
    let registry = Arc::new(Registry::new(Budget {
        memory_mib: 1024,
        live: 10,
    }));
    registry.insert_recovered(exec.clone(), 128);
    let ctx = TaskContext {
        launcher: Arc::new(Launcher {
            firecracker: "/nonexistent".into(),
            ready_timeout: Duration::from_secs(1),
            max_output: options.max_output,
            slots: tokio::sync::Semaphore::new(1),
            hook: None,
            plan: Default::default(),
            agent_binary: None,
            cache_dir: "/nonexistent".into(),
            image_cache_limit: None,
            agent_initrd: Default::default(),
            networks: Arc::new(crate::network::Networks::new(
                None,
                false,
                std::path::Path::new("/nonexistent"),
            )),
            jail: None,
        }),
        registry,
        settings: Settings {
            stop: StopPolicy::default(),
            after_exit_grace: Duration::from_secs(2),
            heartbeat_timeout: None,
            cancel_grace: Duration::from_secs(1),
        },
        stop: stop.clone(),
    };
    let control = Arc::new(Control::default());
    let record = record("e", options.mode, options.phase, &key);
    let vm = FakeVm(control.clone());
    tokio::spawn(supervise_recovered(
        ctx,
        exec.clone(),
        (Some(vm), record, (capture, None)),
        receiver,
        options.deadlines,
    ));
    Rig {
        exec,
        control,
        commands,
        stop,
        key,
        _dir: dir,
    }
}

impl Rig {
    async fn result(&self) -> Arc<crate::result::ExecutionResult> {
        let mut rx = self.exec.subscribe();
        let snapshot =
            tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.result.is_some()))
                .await
                .expect("no result within a minute of (paused) time")
                .unwrap()
                .clone();
        snapshot.result.unwrap()
    }

    async fn send(
        &self,
        make: fn(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.unwrap();
        answer
            .await
            .unwrap_or_else(|_| Err("the supervisor ended without answering".into()))
    }

    fn frames(&self, frames: &[(FrameKind, &[u8])]) -> Vec<u8> {
        frames
            .iter()
            .enumerate()
            .flat_map(|(seq, (kind, payload))| encode_frame(&self.key, seq as u32, *kind, payload))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_job_times_out() {
    let limit = Duration::from_millis(500);
    let rig = rig(Options {
        deadlines: Deadlines {
            boot: None,
            end: Some((Instant::now() + limit, limit)),
        },
        ..Options::default()
    });
    let result = rig.result().await;
    assert!(
        result.error_msg.contains("timed out after 500ms"),
        "{result:?}"
    );
    assert_eq!(result.exit_code, -1);
    assert_eq!(rig.control.stops.load(Ordering::SeqCst), 1);
    assert!(rig.control.cleaned.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn output_past_the_cap_stops_the_vm_and_keeps_what_was_captured() {
    let rig = rig(Options {
        max_output: 1024,
        serial: vec![b'x'; 4096],
        ..Options::default()
    });
    let result = rig.result().await;
    assert!(result.error_msg.contains("more than 1 KiB"), "{result:?}");
    assert!(result.error_msg.contains("--max-output"), "{result:?}");
    assert_eq!(rig.control.stops.load(Ordering::SeqCst), 1);
    let kept = std::fs::metadata(rig.exec.paths.serial()).unwrap().len();
    assert_eq!(kept, 1024);
}

#[tokio::test(start_paused = true)]
async fn cancel_during_boot_kills_the_vm() {
    let rig = rig(Options {
        phase: Phase::Booting,
        ..Options::default()
    });
    rig.send(Command::Cancel).await.unwrap();
    let result = rig.result().await;
    assert!(result.killed, "{result:?}");
    assert_eq!(rig.exec.phase(), Phase::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_ends_while_a_pause_lands_settles_from_paused() {
    let rig = rig(Options {
        mode: Mode::Agent,
        ..Options::default()
    });
    *rig.control.pause_delay.lock().unwrap() = Duration::from_millis(50);
    let serial = rig.exec.paths.serial();
    let frames = rig.frames(&[(FrameKind::Hello, b"fake"), (FrameKind::Exit, b"0")]);
    let control = rig.control.clone();
    // The exit frame arrives while the pause is being applied.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::fs::write(&serial, frames).unwrap();
        control.exit(VmmExit::Exited(0));
    });
    rig.send(Command::Pause).await.unwrap();
    let result = rig.result().await;
    assert_eq!((result.exit_code, result.error_msg.as_str()), (0, ""));
    assert_eq!(rig.exec.phase(), Phase::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn vmm_death_in_every_live_phase_fails_with_the_reason() {
    for phase in [Phase::Booting, Phase::Running, Phase::Paused] {
        let rig = rig(Options {
            phase,
            ..Options::default()
        });
        rig.control.exit(VmmExit::Signaled(9));
        let result = rig.result().await;
        assert!(
            result.error_msg.contains("signal 9"),
            "{phase:?}: {result:?}"
        );
        assert_eq!(rig.exec.status(), ExecutionStatus::Failed, "{phase:?}");
    }
    // While stopping: a cancel whose stop finds the VMM already dead.
    let rig = rig(Options::default());
    rig.control.exit(VmmExit::Signaled(9));
    let _ = rig.send(Command::Cancel).await;
    let result = rig.result().await;
    assert_eq!(result.exit_code, -1, "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_supervisor_fails_its_execution_instead_of_hanging() {
    let rig = rig(Options::default());
    rig.control.panic_on_wait.store(true, Ordering::SeqCst);
    // Wake the supervisor (a refused command) so it waits on the VMM again.
    assert!(rig.send(Command::Resume).await.is_err());
    let mut progress = rig.exec.log_progress();
    let result = rig.result().await;
    assert!(
        result
            .error_msg
            .starts_with("internal error: the supervisor panicked"),
        "{result:?}"
    );
    assert!(result.error_msg.contains("injected supervisor panic"));
    // Its VMM is killed, not left running unsupervised.
    assert!(rig.control.killed.load(Ordering::SeqCst));
    // Log followers are told that no more output comes.
    progress.wait_for(|p| p.done).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_detaches_the_vm_and_publishes_no_result() {
    let rig = rig(Options::default());
    tokio::time::sleep(Duration::from_millis(10)).await;
    rig.stop.cancel();
    for _ in 0..100 {
        if rig.control.detached.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rig.control.detached.load(Ordering::SeqCst));
    assert_eq!(rig.control.stops.load(Ordering::SeqCst), 0);
    assert!(rig.exec.snapshot().result.is_none());
}
