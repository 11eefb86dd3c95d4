//! Validation: from the node's [`ExecutionRequest`] to a [`ValidatedRequest`]
//! that the executor can plan a VM from without further checks.
//!
//! [`validate`] checks every field and stops at the first problem, returning a
//! [`ValidationError`] whose message names the field (a JSON path such as
//! `engine_spec.params.kernel_image`), the value, and the fix. In order:
//!
//! 1. `execution_id`, `job_id`: 1 to 64 characters from `[A-Za-z0-9._-]`, not
//!    starting with `.` (so never `.` or `..`): they become file names.
//! 2. `engine_spec`: decoded by [`EngineSpec::decode`]; `kernel_image` is a
//!    regular file with a 64-bit x86_64 ELF header (a bzImage gets its own
//!    message); `initrd_path` a regular file; `root_file_system` an image
//!    (regular file or block device) that can be opened read-write (it is
//!    attached read-write, as the reference does), or instead `image` an
//!    OCI image layout directory, a regular file (a `docker save` archive)
//!    or a registry reference from an allowed registry (built at launch,
//!    see `image_root.rs`).
//! 3. `resources`: the rule of [`crate::resources`].
//! 4. Volumes, each a drive: `source` an image (regular file or block
//!    device); `target` non-empty, at most 4096 bytes, no NUL or newline.
//!    Inputs are always attached read-only and need only be readable (their
//!    `readonly` is ignored). Outputs are images the guest writes: they must
//!    exist already and are always attached read-write (their `readonly` is
//!    ignored, as in the reference); after the run the executor puts them
//!    under `results_dir`, which is then required. Only the root file system
//!    and the outputs are ever writable by the guest.
//! 5. Every host file above, as it is checked (`files.rs`, `paths.rs`): an
//!    absolute path (a relative one is refused, not resolved against the
//!    working directory), not under `/proc` or `/sys`; its symbolic links
//!    resolved once, and the resolved path is what is checked, what
//!    [`ValidatedRequest`] carries and what the VM is given; inside
//!    [`PathPolicy::allowed_dirs`] when the executor sets them; never a
//!    directory, character device, FIFO or socket (block devices only as
//!    images); opened with `O_NONBLOCK | O_NOFOLLOW` (read-write where the VM
//!    writes) and checked again on the open descriptor (type, and not on a
//!    kernel interface file system). The kernel, initrd, root file system and
//!    volumes are distinct files: one device and inode (a hard link, a
//!    symbolic link) or one block device given twice is refused.
//! 6. `results_dir`, when given (`results_dir.rs`): absolute, not a symbolic
//!    link, and a directory this process can write, or creatable (its
//!    nearest existing ancestor a writable directory).
//! 7. Drives in all (root, inputs, outputs, and the config drive in agent
//!    mode) at most [`MAX_DRIVES`].
//! 8. `kernel_args`: printable ASCII only (Firecracker refuses anything else),
//!    and short enough that Firecracker's 2048-byte command line (NUL
//!    included) still holds the `root=` and `virtio_mmio.device=` entries it
//!    adds.
//! 9. `mmds_message`: a JSON object of at most [`MMDS_MAX_BYTES`] bytes
//!    (Firecracker's default MMDS data store limit).
//! 10. `persist_logs_duration` not negative, rounded up to a whole
//!     millisecond (the unit retention is kept in, where 0 would mean the
//!     executor's default: 1 ns must not become that); `provision_scripts`
//!     names like IDs and at most [`MAX_PROVISION_BYTES`] in all.
//! 11. `ports_to_bind` (ports 1–65535, each host port once per protocol,
//!     `ip` empty or 0.0.0.0), `gateway_ip` (IPv4), and the `network`
//!     extension not `false` with them (`network.rs`).
//! 12. `agent_job`: agent mode only; one line that fits on the config drive.
//!
//! [`validate`] allows every directory; [`validate_with`] takes a
//! [`PathPolicy`]; the executor calls [`validate_within`], which runs the
//! checks on the blocking pool within a time limit (`limit.rs`).

mod checks;
mod error;
mod files;
mod limit;
mod network;
mod paths;
mod policy;
mod results_dir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use self::error::ValidationError;
pub use self::limit::{validate_within, OpenHook, DEFAULT_VALIDATION_TIMEOUT};
pub use self::network::NetworkAsk;
pub use self::policy::PathPolicy;
pub use crate::resources::HostLimits;

use self::checks::{
    check_agent_job, check_command, check_id, check_kernel_args, check_mmds, check_persist_logs,
    check_provision_scripts,
};
use self::files::{host_file, FileId, HostFile, Want};
use self::limit::Progress;
use self::results_dir::check_results_dir;
use crate::request::{ExecutionRequest, StorageVolume};
use crate::resources::machine_size;
use crate::spec::{EngineSpec, Mode};

/// Longest ID, script name, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Firecracker's kernel command line buffer (2048 bytes) less its NUL.
pub const KERNEL_CMDLINE_MAX: usize = 2047;
/// Room kept on the command line for Firecracker's `root=/dev/vda rw `.
pub const CMDLINE_ROOT_BYTES: usize = 17;
/// Room kept on the command line per drive, for
/// `virtio_mmio.device=4K@0xc0001000:12 `.
pub const CMDLINE_BYTES_PER_DRIVE: usize = 37;
/// Firecracker's default MMDS data store limit, in bytes.
pub const MMDS_MAX_BYTES: usize = 51_200;
/// Most drives one VM gets. Firecracker on x86_64 gives virtio devices the
/// IRQs 5 to 23 (19 devices); fcexec keeps three for later devices.
pub const MAX_DRIVES: usize = 16;
/// Longest volume target, in bytes.
pub const MAX_TARGET_LEN: usize = 4096;
/// Most bytes of provision scripts in all.
pub const MAX_PROVISION_BYTES: usize = 1 << 20;

/// A request that passed validation, with typed and resolved values.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    /// The job ID (safe in file names).
    pub job_id: String,
    /// The execution ID (safe in file names).
    pub execution_id: String,
    /// The decoded engine spec, as given.
    pub spec: EngineSpec,
    /// Plain or agent mode.
    pub mode: Mode,
    /// Canonical path of the ELF kernel.
    pub kernel_image: PathBuf,
    /// Canonical path of the initrd.
    pub initrd: Option<PathBuf>,
    /// The kernel command line as given (empty: the executor's default).
    pub kernel_args: String,
    /// vCPUs, 1..=32.
    pub vcpus: u8,
    /// The CPU time the VM may use, in cores (`resources.cpu.cores`, else
    /// `vcpus`): a jailed VMM's cgroup CPU quota. At most `vcpus`, at least 0.01.
    pub cores: f64,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Every drive's rate limiter, from `resources.disk` ([`crate::disk_limits`]).
    pub disk_limiter: Option<firecracker_api::models::RateLimiter>,
    /// Drives in drive order: root file system, inputs, outputs. In agent
    /// mode the executor appends the config drive after these.
    pub drives: Vec<Drive>,
    /// The MMDS document, a JSON object.
    pub mmds: Option<serde_json::Value>,
    /// Where the output images go after the run (always set with outputs).
    pub results_dir: Option<PathBuf>,
    /// How long to keep the logs on disk.
    pub persist_logs: Duration,
    /// Named scripts for the guest.
    pub provision_scripts: BTreeMap<String, Vec<u8>>,
    /// Agent mode: the wait for the agent's hello, if the spec sets one.
    pub boot_timeout: Option<Duration>,
    /// The longest the execution may run (`timeout_ms`, or the executor's default).
    pub timeout: Option<Duration>,
    /// Agent mode: the job for the config drive.
    pub agent_job: Option<String>,
    /// Agent mode: how the agent reports.
    pub transport: crate::spec::Transport,
    /// Agent mode: the command fcexec's own guest agent runs; with one,
    /// the VM boots that agent from fcexec's initrd.
    pub command: Option<crate::spec::Command>,
    /// The container image the root file system is built from (`image`: a
    /// resolved path or a registry reference); the root drive's path is
    /// replaced at launch by the execution's own copy of the built image.
    pub image: Option<fcexec_images::Source>,
    /// The network the request asks for explicitly (ports, a gateway, or
    /// `network: true`); the executor may give one by default too.
    pub network: Option<NetworkAsk>,
}

impl ValidatedRequest {
    /// Drives the VM gets, the config drive included in agent mode.
    pub fn drive_count(&self) -> usize {
        self.drives.len() + usize::from(self.mode == Mode::Agent)
    }

    /// The output drives, in request order.
    pub fn outputs(&self) -> impl Iterator<Item = &Drive> {
        self.drives
            .iter()
            .filter(|d| matches!(d.role, DriveRole::Output { .. }))
    }
}

/// One drive of the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Firecracker drive ID: `rootfs`, `input<i>`, `output<i>`.
    pub drive_id: String,
    /// Canonical host path.
    pub path: PathBuf,
    /// Attached read-only.
    pub read_only: bool,
    /// The root device (only the root file system).
    pub is_root_device: bool,
    /// Where the drive came from.
    pub role: DriveRole,
}

/// Where a drive came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveRole {
    /// `engine_spec.params.root_file_system`.
    RootFileSystem,
    /// `inputs[index]`, to be mounted at `target`.
    Input {
        /// Index in `inputs`.
        index: usize,
        /// The guest mount point.
        target: String,
    },
    /// `outputs[index]`, to be mounted at `target`.
    Output {
        /// Index in `outputs`.
        index: usize,
        /// The guest mount point.
        target: String,
    },
}

/// Checks `request` against the rules in the module doc and this host's
/// limits, allowing files from every directory.
pub fn validate(
    request: &ExecutionRequest,
    host: &HostLimits,
) -> Result<ValidatedRequest, ValidationError> {
    validate_with(request, host, &PathPolicy::default())
}

/// [`validate`], taking files only from where `policy` allows.
pub fn validate_with(
    request: &ExecutionRequest,
    host: &HostLimits,
    policy: &PathPolicy,
) -> Result<ValidatedRequest, ValidationError> {
    let checks = Checks {
        policy,
        hook: None,
        progress: None,
    };
    validate_checked(request, host, &checks)
}

/// What the file checks take besides the request.
struct Checks<'a> {
    /// Where files may come from.
    policy: &'a PathPolicy,
    /// Test seam: called before each host file is opened.
    hook: Option<&'a OpenHook>,
    /// Where the field being checked is noted, for a time-out's message.
    progress: Option<&'a Progress>,
}

/// One host file the request names: its field, identity and resolved path.
type Named = (String, FileId, PathBuf);

/// The checks of [`validate`], with `checks`.
fn validate_checked(
    request: &ExecutionRequest,
    host: &HostLimits,
    checks: &Checks,
) -> Result<ValidatedRequest, ValidationError> {
    check_id("execution_id", &request.execution_id)?;
    check_id("job_id", &request.job_id)?;
    let spec_config = request
        .engine_spec
        .as_ref()
        .ok_or(ValidationError::Missing {
            field: "engine_spec".into(),
            fix: "give {\"type\": \"firecracker\", \"params\": {\"kernel_image\": ..., \
              \"root_file_system\": ...}}",
        })?;
    let spec = EngineSpec::decode(spec_config)?;
    let mut files: Vec<Named> = Vec::new();

    const KERNEL: &str = "engine_spec.params.kernel_image";
    let kernel_fix = "give the path of an uncompressed ELF kernel (vmlinux)";
    let kernel = host_file(
        checks,
        KERNEL,
        &spec.kernel_image,
        Want::File,
        false,
        kernel_fix,
    )?;
    files::check_elf_kernel(KERNEL, &spec.kernel_image, &kernel.file)?;
    files.push((KERNEL.into(), kernel.id, kernel.path.clone()));
    let initrd = match &spec.initrd_path {
        None => None,
        Some(raw) => {
            const INITRD: &str = "engine_spec.params.initrd_path";
            let fix = "give the path of an initrd file, or leave initrd_path out";
            let file = host_file(checks, INITRD, raw, Want::File, false, fix)?;
            files.push((INITRD.into(), file.id, file.path.clone()));
            Some(file.path)
        }
    };
    const ROOT: &str = "engine_spec.params.root_file_system";
    let root_fix = "give the path of a root file system image such as rootfs.ext4";
    let (root_path, image) = match &spec.image {
        Some(raw) => {
            // A placeholder: launch replaces it with the execution's copy.
            let source = files::image_source(checks, "engine_spec.params.image", raw)?;
            (PathBuf::from(source.to_string()), Some(source))
        }
        None => {
            let root = host_file(
                checks,
                ROOT,
                &spec.root_file_system,
                Want::Image,
                true,
                root_fix,
            )?;
            files.push((ROOT.into(), root.id, root.path.clone()));
            (root.path, None)
        }
    };
    let size = machine_size(request.resources.as_ref(), host)?;

    let mut drives = vec![Drive {
        drive_id: "rootfs".into(),
        path: root_path,
        read_only: false,
        is_root_device: true,
        role: DriveRole::RootFileSystem,
    }];
    for (index, v) in request.inputs.iter().enumerate() {
        let field = format!("inputs[{index}]");
        let fix = "give the path of a disk image (e.g. ext4) or block device";
        let file = volume(checks, &field, v, false, fix, &mut files)?;
        drives.push(Drive {
            drive_id: format!("input{index}"),
            path: file.path,
            read_only: true,
            is_root_device: false,
            role: DriveRole::Input {
                index,
                target: v.target.clone(),
            },
        });
    }
    for (index, v) in request.outputs.iter().enumerate() {
        let field = format!("outputs[{index}]");
        let fix = "give the path of an existing disk image for the guest to write (create it \
                   first, e.g. with truncate -s 64M out.img && mkfs.ext4 out.img)";
        let file = volume(checks, &field, v, true, fix, &mut files)?;
        drives.push(Drive {
            drive_id: format!("output{index}"),
            path: file.path,
            read_only: false,
            is_root_device: false,
            role: DriveRole::Output {
                index,
                target: v.target.clone(),
            },
        });
    }
    let results_dir = check_results_dir(checks, &request.results_dir, !request.outputs.is_empty())?;

    let count = drives.len() + usize::from(spec.mode == Mode::Agent);
    if count > MAX_DRIVES {
        return Err(ValidationError::TooManyDrives {
            count,
            max: MAX_DRIVES,
        });
    }
    check_distinct(&files)?;
    check_kernel_args(&spec.kernel_args, count)?;
    let mmds = spec.mmds_message.as_deref().map(check_mmds).transpose()?;
    let persist_logs = check_persist_logs(request.persist_logs_duration)?;
    check_provision_scripts(&request.provision_scripts)?;
    let network = network::network_ask(request, &spec)?;
    check_agent_job(&spec)?;
    check_command(&spec)?;

    Ok(ValidatedRequest {
        job_id: request.job_id.clone(),
        execution_id: request.execution_id.clone(),
        mode: spec.mode,
        kernel_image: kernel.path,
        initrd,
        kernel_args: spec.kernel_args.clone(),
        vcpus: size.vcpus,
        cores: cores_of(request, size.vcpus),
        disk_limiter: crate::disk_limits::rate_limiter(
            request.resources.as_ref().and_then(|r| r.disk.as_ref()),
        ),
        mem_mib: size.mem_mib,
        drives,
        mmds,
        results_dir,
        persist_logs,
        provision_scripts: request.provision_scripts.clone(),
        boot_timeout: spec.boot_timeout,
        timeout: spec.timeout,
        agent_job: spec.agent_job.clone(),
        transport: spec.transport,
        command: spec.command.clone(),
        image,
        network,
        spec,
    })
}

/// The cores a request asks for, held to `0.01..=vcpus` (the vCPU rule
/// already rejected what cannot be honoured; this only trims float noise).
fn cores_of(request: &ExecutionRequest, vcpus: u8) -> f64 {
    request
        .resources
        .as_ref()
        .and_then(|r| r.cpu.as_ref())
        .and_then(|c| c.cores)
        .filter(|c| c.is_finite() && *c > 0.0)
        .unwrap_or(f64::from(vcpus))
        .clamp(0.01, f64::from(vcpus))
}

/// Checks one volume, its source file (noted in `files`) and its target.
fn volume(
    checks: &Checks,
    field: &str,
    v: &StorageVolume,
    write: bool,
    fix: &'static str,
    files: &mut Vec<Named>,
) -> Result<HostFile, ValidationError> {
    let source = format!("{field}.source");
    let file = host_file(checks, &source, &v.source, Want::Image, write, fix)?;
    checks::check_target(&format!("{field}.target"), &v.target)?;
    files.push((source, file.id, file.path.clone()));
    Ok(file)
}

/// Refuses a file named twice: the later field is the one named.
fn check_distinct(files: &[Named]) -> Result<(), ValidationError> {
    for (i, (field, id, path)) in files.iter().enumerate() {
        if let Some((other, _, _)) = files[..i].iter().find(|(_, other, _)| other == id) {
            return Err(ValidationError::DuplicateDrive {
                field: field.clone(),
                path: path.display().to_string(),
                other: other.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
