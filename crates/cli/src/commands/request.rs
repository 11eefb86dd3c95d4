//! From `fcexec run`'s options to an [`ExecutionRequest`], in one step and
//! before any work starts.
//!
//! - No `--kernel`: the built-in test guest ([`crate::demo`]) in agent mode,
//!   running `--job` or the greeting job.
//! - `--job` implies agent mode (the job is handed to the guest agent as the
//!   `agent_job` engine param).
//! - `--cpus N` is `resources.cpu.cores`; `--memory MIB` is `resources.ram.size`
//!   in bytes (MiB × 1048576).
//! - `--input PATH` and `--output PATH` become volumes with targets
//!   `/mnt/input<i>` and `/mnt/output<i>`; inputs are read-only.
//! - Paths are made absolute against the current directory; the executor
//!   checks the files themselves.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use fcexec::request::{Cpu, Ram};
use fcexec::{ExecutionRequest, Resources, SpecConfig, StorageVolume};

use crate::args::RunArgs;
use crate::demo::{self, DemoImages};

/// The request of `fcexec run`, with `images` the demo's files when no
/// `--kernel` was given.
pub fn build(
    args: &RunArgs,
    execution_id: &str,
    images: Option<&DemoImages>,
) -> anyhow::Result<ExecutionRequest> {
    let mut spec = SpecConfig::new("firecracker");
    let job_id;
    let mut agent = args.agent || args.job.is_some();
    let mut job = args.job.clone();
    match (images, &args.kernel, &args.rootfs) {
        (_, Some(kernel), Some(rootfs)) => {
            job_id = job_id_of(kernel);
            spec = spec
                .with_param("kernel_image", path_param("--kernel", kernel)?)
                .with_param("root_file_system", path_param("--rootfs", rootfs)?);
        }
        (Some(images), None, _) => {
            job_id = "demo".to_string();
            agent = true;
            job.get_or_insert_with(demo::default_job);
            spec = spec
                .with_param("kernel_image", path_param("kernel", &images.kernel)?)
                .with_param("root_file_system", path_param("rootfs", &images.rootfs)?);
        }
        _ => return Err(anyhow!("--kernel and --rootfs must be given together")),
    }
    if let Some(initrd) = &args.initrd {
        spec = spec.with_param("initrd_path", path_param("--initrd", initrd)?);
    }
    if let Some(kernel_args) = &args.kernel_args {
        spec = spec.with_param("kernel_args", kernel_args.clone());
    }
    if agent {
        spec = spec.with_param("agent", true);
    }
    if let Some(job) = job {
        spec = spec.with_param("agent_job", job);
    }
    let results_dir = match &args.results_dir {
        Some(dir) => path_param("--results-dir", dir)?,
        None => String::new(),
    };
    Ok(ExecutionRequest {
        job_id,
        execution_id: execution_id.to_string(),
        engine_spec: Some(spec),
        resources: resources(args),
        inputs: volumes(&args.inputs, "--input", "/mnt/input", true)?,
        outputs: volumes(&args.outputs, "--output", "/mnt/output", false)?,
        results_dir,
        ..ExecutionRequest::default()
    })
}

/// A new execution id: `run-<unix ms>-<pid>`.
pub fn new_execution_id() -> String {
    format!("run-{}-{}", fcexec::record::now_ms(), std::process::id())
}

/// `--cpus` and `--memory` as the node's resources; `None` when neither is given.
fn resources(args: &RunArgs) -> Option<Resources> {
    if args.cpus.is_none() && args.memory.is_none() {
        return None;
    }
    Some(Resources {
        cpu: args.cpus.map(|cores| Cpu {
            cores: Some(cores),
            ..Cpu::default()
        }),
        ram: args.memory.map(|mib| Ram {
            size: Some(i128::from(mib) * 1_048_576),
            ..Ram::default()
        }),
        ..Resources::default()
    })
}

/// Volumes from paths, targets `<prefix><index>`.
fn volumes(
    paths: &[std::path::PathBuf],
    option: &str,
    prefix: &str,
    read_only: bool,
) -> anyhow::Result<Vec<StorageVolume>> {
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            Ok(StorageVolume {
                kind: "bind".to_string(),
                source: path_param(option, path)?,
                target: format!("{prefix}{i}"),
                read_only,
            })
        })
        .collect()
}

/// A path as an absolute UTF-8 string, as the request's JSON holds it.
fn path_param(option: &str, path: &Path) -> anyhow::Result<String> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("{option} {}: cannot make it absolute", path.display()))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|raw| anyhow!("{option} {raw:?}: not valid UTF-8; rename the file"))
}

/// A job id from the kernel's file name, with characters an id cannot hold
/// replaced by `_`.
fn job_id_of(kernel: &Path) -> String {
    let name = kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() || id.starts_with('.') {
        id = format!("kernel{id}").chars().take(64).collect();
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = crate::args::Cli::try_parse_from([&["fcexec", "run"], args].concat()).unwrap();
        match cli.command {
            crate::args::Command::Run(run) => *run,
            other => panic!("{other:?}"),
        }
    }

    fn images() -> DemoImages {
        DemoImages {
            kernel: "/s/.demo/k.elf".into(),
            rootfs: "/s/.demo/rootfs.img".into(),
        }
    }

    #[test]
    fn the_demo_runs_the_greeting_job_in_agent_mode() {
        let r = build(&run_args(&[]), "e1", Some(&images())).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["job_id"], "demo");
        assert_eq!(v["execution_id"], "e1");
        let params = &v["engine_spec"]["params"];
        assert_eq!(params["kernel_image"], "/s/.demo/k.elf");
        assert_eq!(params["root_file_system"], "/s/.demo/rootfs.img");
        assert_eq!(params["agent"], true);
        assert_eq!(params["agent_job"], demo::default_job());
        assert!(r.resources.is_none());
        let job = build(&run_args(&["--job", "exit:3"]), "e", Some(&images())).unwrap();
        assert_eq!(
            job.engine_spec.unwrap().params["agent_job"],
            json!("exit:3")
        );
    }

    #[test]
    fn resources_volumes_and_a_user_kernel() {
        let args = run_args(&[
            "--kernel",
            "/k/vmlinux-6.1",
            "--rootfs",
            "/k/root.ext4",
            "--cpus",
            "1.5",
            "--memory",
            "256",
            "--input",
            "/d/a.img",
            "--input",
            "/d/b.img",
            "--output",
            "/d/o.img",
            "--results-dir",
            "/r",
            "--kernel-args",
            "console=ttyS0",
        ]);
        let r = build(&args, "e2", None).unwrap();
        assert_eq!(r.job_id, "vmlinux-6.1");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["resources"]["cpu"]["cores"], 1.5);
        assert_eq!(v["resources"]["ram"]["size"], 256 * 1_048_576);
        assert_eq!(v["inputs"][1]["target"], "/mnt/input1");
        assert_eq!(v["inputs"][1]["readonly"], true);
        assert_eq!(v["outputs"][0]["target"], "/mnt/output0");
        assert_eq!(v["outputs"][0]["readonly"], false);
        assert_eq!(v["results_dir"], "/r");
        let params = &v["engine_spec"]["params"];
        assert_eq!(params["kernel_args"], "console=ttyS0");
        assert!(params.get("agent").is_none());
    }

    #[test]
    fn job_ids_from_odd_kernel_names() {
        assert_eq!(job_id_of(Path::new("/a/my kernel")), "my_kernel");
        assert_eq!(job_id_of(Path::new("/a/.hidden")), "kernel.hidden");
        assert_eq!(job_id_of(Path::new("/")), "kernel");
    }

    #[test]
    fn generated_ids_are_valid() {
        fcexec::state_dir::check_id("execution_id", &new_execution_id()).unwrap();
    }
}
