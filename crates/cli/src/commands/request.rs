//! From `fcexec run`'s options to an [`ExecutionRequest`], in one step and
//! before any work starts: built from the options ([`build`]), or read whole
//! from `--request` ([`from_file`]).
//!
//! Built from the options:
//!
//! - No `--kernel`: the built-in test guest ([`crate::demo`]) in agent mode,
//!   running `--job` or the greeting job.
//! - `--job` implies agent mode (the job is handed to the guest agent as the
//!   `agent_job` engine param).
//! - `--image REF|PATH` (instead of `--rootfs`) is the `image` engine param,
//!   a path made absolute or a registry reference as given, and implies
//!   agent mode with fcexec's guest agent (the image's default command
//!   runs unless a command is given).
//! - A command after `--` implies agent mode with fcexec's guest agent: the
//!   `command` engine param, with `--env` (`env`, as `NAME=value` strings),
//!   `--workdir` (`working_dir`) and `--user` (`user`).
//! - `--publish HOST:GUEST[/udp]` becomes a `ports_to_bind` entry (with
//!   fcexec's `protocol` extension for UDP); `--network` the `network`
//!   extension; `--no-egress` `network` and `egress: false`.
//! - `--cpus N` is `resources.cpu.cores`; `--memory MIB` is `resources.ram.size`
//!   in bytes (MiB × 1048576).
//! - `--input PATH` and `--output PATH` become volumes with targets
//!   `/mnt/input<i>` and `/mnt/output<i>`; inputs are read-only.
//! - Paths are made absolute against the current directory; the executor
//!   checks the files themselves.
//!
//! Read from `--request FILE` (`-`: stdin):
//!
//! - The JSON is taken as the node sends it ([`ExecutionRequest`]'s
//!   deserializer: snake_case or Go field names); paths in it are used as
//!   they are. Only `--id` (the `execution_id`; a new one when the file has
//!   none) and `--timeout` change it.
//! - A file that cannot be read or is not a request fails naming the file,
//!   the line and column (serde_json's), and what to do; whether the request
//!   makes sense is the executor's to say, when it starts.
//!
//! Both ways, `--timeout` becomes the `timeout_ms` engine param ([`set_timeout`]).

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use fcexec::request::{Cpu, PortBinding, Ram};
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
    let mut agent =
        args.agent || args.job.is_some() || !args.command.is_empty() || args.image.is_some();
    let mut job = args.job.clone();
    match (images, &args.kernel, &args.rootfs) {
        (_, Some(kernel), Some(rootfs)) => {
            job_id = job_id_of(kernel);
            spec = spec
                .with_param("kernel_image", path_param("--kernel", kernel)?)
                .with_param("root_file_system", path_param("--rootfs", rootfs)?);
        }
        (_, Some(kernel), None) if args.image.is_some() => {
            job_id = job_id_of(kernel);
            spec = spec
                .with_param("kernel_image", path_param("--kernel", kernel)?)
                .with_param(
                    "image",
                    image_param(args.image.as_deref().unwrap_or_default())?,
                );
        }
        (Some(images), None, _) => {
            job_id = "demo".to_string();
            agent = true;
            job.get_or_insert_with(demo::default_job);
            spec = spec
                .with_param("kernel_image", path_param("kernel", &images.kernel)?)
                .with_param("root_file_system", path_param("rootfs", &images.rootfs)?);
        }
        _ => {
            return Err(anyhow!(
                "--kernel needs --rootfs or --image, and they need --kernel"
            ))
        }
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
    if !args.command.is_empty() {
        spec = spec.with_param("command", args.command.clone());
        if !args.env.is_empty() {
            spec = spec.with_param("env", args.env.clone());
        }
        if let Some(dir) = &args.workdir {
            spec = spec.with_param("working_dir", dir.clone());
        }
        if let Some(user) = &args.user {
            spec = spec.with_param("user", user.clone());
        }
    }
    if args.network || args.no_egress {
        spec = spec.with_param("network", true);
    }
    if args.no_egress {
        spec = spec.with_param("egress", false);
    }
    let ports_to_bind = args
        .publish
        .iter()
        .map(|p| publish(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let results_dir = match &args.results_dir {
        Some(dir) => path_param("--results-dir", dir)?,
        None => String::new(),
    };
    let mut request = ExecutionRequest {
        job_id,
        execution_id: execution_id.to_string(),
        engine_spec: Some(spec),
        resources: resources(args),
        inputs: volumes(&args.inputs, "--input", "/mnt/input", true)?,
        outputs: volumes(&args.outputs, "--output", "/mnt/output", false)?,
        results_dir,
        ports_to_bind,
        ..ExecutionRequest::default()
    };
    if let Some(timeout) = args.timeout {
        set_timeout(&mut request, timeout);
    }
    Ok(request)
}

/// The request of `fcexec run --request FILE`: the file's (or stdin's, for
/// `-`), with `--id` and `--timeout` applied. Every error is the file's.
pub fn from_file(args: &RunArgs, file: &Path) -> anyhow::Result<ExecutionRequest> {
    let mut request = read(file)?;
    if let Some(id) = &args.id {
        request.execution_id = id.clone();
    } else if request.execution_id.is_empty() {
        request.execution_id = new_execution_id();
    }
    if let Some(timeout) = args.timeout {
        set_timeout(&mut request, timeout);
    }
    Ok(request)
}

/// Where the README shows a request, for error messages.
const EXAMPLE: &str = "the README's \"The request\" shows one";

/// Reads and decodes a request file; `-` is stdin.
fn read(file: &Path) -> anyhow::Result<ExecutionRequest> {
    let stdin = file == Path::new("-");
    let name = if stdin {
        "- (stdin)".to_string()
    } else {
        file.display().to_string()
    };
    let mut text = Vec::new();
    let read = if stdin {
        std::io::stdin().lock().read_to_end(&mut text).map(drop)
    } else {
        std::fs::read(file).map(|bytes| text = bytes)
    };
    match read {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "--request {name}: no such file; give the path of an ExecutionRequest JSON file, \
             or - to read one from stdin"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("--request {name}: cannot read it")))
        }
    }
    let Some(start) = text.iter().position(|b| !b.is_ascii_whitespace()) else {
        bail!("--request {name} is empty; it must hold an ExecutionRequest as JSON ({EXAMPLE})");
    };
    // serde would also take a JSON array, as the fields in order.
    if text[start] != b'{' {
        let line = 1 + text[..start].iter().filter(|&&b| b == b'\n').count();
        let column = 1 + start
            - text[..start]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        bail!(
            "--request {name} is not an ExecutionRequest: line {line}, column {column}: \
             expected a JSON object; give the request as {{\"job_id\": ..., ...}} ({EXAMPLE})"
        );
    }
    serde_json::from_slice(&text).map_err(|e| json_error(&name, &e))
}

/// A request file's JSON error: the file, the position, serde_json's reason
/// and how to fix it.
fn json_error(name: &str, e: &serde_json::Error) -> anyhow::Error {
    let reason = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let reason = reason.strip_suffix(&position).unwrap_or(&reason);
    let (what, fix) = match e.classify() {
        serde_json::error::Category::Data => (
            "is not an ExecutionRequest",
            format!("give each field the type the node sends ({EXAMPLE})"),
        ),
        serde_json::error::Category::Eof => (
            "ends too early",
            "the JSON is cut short; complete it".to_string(),
        ),
        _ => ("is not valid JSON", "fix the JSON there".to_string()),
    };
    anyhow!(
        "--request {name} {what}: line {}, column {}: {reason}; {fix}",
        e.line(),
        e.column()
    )
}

/// Sets the `timeout_ms` engine param, replacing any spelling of it the
/// request has (params match their names ignoring ASCII case). A request
/// without an engine spec is left for the executor to refuse.
pub fn set_timeout(request: &mut ExecutionRequest, timeout: Duration) {
    if let Some(spec) = &mut request.engine_spec {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        spec.params
            .retain(|name, _| !name.eq_ignore_ascii_case("timeout_ms"));
        spec.params.insert("timeout_ms".to_string(), ms.into());
    }
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

/// `--publish HOST:GUEST[/udp]` as a port binding.
fn publish(text: &str) -> anyhow::Result<PortBinding> {
    let bad = || {
        anyhow!(
            "--publish {text:?}: give HOST_PORT:GUEST_PORT, with /udp for UDP \
             (e.g. 8080:80 or 5353:53/udp)"
        )
    };
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, p)) if p.eq_ignore_ascii_case("udp") || p.eq_ignore_ascii_case("tcp") => {
            (ports, p.to_ascii_lowercase())
        }
        Some(_) => return Err(bad()),
        None => (text, String::new()),
    };
    let (host, guest) = ports.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(bad)
    };
    Ok(PortBinding {
        ip: String::new(),
        host_port: i64::from(port(host)?),
        executor_port: i64::from(port(guest)?),
        protocol,
    })
}

/// `--image`: a path made absolute (see [`fcexec_images::looks_like_path`]),
/// a registry reference as given.
fn image_param(raw: &str) -> anyhow::Result<String> {
    match fcexec_images::looks_like_path(raw) {
        true => path_param("--image", Path::new(raw)),
        false => Ok(raw.to_string()),
    }
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
    fn published_ports_and_network_options() {
        let r = build(
            &run_args(&["-p", "8080:80", "--publish", "5353:53/udp", "--no-egress"]),
            "n",
            Some(&images()),
        )
        .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["ports_to_bind"],
            json!([
                {"ip": "", "host_port": 8080, "executor_port": 80},
                {"ip": "", "host_port": 5353, "executor_port": 53, "protocol": "udp"},
            ])
        );
        let params = &v["engine_spec"]["params"];
        assert_eq!(
            (&params["network"], &params["egress"]),
            (&json!(true), &json!(false))
        );
        for bad in ["8080", "0:80", "8080:80/sctp", "x:80", "8080:70000"] {
            let err = build(&run_args(&["-p", bad]), "n", Some(&images())).unwrap_err();
            assert!(err.to_string().contains("--publish"), "{bad}: {err}");
        }
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
    fn a_command_after_double_dash_is_for_the_guest_agent() {
        let args = run_args(&[
            "--kernel",
            "/k/vmlinux",
            "--rootfs",
            "/k/root.ext4",
            "--env",
            "A=1",
            "--workdir",
            "/srv",
            "--user",
            "1000",
            "--",
            "/bin/sh",
            "-c",
            "echo hi",
        ]);
        let r = build(&args, "x", None).unwrap();
        let params = &r.engine_spec.unwrap().params;
        assert_eq!(params["agent"], true);
        assert_eq!(params["command"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(params["env"], json!(["A=1"]));
        assert_eq!(
            (params["working_dir"].as_str(), params["user"].as_str()),
            (Some("/srv"), Some("1000"))
        );
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

    /// The README's request, as the node sends it.
    const README_REQUEST: &str = r#"{"job_id": "job-1", "execution_id": "exec-1",
 "engine_spec": {"type": "firecracker",
   "params": {"kernel_image": "/images/vmlinux", "root_file_system": "/images/rootfs.ext4",
              "initrd_path": "/images/initrd", "kernel_args": "console=ttyS0 reboot=k panic=1",
              "mmds_message": "{\"key\": \"value\"}",
              "agent": true, "Timeout_MS": 7}},
 "resources": {"cpu": {"cores": 1.5}, "ram": {"size": 268435456}},
 "inputs":  [{"type": "local", "source": "/data/in.img",  "target": "/mnt/in", "readonly": true}],
 "outputs": [{"type": "local", "source": "/data/out.img", "target": "/mnt/out"}],
 "results_dir": "/data/results", "persist_logs_duration": 3600000000000}"#;

    fn request_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("req.json");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    #[test]
    fn a_request_file_is_taken_as_it_is() {
        let (_dir, file) = request_file(README_REQUEST);
        let r = from_file(&run_args(&["--request", "x"]), &file).unwrap();
        let expected: ExecutionRequest = serde_json::from_str(README_REQUEST).unwrap();
        assert_eq!(r, expected);
        assert_eq!(r.execution_id, "exec-1");
        assert_eq!(r.outputs[0].source, "/data/out.img");
    }

    #[test]
    fn id_and_timeout_override_the_file() {
        let (_dir, file) = request_file(README_REQUEST);
        let args = run_args(&["--request", "x", "--id", "mine", "--timeout", "1.5s"]);
        let r = from_file(&args, &file).unwrap();
        assert_eq!(r.execution_id, "mine");
        let params = &r.engine_spec.as_ref().unwrap().params;
        assert_eq!(params["timeout_ms"], json!(1500));
        assert!(params.get("Timeout_MS").is_none(), "{params:?}");
        let spec = fcexec::EngineSpec::decode(r.engine_spec.as_ref().unwrap()).unwrap();
        assert_eq!(spec.timeout, Some(Duration::from_millis(1500)));
        // No execution_id in the file: a new one.
        let (_dir, file) = request_file(r#"{"JobID": "j"}"#);
        let r = from_file(&run_args(&["--request", "x"]), &file).unwrap();
        assert!(r.execution_id.starts_with("run-"), "{r:?}");
        // Built from the options, too.
        let args = run_args(&["--timeout", "2m"]);
        let r = build(&args, "e", Some(&images())).unwrap();
        assert_eq!(r.engine_spec.unwrap().params["timeout_ms"], json!(120_000));
    }

    #[test]
    fn bad_request_files_name_the_file_the_position_and_the_fix() {
        let args = run_args(&["--request", "x"]);
        let error = |text: Option<&str>| {
            let (dir, file) = request_file(text.unwrap_or(""));
            if text.is_none() {
                std::fs::remove_file(&file).unwrap();
            }
            let e = from_file(&args, &file).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--request {}", file.display())),
                "{e}"
            );
            drop(dir);
            e
        };
        let e = error(None);
        assert!(
            e.contains("no such file") && e.contains("or - to read"),
            "{e}"
        );
        let e = error(Some(" \n"));
        assert!(e.contains("is empty") && e.contains("The request"), "{e}");
        let e = error(Some("{\"job_id\": \"j\",\n  \"execution_id\" \"e\"}"));
        assert!(
            e.contains("is not valid JSON: line 2, column 18: expected `:`"),
            "{e}"
        );
        let e = error(Some("{\"job_id\": \"j\""));
        assert!(e.contains("ends too early: line 1, column 14"), "{e}");
        let e = error(Some("{\"resources\": {\"cpu\": {\"cores\": \"two\"}}}"));
        assert!(
            e.contains("is not an ExecutionRequest: line 1, column 37: invalid type"),
            "{e}"
        );
        assert!(e.contains("give each field the type"), "{e}");
        let e = error(Some("\n  [\"job\", \"exec\"]"));
        assert!(
            e.contains("is not an ExecutionRequest: line 2, column 3: expected a JSON object"),
            "{e}"
        );
    }
}
