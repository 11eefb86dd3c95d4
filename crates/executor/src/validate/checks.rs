//! The checks of single fields that need no file system: IDs, targets,
//! kernel arguments, MMDS, retention, scripts, networking.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    ValidationError, CMDLINE_BYTES_PER_DRIVE, CMDLINE_ROOT_BYTES, KERNEL_CMDLINE_MAX, MAX_ID_LEN,
    MAX_PROVISION_BYTES, MAX_TARGET_LEN, MMDS_MAX_BYTES,
};
use crate::config_drive::max_job_len;
use crate::spec::{EngineSpec, Mode};

/// Shortens a value for an error message.
pub(super) fn shorten(value: &str) -> String {
    let mut out: String = value.chars().take(64).collect();
    if out.len() < value.len() {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// An ID or name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
pub(super) fn check_id(field: &str, id: &str) -> Result<(), ValidationError> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_ID_LEN {
        "is longer than 64 characters"
    } else if id == "." || id == ".." {
        "is a path traversal"
    } else if id.starts_with('.') {
        "starts with '.'"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "has a character outside A-Z, a-z, 0-9, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    let value = if id.len() > MAX_ID_LEN {
        id.chars().take(MAX_ID_LEN).chain("...".chars()).collect()
    } else {
        id.to_string()
    };
    Err(ValidationError::InvalidId {
        field: field.to_string(),
        value,
        reason,
    })
}

/// A volume target: non-empty, one line, at most 4096 bytes.
pub(super) fn check_target(field: &str, target: &str) -> Result<(), ValidationError> {
    let fix = "give the guest path to mount the volume at, e.g. /data";
    if target.is_empty() {
        return Err(ValidationError::Missing {
            field: field.to_string(),
            fix,
        });
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(ValidationError::TooLong {
            field: field.to_string(),
            len: target.len(),
            max: MAX_TARGET_LEN,
            fix: fix.to_string(),
        });
    }
    if target.contains(['\0', '\n']) {
        return Err(ValidationError::InvalidValue {
            field: field.to_string(),
            value: shorten(target),
            reason: "contains a NUL byte or newline".into(),
            fix,
        });
    }
    Ok(())
}

/// `kernel_args`: printable ASCII, and room left for Firecracker's additions.
pub(super) fn check_kernel_args(args: &str, drives: usize) -> Result<(), ValidationError> {
    const FIELD: &str = "engine_spec.params.kernel_args";
    if let Some((at, b)) = args
        .bytes()
        .enumerate()
        .find(|(_, b)| !(b' '..=b'~').contains(b))
    {
        return Err(ValidationError::InvalidValue {
            field: FIELD.into(),
            value: shorten(args),
            reason: format!("has byte 0x{b:02x} at offset {at}"),
            fix: "Firecracker takes printable ASCII only on the kernel command line; remove it",
        });
    }
    let max = KERNEL_CMDLINE_MAX - CMDLINE_ROOT_BYTES - drives * CMDLINE_BYTES_PER_DRIVE;
    if args.len() > max {
        return Err(ValidationError::TooLong {
            field: FIELD.into(),
            len: args.len(),
            max,
            fix: format!(
                "Firecracker's command line holds 2048 bytes with its NUL, the root= entry and a \
                 virtio_mmio.device= entry for each of the {drives} drives; shorten kernel_args"
            ),
        });
    }
    Ok(())
}

/// `mmds_message`: a JSON object within Firecracker's MMDS limit.
pub(super) fn check_mmds(text: &str) -> Result<serde_json::Value, ValidationError> {
    const FIELD: &str = "engine_spec.params.mmds_message";
    if text.len() > MMDS_MAX_BYTES {
        return Err(ValidationError::TooLong {
            field: FIELD.into(),
            len: text.len(),
            max: MMDS_MAX_BYTES,
            fix: "Firecracker's MMDS store holds 51200 bytes by default; send less metadata".into(),
        });
    }
    let invalid = |reason: String| ValidationError::InvalidValue {
        field: FIELD.into(),
        value: shorten(text),
        reason,
        fix: "give a JSON object as text, e.g. {\"latest\": {\"meta-data\": {...}}}",
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid("is JSON but not an object".into())),
        Err(e) => Err(invalid(format!("is not valid JSON ({e})"))),
    }
}

/// `persist_logs_duration`: nanoseconds, not negative, rounded up to a
/// whole millisecond (the record keeps milliseconds, where 0 means "keep
/// until removed": 1 ns must not become that).
pub(super) fn check_persist_logs(nanos: i64) -> Result<Duration, ValidationError> {
    const NANOS_PER_MS: u64 = 1_000_000;
    u64::try_from(nanos)
        .map(|n| Duration::from_millis(n.div_ceil(NANOS_PER_MS)))
        .map_err(|_| ValidationError::InvalidValue {
            field: "persist_logs_duration".into(),
            value: nanos.to_string(),
            reason: "is a negative duration".into(),
            fix: "give nanoseconds (Go time.Duration), 0 or more",
        })
}

/// `provision_scripts`: names like IDs, at most 1 MiB in all.
pub(super) fn check_provision_scripts(
    scripts: &BTreeMap<String, Vec<u8>>,
) -> Result<(), ValidationError> {
    let mut total = 0;
    for (name, body) in scripts {
        check_id(&format!("provision_scripts[{name:?}]"), name)?;
        total += body.len();
    }
    if total > MAX_PROVISION_BYTES {
        return Err(ValidationError::TooLong {
            field: "provision_scripts".into(),
            len: total,
            max: MAX_PROVISION_BYTES,
            fix: "send less script text, or put large files on an input volume".into(),
        });
    }
    Ok(())
}

/// `agent_job`: agent mode only, one line that fits on the config drive.
pub(super) fn check_agent_job(spec: &EngineSpec) -> Result<(), ValidationError> {
    const FIELD: &str = "engine_spec.params.agent_job";
    let Some(job) = &spec.agent_job else {
        return Ok(());
    };
    if spec.mode != Mode::Agent {
        return Err(ValidationError::InvalidValue {
            field: FIELD.into(),
            value: shorten(job),
            reason: "is given in plain mode, where no agent reads it".into(),
            fix: "set engine_spec.params.agent to true, or remove agent_job",
        });
    }
    if job.contains(['\0', '\n']) {
        return Err(ValidationError::InvalidValue {
            field: FIELD.into(),
            value: shorten(job),
            reason: "contains a NUL byte or newline".into(),
            fix: "give the job on one line",
        });
    }
    if job.len() > max_job_len() {
        return Err(ValidationError::TooLong {
            field: FIELD.into(),
            len: job.len(),
            max: max_job_len(),
            fix: "the job must fit in the config drive's 512-byte sector; shorten it".into(),
        });
    }
    Ok(())
}

/// `command` (fcexec's guest agent): agent mode only, and the agent comes
/// in fcexec's own initrd, so no `initrd_path` beside it.
pub(super) fn check_command(spec: &EngineSpec) -> Result<(), ValidationError> {
    const FIELD: &str = "engine_spec.params.command";
    let Some(command) = &spec.command else {
        return Ok(());
    };
    let shown = shorten(&command.argv.join(" "));
    if spec.mode != Mode::Agent {
        return Err(ValidationError::InvalidValue {
            field: FIELD.into(),
            value: shown,
            reason: "is given in plain mode, where no agent runs it".into(),
            fix: "set engine_spec.params.agent to true, or remove command",
        });
    }
    if spec.initrd_path.is_some() {
        return Err(ValidationError::InvalidValue {
            field: "engine_spec.params.initrd_path".into(),
            value: shown,
            reason:
                "is given with a command: fcexec boots its guest agent from an initrd of its own"
                    .into(),
            fix: "remove initrd_path (a user's initrd works in plain mode)",
        });
    }
    let text = command
        .argv
        .iter()
        .chain(command.env.iter().flat_map(|(k, v)| [k, v]))
        .chain(command.working_dir.iter())
        .chain(command.user.iter());
    if text.into_iter().any(|t| t.contains('\0')) {
        return Err(ValidationError::InvalidValue {
            field: FIELD.into(),
            value: shown,
            reason: "holds a NUL byte (in the command, env, working_dir or user)".into(),
            fix: "remove the NUL byte",
        });
    }
    Ok(())
}
