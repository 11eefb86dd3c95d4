//! Launching: from a validated request to a booted VM, all or nothing.
//!
//! [`Launcher::spawn`]: create the execution's directory, write the plan's
//! files, open the output capture, save the record (flushed to the disk),
//! spawn firecracker with `--config-file` (it boots at once) and complete
//! the record with its pid. [`Launcher::boot`]: wait for the
//! VMM's log to say the guest started. Each returns a value; neither touches
//! the registry or the execution's phase (its task does, between the two).
//!
//! Everything that can fail before the VMM runs is done before it is
//! spawned. Until [`Launched::into_parts`] hands the VMM on, a guard kills
//! and reaps it and removes the directory, and only if this attempt created
//! it. Each step passes through an optional [`LaunchHook`]: benchmarks time
//! the steps with it, fault-injection tests fail one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firecracker_api::{SpawnOptions, StopPolicy, Vmm, VmmError};
use tokio::sync::Semaphore;

use crate::agent_link::LinkParts;
use crate::capture::{Capture, Sink};
use crate::config_drive::Key;
use crate::error::{ExecutorError, LaunchError};
use crate::lifecycle::Phase;
use crate::plan::{PlanSettings, VmPlan};
use crate::record::{now_ms, ExecutionRecord, OutputCopy, RECORD_VERSION};
use crate::spec::Mode;
use crate::state_dir::ExecPaths;
use crate::validate::{DriveRole, ValidatedRequest};

/// The steps of a launch, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaunchStep {
    /// Create the execution's directory.
    CreateDir,
    /// Write the VM configuration, MMDS contents and config drive.
    WriteFiles,
    /// Open the output capture.
    OpenOutput,
    /// Save the record (flushed to the disk) that lets a restarted executor
    /// find the VMM, before it exists.
    SaveRecord,
    /// Spawn the VMM.
    Spawn,
    /// Complete the record with the VMM's pid.
    SaveVmm,
    /// Wait for the VMM to say it started the guest.
    WaitStarted,
}

impl LaunchStep {
    /// Every step, in order.
    pub const ALL: [LaunchStep; 7] = [
        LaunchStep::CreateDir,
        LaunchStep::WriteFiles,
        LaunchStep::OpenOutput,
        LaunchStep::SaveRecord,
        LaunchStep::Spawn,
        LaunchStep::SaveVmm,
        LaunchStep::WaitStarted,
    ];
}

/// Watches (and may fail) the steps of every launch: instrumentation for
/// benchmarks and fault injection for tests.
pub trait LaunchHook: Send + Sync + std::fmt::Debug {
    /// Called before `step` of execution `id`; an error fails the launch there.
    fn before(&self, _id: &str, _step: LaunchStep) -> Result<(), String> {
        Ok(())
    }
    /// Called after `step` succeeded, with how long it took.
    fn after(&self, _id: &str, _step: LaunchStep, _took: Duration) {}
    /// Called as the request's `image` is pulled and built (nothing is
    /// called when the image cache already has it); a CLI draws progress.
    /// Runs on a blocking thread: return quickly.
    fn image_progress(&self, _id: &str, _progress: &fcexec_images::Progress) {}
}

/// What every launch needs from the executor.
#[derive(Debug)]
pub struct Launcher {
    /// The firecracker binary.
    pub firecracker: PathBuf,
    /// How long a new VMM gets to start its guest.
    pub ready_timeout: Duration,
    /// Serial bytes taken in per execution.
    pub max_output: u64,
    /// Bounds the launches doing blocking work (files, fork/exec) at once, so
    /// a burst of starts borrows a few blocking-pool threads, not hundreds.
    pub slots: Semaphore,
    /// Watches the steps.
    pub hook: Option<Arc<dyn LaunchHook>>,
    /// Planning settings (heartbeat, cancel grace); the agent's initrd is
    /// added per launch.
    pub plan: PlanSettings,
    /// fcexec's guest agent binary, when configured (else looked up).
    pub agent_binary: Option<PathBuf>,
    /// Where the agent's initrd is cached; images are cached in its
    /// `images` subdirectory.
    pub cache_dir: PathBuf,
    /// The image cache's size limit.
    pub image_cache_limit: Option<u64>,
    /// The agent's initrd, once built.
    pub agent_initrd: tokio::sync::OnceCell<PathBuf>,
    /// Makes and removes executions' networks.
    pub networks: Arc<crate::network::Networks>,
    /// Jails every VMM, when jailing is on.
    pub jail: Option<Arc<crate::jail::Jailer>>,
}

/// Launches doing their blocking part at once.
pub const LAUNCH_SLOTS: usize = 16;

/// A spawned VMM, guarded: dropping it kills the VMM and removes what the
/// attempt created.
#[derive(Debug)]
pub struct Spawned {
    vmm: Vmm,
    record: ExecutionRecord,
    capture: Capture,
    link: Option<LinkParts>,
    created: CreatedDir,
    /// Released (after the VMM and the directory went) unless the launch succeeds.
    jail: crate::jail::JailGuard,
}

/// A VM whose guest started (or ran and ended already), still guarded.
#[derive(Debug)]
pub struct Launched(Spawned);

impl Launched {
    /// Takes the VMM, record and capture out of the guard: from here on
    /// the supervisor owns them, and the VMM runs on if its handle is
    /// dropped without a panic (a runtime torn down without a shutdown).
    pub fn into_parts(self) -> (Vmm, ExecutionRecord, Capture, Option<LinkParts>) {
        let Spawned {
            mut vmm,
            record,
            capture,
            link,
            mut created,
            mut jail,
        } = self.0;
        created.keep();
        jail.keep();
        vmm.set_kill_on_drop(false);
        (vmm, record, capture, link)
    }
}

impl Launcher {
    /// Creates the execution's files and spawns its VMM (see the module doc).
    pub async fn spawn(
        &self,
        valid: &ValidatedRequest,
        paths: &ExecPaths,
    ) -> Result<Spawned, ExecutorError> {
        let id = valid.execution_id.clone();
        // An `image`: built or found in the cache, and copied for this
        // execution once its directory exists.
        let (image_valid, rootfs) = match &valid.image {
            Some(source) => {
                let (dir, limit) = (
                    crate::image_root::cache_dir(&self.cache_dir),
                    self.image_cache_limit,
                );
                let source = source.clone();
                let progress = self.hook.clone().map(|hook| {
                    let id = id.clone();
                    Arc::new(move |p: &fcexec_images::Progress| hook.image_progress(&id, p))
                        as fcexec_images::ProgressFn
                });
                let cached = tokio::task::spawn_blocking(move || {
                    crate::image_root::resolve(&dir, limit, &source, progress)
                })
                .await
                .map_err(|e| creation(&id, LaunchError::Task(e.to_string())))?
                .map_err(ExecutorError::Invalid)?;
                let copy = paths.dir().join(crate::image_root::ROOTFS_COPY);
                let applied = crate::image_root::apply(valid, &copy, &cached.config)
                    .map_err(ExecutorError::Invalid)?;
                (Some(applied), Some((cached, copy)))
            }
            None => (None, None),
        };
        let valid = image_valid.as_ref().unwrap_or(valid);
        let key = match valid.mode {
            Mode::Agent => Some(Key::generate().map_err(|e| creation(&id, e.into()))?),
            Mode::Plain => None,
        };
        let settings = match valid.command.is_some() {
            true => PlanSettings {
                agent_initrd: Some(self.initrd().await.map_err(|e| creation(&id, e.into()))?),
                ..self.plan.clone()
            },
            false => self.plan.clone(),
        };
        let mut plan = VmPlan::new(valid, paths, key.clone(), &settings);
        let jail = match &self.jail {
            Some(jailer) => Some((
                jailer.clone(),
                crate::jail::Jailer::limits(valid).map_err(|e| creation(&id, e.into()))?,
            )),
            None => None,
        };
        let mut record = new_record(valid, key.as_ref());
        let wanted = self.networks.wanted(
            valid.network.as_ref(),
            valid.spec.network,
            valid.spec.egress,
        );
        if let Some(request) = wanted {
            let net = self
                .networks
                .create(&id, &request)
                .await
                .map_err(|e| network_error(&id, e))?;
            plan = plan.with_network(&net);
            record.network = Some(net);
        }
        let network = record.network.clone();
        let Ok(_slot) = self.slots.acquire().await else {
            self.release_network(network.as_ref()).await;
            return Err(ExecutorError::ShuttingDown);
        };
        // Files and fork/exec block; on a worker thread they would delay every
        // other execution's supervision (seen as ~1 s of lag at 200 at once).
        let (paths, firecracker) = (paths.clone(), self.firecracker.clone());
        let (hook, max_output) = (self.hook.clone(), self.max_output);
        let handle = tokio::runtime::Handle::current();
        let spawned = tokio::task::spawn_blocking(move || {
            let steps = Steps {
                id: &id,
                hook: hook.as_deref(),
            };
            spawn_blocking_part(
                &steps,
                &handle,
                &firecracker,
                &paths,
                plan,
                record,
                key,
                max_output,
                rootfs,
                jail,
            )
        })
        .await
        .map_err(|e| creation(&valid.execution_id, LaunchError::Task(e.to_string())))
        .and_then(|spawned| spawned);
        if spawned.is_err() {
            self.release_network(network.as_ref()).await;
        }
        spawned
    }

    /// Removes the network of a launch that failed, if it had one.
    async fn release_network(&self, network: Option<&fcexec_network::ExecutionNetwork>) {
        if let Some(net) = network {
            self.networks.remove(net).await;
        }
    }

    /// Stops a spawned VMM that will not be supervised (the launch failed
    /// after the spawn) and removes what its launch made.
    pub async fn discard(&self, mut spawned: Spawned) {
        stop_quickly(&mut spawned.vmm).await;
        self.release_network(spawned.record.network.as_ref()).await;
    }

    /// fcexec's guest agent initrd, built (once) from the agent binary.
    async fn initrd(&self) -> Result<PathBuf, crate::initrd::InitrdError> {
        self.agent_initrd
            .get_or_try_init(|| async {
                let (configured, cache) = (self.agent_binary.clone(), self.cache_dir.clone());
                tokio::task::spawn_blocking(move || {
                    let agent = crate::initrd::find_agent(configured.as_deref())?;
                    crate::initrd::ensure(&agent, &cache)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(crate::initrd::InitrdError::Io {
                        what: "build",
                        path: PathBuf::from("the agent's initrd"),
                        source: std::io::Error::other(e.to_string()),
                    })
                })
            })
            .await
            .cloned()
    }

    /// Waits until the VMM says the guest started. A guest that ran and
    /// ended first is not a failure: its supervisor settles the result.
    pub async fn boot(&self, mut spawned: Spawned) -> Result<Launched, ExecutorError> {
        let id = spawned.record.execution_id.clone();
        let steps = Steps {
            id: &id,
            hook: self.hook.as_deref(),
        };
        let waited = async {
            steps.before(LaunchStep::WaitStarted)?;
            let began = Instant::now();
            // No API request here: see `Vmm::wait_started` for the
            // Firecracker deadlock this avoids.
            match spawned.vmm.wait_started(self.ready_timeout).await {
                Ok(()) => {}
                Err(VmmError::ExitedEarly { .. }) if has_started(&spawned.vmm).await => {}
                Err(e) => return Err(LaunchError::Vmm(e)),
            }
            steps.after(LaunchStep::WaitStarted, began);
            Ok(())
        };
        match waited.await {
            Ok(()) => Ok(Launched(spawned)),
            Err(source) => {
                self.discard(spawned).await;
                Err(creation(&id, source))
            }
        }
    }
}

/// The steps' names and hook, for one launch.
struct Steps<'a> {
    id: &'a str,
    hook: Option<&'a dyn LaunchHook>,
}

impl Steps<'_> {
    fn before(&self, step: LaunchStep) -> Result<(), LaunchError> {
        match self.hook.map(|h| h.before(self.id, step)) {
            Some(Err(reason)) => Err(LaunchError::Injected { step, reason }),
            _ => Ok(()),
        }
    }

    fn after(&self, step: LaunchStep, began: Instant) {
        if let Some(hook) = self.hook {
            hook.after(self.id, step, began.elapsed());
        }
    }

    /// Runs one step between the hook's calls.
    fn run<T>(
        &self,
        step: LaunchStep,
        work: impl FnOnce() -> Result<T, LaunchError>,
    ) -> Result<T, LaunchError> {
        self.before(step)?;
        let began = Instant::now();
        let value = work()?;
        self.after(step, began);
        Ok(value)
    }
}

/// The blocking part of [`Launcher::spawn`]: on tokio's blocking pool.
#[allow(clippy::too_many_arguments)]
fn spawn_blocking_part(
    steps: &Steps<'_>,
    runtime: &tokio::runtime::Handle,
    firecracker: &std::path::Path,
    paths: &ExecPaths,
    mut plan: VmPlan,
    mut record: ExecutionRecord,
    key: Option<Key>,
    max_output: u64,
    rootfs: Option<(fcexec_images::CachedImage, PathBuf)>,
    jail: Option<(Arc<crate::jail::Jailer>, fcexec_isolation::CgroupLimits)>,
) -> Result<Spawned, ExecutorError> {
    let id = steps.id;
    let created = steps
        .run(LaunchStep::CreateDir, || {
            paths.create().map_err(LaunchError::CreateDir)
        })
        .map_err(|e| match e {
            LaunchError::CreateDir(io) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                ExecutorError::AlreadyStarted(id.to_string())
            }
            e => creation(id, e),
        })
        .map(|()| CreatedDir::new(paths.clone()))?;
    let fail = |e: LaunchError| creation(id, e);
    if let Some((cached, copy)) = rootfs {
        // The cached image stays in use (not evicted) until copied.
        steps
            .run(LaunchStep::CreateDir, || {
                crate::image_root::copy(&cached.path, &copy).map_err(LaunchError::CreateDir)
            })
            .map_err(fail)?;
    }
    let metadata = steps
        .run(LaunchStep::WriteFiles, || {
            plan.write(paths).map_err(LaunchError::Files)
        })
        .map_err(fail)?;
    // Jailed: a uid, a chroot holding the plan's files, a cgroup.
    let jail_cfg = jail;
    let prepared = match &jail_cfg {
        Some((jailer, limits)) => Some(
            steps
                .run(LaunchStep::WriteFiles, || {
                    Ok(jailer.prepare(id, *limits, paths, &mut plan)?)
                })
                .map_err(fail)?,
        ),
        None => None,
    };
    if let Some(prepared) = &prepared {
        prepared.record_in(&mut record);
        if let Some(net) = &record.network {
            // The jailed VMM opens the TAP as its own uid.
            let uid = prepared.isolation.uid;
            steps
                .run(LaunchStep::WriteFiles, || {
                    runtime
                        .block_on(fcexec_network::tap::give_to(net, uid))
                        .map_err(|e| LaunchError::Network(Box::new(e)))
                })
                .map_err(fail)?;
        }
    }
    let jail = crate::jail::JailGuard::new(record.isolation.clone());
    let vsock = plan.agent_port().is_some();
    let serial = match vsock {
        true => paths.console(),
        false => paths.serial(),
    };
    let (capture, link) = steps
        .run(LaunchStep::OpenOutput, || {
            let (sink, link) = match (key, vsock) {
                (Some(key), true) => {
                    let link =
                        LinkParts::open(paths, &key, max_output).map_err(LaunchError::Output)?;
                    if let Some(iso) = &record.isolation {
                        let socket = paths.agent_socket(fcexec_guest_protocol::DEFAULT_PORT);
                        crate::jail::hand_over_socket(&socket, iso).map_err(LaunchError::Output)?;
                    }
                    (Sink::console(), Some(link))
                }
                (Some(key), false) => (
                    Sink::agent(key, &paths.stdout(), &paths.stderr())
                        .map_err(LaunchError::Output)?,
                    None,
                ),
                (None, _) => (Sink::plain(), None),
            };
            // The serial file exists before the VMM appends to it, so the
            // capture and its watch can open it now.
            std::fs::File::create(&serial).map_err(LaunchError::Output)?;
            let capture = Capture::open(&serial, sink, max_output).map_err(LaunchError::Output)?;
            Ok((capture, link))
        })
        .map_err(fail)?;
    record.phase = Phase::Booting;
    // From here on, a restarted executor finds this execution, and its VMM
    // by pid or, if we crash before saving that, by its API socket.
    steps
        .run(LaunchStep::SaveRecord, || {
            record.save(&paths.record()).map_err(LaunchError::Record)
        })
        .map_err(fail)?;
    let mut vmm = steps
        .run(LaunchStep::Spawn, || {
            let options = SpawnOptions {
                firecracker: firecracker.to_path_buf(),
                // A jailed VMM's id names its chroot and cgroup.
                id: match &record.isolation {
                    Some(iso) => iso.jail_id.clone(),
                    None => vmm_id(id),
                },
                api_socket: Some(paths.api_socket()),
                config_file: Some(paths.vm_config()),
                metadata,
                serial_output: serial.clone(),
                log_path: paths.vmm_log(),
                extra_sockets: match vsock {
                    true => vec![paths.vsock()],
                    false => vec![],
                },
                jailer: prepared.map(|mut p| {
                    // The jailer joins the execution's network namespace.
                    p.options.netns = record.network.as_ref().map(|n| n.netns.clone());
                    p.options
                }),
                netns: record.network.as_ref().map(|n| n.netns.clone()),
            };
            runtime
                .block_on(Vmm::spawn(options))
                .map_err(LaunchError::Vmm)
        })
        .map_err(fail)?;
    if let (Some((jailer, _)), Some(iso)) = (&jail_cfg, &record.isolation) {
        // Off the launch's path: a cgroup v1 move waits for the kernel
        // (an RCU grace period, milliseconds); the VMM's first moments go
        // uncounted. Short and bounded, so not tracked.
        let (jailer, iso, pid, id) = (jailer.clone(), iso.clone(), vmm.pid(), id.to_string());
        runtime.spawn_blocking(move || {
            if let Err(e) = jailer.account(&iso, pid) {
                tracing::warn!(%id, error = %e, "cannot count the jailed VMM's CPU time");
            }
        });
    }
    record.pid = Some(vmm.pid());
    record.pid_start_time = firecracker_api::attach::start_time(vmm.pid());
    let saved = steps.run(LaunchStep::SaveVmm, || {
        ExecutionRecord::save_vmm(&paths.record(), vmm.pid(), record.pid_start_time)
            .map_err(LaunchError::Record)
    });
    if let Err(e) = saved {
        // Stop and reap it now; `created` removes the directory as it drops.
        runtime.block_on(stop_quickly(&mut vmm));
        return Err(fail(e));
    }
    Ok(Spawned {
        vmm,
        record,
        capture,
        link,
        created,
        jail,
    })
}

/// The execution's directory, removed on drop unless kept, and only when
/// this attempt created it.
#[derive(Debug)]
struct CreatedDir(Option<ExecPaths>);

impl CreatedDir {
    fn new(paths: ExecPaths) -> CreatedDir {
        CreatedDir(Some(paths))
    }

    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(paths) = self.0.take() {
            if let Err(e) = paths.remove() {
                tracing::warn!(dir = %paths.dir().display(), error = %e, "cannot remove a failed launch's directory");
            }
        }
    }
}

/// Stops a VMM whose launch failed (no Ctrl+Alt+Del: it is not ours yet).
async fn stop_quickly(vmm: &mut Vmm) {
    let policy = StopPolicy {
        ctrl_alt_del: None,
        ..StopPolicy::default()
    };
    if let Err(e) = vmm.stop(policy).await {
        tracing::error!(error = %e, "cannot stop a VMM that failed to launch");
    }
}

/// Whether the VMM's log says the guest started (read on the blocking pool).
async fn has_started(vmm: &Vmm) -> bool {
    let log = vmm.log_path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::read(&log).is_ok_and(|text| {
            let line = firecracker_api::process::STARTED_LINE;
            text.windows(line.len()).any(|w| w == line)
        })
    })
    .await
    .unwrap_or(false)
}

fn new_record(valid: &ValidatedRequest, key: Option<&Key>) -> ExecutionRecord {
    let outputs = match &valid.results_dir {
        Some(dir) => valid
            .outputs()
            .filter_map(|d| match &d.role {
                DriveRole::Output { index, target } => Some(OutputCopy {
                    image: d.path.display().to_string(),
                    destination: dir
                        .join(output_name(&valid.execution_id, *index, target, &d.path))
                        .display()
                        .to_string(),
                }),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    ExecutionRecord {
        version: RECORD_VERSION,
        job_id: valid.job_id.clone(),
        execution_id: valid.execution_id.clone(),
        phase: Phase::Pending,
        mode: valid.mode,
        transport: valid.transport,
        key: key.map(|k| k.to_hex()),
        pid: None,
        pid_start_time: None,
        cancel_requested: false,
        outputs,
        results_dir: valid.results_dir.as_ref().map(|d| d.display().to_string()),
        isolation: None,
        created_ms: now_ms(),
        finished_ms: None,
        persist_ms: valid.persist_logs.as_millis() as u64,
        mem_mib: u64::from(valid.mem_mib),
        timeout_ms: valid.timeout.map(|t| t.as_millis() as u64),
        result: None,
        network: None,
    }
}

/// The file name an output image gets under `results_dir`:
/// `<execution id>-<index>-<name>`, where `<name>` is the last component of
/// the target, else of the image. Every character of `<name>` outside
/// `[A-Za-z0-9._]` becomes `_` (a `-` too), so the name splits back into its
/// three parts from the right: executions sharing a `results_dir` never get
/// the same name, and neither do two outputs of one execution. `<name>` is
/// cut so the whole stays within 200 bytes.
pub fn output_name(
    execution_id: &str,
    index: usize,
    target: &str,
    image: &std::path::Path,
) -> String {
    // The longest name returned (ext4 and most file systems take 255 bytes).
    const OUTPUT_NAME_MAX: usize = 200;
    let from_target = target
        .rsplit('/')
        .find(|c| !c.is_empty() && *c != "." && *c != "..");
    let from_image = image.file_name().and_then(|n| n.to_str());
    let base = from_target.or(from_image).unwrap_or("output");
    // Execution ids are validated to `[A-Za-z0-9._-]`; mapped again so a
    // name never holds a `/` whatever the caller passes.
    let id: String = execution_id
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                true => c,
                false => '_',
            },
        )
        .collect();
    let prefix = format!("{id}-{index}-");
    let room = OUTPUT_NAME_MAX.saturating_sub(prefix.len()).max(1);
    let safe: String = base
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
                true => c,
                false => '_',
            },
        )
        .take(room)
        .collect();
    format!("{prefix}{safe}")
}

/// Firecracker's `--id` allows only `[A-Za-z0-9-]` (it aborts on anything
/// else); execution ids also allow `.` and `_`, which become `-`. The id only
/// names the VMM in its own log, so two ids mapping alike is harmless.
///
/// The id never starts with `-`: Firecracker's argument parser would take
/// it for an option (it has no `--id=value` form), so an execution id
/// starting with `_` becomes `x-...`.
pub fn vmm_id(execution_id: &str) -> String {
    let id: String = execution_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    match id.starts_with('-') {
        true => format!("x{id}").chars().take(64).collect(),
        false => id,
    }
}

/// A network that could not be made: the request's fault (a port taken,
/// a gateway outside the pool) or the host's.
fn network_error(id: &str, source: fcexec_network::NetworkError) -> ExecutorError {
    ExecutorError::Network {
        id: id.to_string(),
        source: Box::new(source),
    }
}

fn creation(id: &str, source: LaunchError) -> ExecutorError {
    ExecutorError::VmCreation {
        id: id.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn vmm_ids_are_what_firecracker_accepts() {
        assert_eq!(vmm_id("job_1.retry-2"), "job-1-retry-2");
        assert_eq!(vmm_id("_x"), "x-x");
        assert!(firecracker_api::process::check_instance_id(&vmm_id("a_b.c")).is_ok());
    }

    #[test]
    fn output_names_are_safe_and_unique() {
        let img = Path::new("/x/o.img");
        assert_eq!(output_name("e1", 0, "/mnt/out", img), "e1-0-out");
        assert_eq!(output_name("e1", 1, "", img), "e1-1-o.img");
        assert_eq!(output_name("e1", 2, "/a/../..", img), "e1-2-a");
        assert_eq!(output_name("e1", 3, "we ird", img), "e1-3-we_ird");
        assert_eq!(output_name("e.1_x", 4, "/my-out/", img), "e.1_x-4-my_out");
        assert_eq!(output_name("../x", 0, "/out", img), ".._x-0-out");
        // Ids and indices that could run together still give distinct names.
        assert_ne!(
            output_name("a", 0, "/1-x", img),
            output_name("a-0", 1, "/x", img)
        );
        let long = output_name(&"i".repeat(64), 99, &"t".repeat(255), img);
        assert_eq!(long.len(), 200);
        assert!(long.starts_with(&format!("{}-99-ttt", "i".repeat(64))));
    }
}
