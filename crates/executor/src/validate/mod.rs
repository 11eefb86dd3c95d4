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
//!    readable regular file with a 64-bit x86_64 ELF header (a bzImage gets
//!    its own message); `initrd_path` a readable regular file;
//!    `root_file_system` a readable and writable image (regular file or block
//!    device; it is attached read-write, as the reference does).
//! 3. `resources`: the rule of [`crate::resources`].
//! 4. Volumes, each a drive: `source` an existing image (regular file or
//!    block device) that is readable, and writable unless the volume is
//!    read-only; `target` non-empty, at most 4096 bytes, no NUL or newline.
//!    Outputs are images the guest writes: they must exist already and are
//!    always attached read-write (their `readonly` is ignored, as in the
//!    reference); after the run the executor puts them under `results_dir`,
//!    which is then required.
//! 5. `results_dir`, when given: absolute, and a directory if it exists (the
//!    executor creates it otherwise).
//! 6. Drives in all (root, inputs, outputs, and the config drive in agent
//!    mode) at most [`MAX_DRIVES`]; one file attached twice is refused unless
//!    every use is read-only.
//! 7. `kernel_args`: printable ASCII only (Firecracker refuses anything else),
//!    and short enough that Firecracker's 2048-byte command line (NUL
//!    included) still holds the `root=` and `virtio_mmio.device=` entries it
//!    adds.
//! 8. `mmds_message`: a JSON object of at most [`MMDS_MAX_BYTES`] bytes
//!    (Firecracker's default MMDS data store limit).
//! 9. `persist_logs_duration` not negative; `provision_scripts` names like IDs
//!    and at most [`MAX_PROVISION_BYTES`] in all.
//! 10. `ports_to_bind`, `gateway_ip`: networking is not implemented, so a
//!     non-empty value is refused rather than silently ignored.
//! 11. `agent_job`: agent mode only; one line that fits on the config drive.

mod checks;
mod error;
mod files;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use self::error::ValidationError;
pub use crate::resources::HostLimits;

use self::checks::{
    check_agent_job, check_id, check_kernel_args, check_mmds, check_network, check_persist_logs,
    check_provision_scripts, check_results_dir,
};
use self::files::{host_file, HostFile, Want};
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
    /// Memory in MiB.
    pub mem_mib: u32,
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

/// Checks `request` against the rules in the module doc and this host's limits.
pub fn validate(
    request: &ExecutionRequest,
    host: &HostLimits,
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

    const KERNEL: &str = "engine_spec.params.kernel_image";
    let kernel_fix = "give the path of an uncompressed ELF kernel (vmlinux)";
    let kernel = host_file(KERNEL, &spec.kernel_image, Want::File, false, kernel_fix)?;
    files::check_elf_kernel(KERNEL, &spec.kernel_image, &kernel.path)?;
    let initrd = match &spec.initrd_path {
        None => None,
        Some(raw) => Some(
            host_file(
                "engine_spec.params.initrd_path",
                raw,
                Want::File,
                false,
                "give the path of an initrd file, or leave initrd_path out",
            )?
            .path,
        ),
    };
    let root = host_file(
        "engine_spec.params.root_file_system",
        &spec.root_file_system,
        Want::Image,
        true,
        "give the path of a root file system image such as rootfs.ext4",
    )?;
    let size = machine_size(request.resources.as_ref(), host)?;

    let mut drives = vec![(
        "engine_spec.params.root_file_system".to_string(),
        root.dev_ino,
        Drive {
            drive_id: "rootfs".into(),
            path: root.path,
            read_only: false,
            is_root_device: true,
            role: DriveRole::RootFileSystem,
        },
    )];
    for (index, v) in request.inputs.iter().enumerate() {
        let field = format!("inputs[{index}]");
        let file = volume(
            &field,
            v,
            !v.read_only,
            "give the path of a disk image (e.g. ext4) or block device",
        )?;
        drives.push((
            format!("{field}.source"),
            file.dev_ino,
            Drive {
                drive_id: format!("input{index}"),
                path: file.path,
                read_only: v.read_only,
                is_root_device: false,
                role: DriveRole::Input {
                    index,
                    target: v.target.clone(),
                },
            },
        ));
    }
    for (index, v) in request.outputs.iter().enumerate() {
        let field = format!("outputs[{index}]");
        let fix = "give the path of an existing disk image for the guest to write (create it \
                   first, e.g. with truncate -s 64M out.img && mkfs.ext4 out.img)";
        let file = volume(&field, v, true, fix)?;
        drives.push((
            format!("{field}.source"),
            file.dev_ino,
            Drive {
                drive_id: format!("output{index}"),
                path: file.path,
                read_only: false,
                is_root_device: false,
                role: DriveRole::Output {
                    index,
                    target: v.target.clone(),
                },
            },
        ));
    }
    let results_dir = check_results_dir(&request.results_dir, !request.outputs.is_empty())?;

    let count = drives.len() + usize::from(spec.mode == Mode::Agent);
    if count > MAX_DRIVES {
        return Err(ValidationError::TooManyDrives {
            count,
            max: MAX_DRIVES,
        });
    }
    for (i, (field, id, drive)) in drives.iter().enumerate() {
        let earlier = drives[..i]
            .iter()
            .find(|(_, other, d)| other == id && !(d.read_only && drive.read_only));
        if let Some((other, _, _)) = earlier {
            return Err(ValidationError::DuplicateDrive {
                field: field.clone(),
                path: drive.path.display().to_string(),
                other: other.clone(),
            });
        }
    }
    check_kernel_args(&spec.kernel_args, count)?;
    let mmds = spec.mmds_message.as_deref().map(check_mmds).transpose()?;
    let persist_logs = check_persist_logs(request.persist_logs_duration)?;
    check_provision_scripts(&request.provision_scripts)?;
    check_network(request)?;
    check_agent_job(&spec)?;

    Ok(ValidatedRequest {
        job_id: request.job_id.clone(),
        execution_id: request.execution_id.clone(),
        mode: spec.mode,
        kernel_image: kernel.path,
        initrd,
        kernel_args: spec.kernel_args.clone(),
        vcpus: size.vcpus,
        mem_mib: size.mem_mib,
        drives: drives.into_iter().map(|(_, _, d)| d).collect(),
        mmds,
        results_dir,
        persist_logs,
        provision_scripts: request.provision_scripts.clone(),
        boot_timeout: spec.boot_timeout,
        timeout: spec.timeout,
        agent_job: spec.agent_job.clone(),
        spec,
    })
}

/// Checks one volume: its source file and its target.
fn volume(
    field: &str,
    v: &StorageVolume,
    write: bool,
    fix: &'static str,
) -> Result<HostFile, ValidationError> {
    let file = host_file(
        &format!("{field}.source"),
        &v.source,
        Want::Image,
        write,
        fix,
    )?;
    checks::check_target(&format!("{field}.target"), &v.target)?;
    Ok(file)
}

#[cfg(test)]
mod tests;
