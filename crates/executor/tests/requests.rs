//! Requests against the real VMM: volumes become drives in the documented
//! order and outputs land under `results_dir`; resources and MMDS reach the
//! VMM (MMDS data is loaded into the VMM; a guest reads it once fcexec
//! attaches network interfaces); malformed requests are refused with errors naming the field and
//! leave nothing behind.

mod common;

use std::collections::BTreeSet;

use common::{files_under, firecracker_pids, Harness};
use fcexec::{ExecutionRequest, ExecutorError};
use serde_json::{json, Value};
use test_guest::Job;

#[tokio::test]
async fn an_input_volume_is_copied_to_an_output_volume_under_results_dir() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("volumes").await;
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(h.path("in.img"), &data).unwrap();
    std::fs::write(h.path("out.img"), vec![0u8; data.len()]).unwrap();
    let results = h.path("results");
    // Drive order: 0 rootfs, 1 the input, 2 the output, then the config drive.
    let job = Job::new().copy(1, 2, data.len() as u64).out("copied\n");
    let mut request = h.agent("vol", &job);
    request.inputs = serde_json::from_value(json!([{"type": "local", "source": h.path("in.img"), "target": "/mnt/in", "readonly": true}])).unwrap();
    request.outputs = serde_json::from_value(
        json!([{"type": "local", "source": h.path("out.img"), "target": "/mnt/out"}]),
    )
    .unwrap();
    request.results_dir = results.display().to_string();
    let r = ex.run(&request).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "copied\n"), "{r:?}");
    let copied = std::fs::read(results.join("vol-0-out")).unwrap();
    assert!(
        copied == data,
        "the output image under results_dir holds the input's bytes"
    );
}

#[tokio::test]
async fn resources_and_mmds_reach_the_vmm() {
    let h = Harness::new(testkit::require_vmm!());
    // Reads the VMM's API socket at its unjailed path.
    let config = fcexec::ExecutorConfig {
        jail: common::unjailed(),
        ..h.config()
    };
    let ex = fcexec::Executor::new("res", config).await.unwrap();
    let mut request = h.request(
        "mmds",
        json!({"agent": true, "kernel_args": format!("console=ttyS0 {}", Job::new().hang().to_kernel_arg()),
               "mmds_message": "{\"job\": {\"id\": 7}}"}),
    );
    request.resources =
        serde_json::from_value(json!({"cpu": {"cores": 1.5}, "ram": {"size": 48u64 << 20}}))
            .unwrap();
    ex.start(&request).await.unwrap();
    let client = firecracker_api::Client::new(ex.state_dir().join("mmds/api.sock"));
    let config = client.get_machine_configuration().await.unwrap();
    assert_eq!(
        (config.vcpu_count, config.mem_size_mib),
        (2, 48),
        "1.5 cores -> 2 vCPUs, 48 MiB in bytes -> 48"
    );
    // Without a network interface Firecracker keeps MMDS data pre-boot only
    // (GET /mmds answers "not initialized" at runtime); its log confirms the load.
    let log = std::fs::read_to_string(ex.state_dir().join("mmds/firecracker.log")).unwrap();
    assert!(
        log.contains("Successfully added metadata to mmds from file"),
        "{log}"
    );
    ex.cleanup().await.unwrap();
}

/// Builds a request from a valid base with one change at a JSON path.
fn with(base: &Value, path: &[&str], value: Option<Value>) -> Value {
    let mut v = base.clone();
    let mut cur = &mut v;
    for key in &path[..path.len() - 1] {
        cur = &mut cur[*key];
    }
    let last = path[path.len() - 1];
    match value {
        Some(x) => cur[last] = x,
        None => {
            if let Some(o) = cur.as_object_mut() {
                o.remove(last);
            }
        }
    }
    v
}

#[tokio::test]
async fn malformed_requests_name_the_field_and_leave_nothing_behind() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("bad").await;
    let good = serde_json::to_value(h.agent("good", &Job::new())).unwrap();
    std::fs::write(h.path("bzimage"), b"MZ\x00\x00not an elf").unwrap();
    std::fs::write(h.path("img"), vec![0u8; 4096]).unwrap();
    let long = "x".repeat(5000);
    let p = |k: &str| ["engine_spec", "params", k].map(String::from).to_vec();
    let s = |k: &str| vec![k.to_string()];
    let img = json!(h.path("img"));
    #[rustfmt::skip]
    let cases: Vec<(Vec<String>, Option<Value>, &str)> = vec![
        (s("execution_id"), Some(json!("")), "execution_id"),
        (s("execution_id"), Some(json!("../escape")), "execution_id"),
        (s("execution_id"), Some(json!("..")), "execution_id"),
        (s("execution_id"), Some(json!("a/b")), "execution_id"),
        (s("execution_id"), Some(json!("x".repeat(65))), "execution_id"),
        (s("job_id"), Some(json!("")), "job_id"),
        (s("job_id"), Some(json!(".hidden")), "job_id"),
        (s("engine_spec"), None, "engine_spec"),
        (vec!["engine_spec".into(), "type".into()], Some(json!("docker")), "engine_spec.type"),
        (p("kernel_image"), None, "engine_spec.params.kernel_image"),
        (p("kernel_image"), Some(json!("")), "engine_spec.params.kernel_image"),
        (p("kernel_image"), Some(json!("/nonexistent/vmlinux")), "engine_spec.params.kernel_image"),
        (p("kernel_image"), Some(json!(h.path("bzimage"))), "engine_spec.params.kernel_image"),
        (p("kernel_image"), Some(json!(42)), "engine_spec.params.kernel_image"),
        (p("root_file_system"), None, "engine_spec.params.root_file_system"),
        (p("root_file_system"), Some(json!("/nonexistent/rootfs.ext4")), "engine_spec.params.root_file_system"),
        (p("initrd_path"), Some(json!("/nonexistent/initrd")), "engine_spec.params.initrd_path"),
        (p("kernel_args"), Some(json!(long)), "engine_spec.params.kernel_args"),
        (p("kernel_args"), Some(json!("console=ttyS0\u{7}")), "engine_spec.params.kernel_args"),
        (p("mmds_message"), Some(json!("not json")), "engine_spec.params.mmds_message"),
        (p("mmds_message"), Some(json!("x".repeat(60_000))), "engine_spec.params.mmds_message"),
        (p("agent"), Some(json!("yes")), "engine_spec.params.agent"),
        (p("boot_timeout_ms"), Some(json!(-5)), "engine_spec.params.boot_timeout_ms"),
        (s("resources"), Some(json!({"cpu": {"cores": 0}})), "resources.cpu.cores"),
        (s("resources"), Some(json!({"cpu": {"cores": 1000}})), "resources.cpu.cores"),
        (s("resources"), Some(json!({"ram": {"size": 0}})), "resources.ram.size"),
        (s("resources"), Some(json!({"ram": {"size": 1u64 << 60}})), "resources.ram.size"),
        (s("resources"), Some(json!({"gpus": [{"index": 0}]})), "resources.gpus"),
        (s("inputs"), Some(json!([{"source": "/nonexistent/in.img", "target": "/mnt"}])), "inputs[0].source"),
        (s("inputs"), Some(json!([{"source": img, "target": ""}])), "inputs[0].target"),
        (s("outputs"), Some(json!([{"source": img, "target": "/out"}])), "results_dir"),
        (s("results_dir"), Some(json!("relative/dir")), "results_dir"),
        (s("persist_logs_duration"), Some(json!(-1)), "persist_logs_duration"),
        (s("ports_to_bind"), Some(json!([{"IP": "0.0.0.0", "HostPort": 0, "ExecutorPort": 80}])), "ports_to_bind[0].host_port"),
        (s("ports_to_bind"), Some(json!([{"HostPort": 80, "ExecutorPort": 80, "Protocol": "sctp"}])), "ports_to_bind[0].protocol"),
        (s("gateway_ip"), Some(json!("10.0.0.300")), "gateway_ip"),
    ];
    assert!(cases.len() >= 25);
    let before_files = files_under(ex.state_dir());
    for (path, value, field) in &cases {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let json = with(&good, &path, value.clone());
        let request: ExecutionRequest = match serde_json::from_value(json) {
            Ok(r) => r,
            Err(e) => {
                panic!("{field}: the request should decode and fail validation, not decoding: {e}")
            }
        };
        let err = ex.start(&request).await.unwrap_err();
        let ExecutorError::Invalid(invalid) = &err else {
            panic!("{field}: expected a validation error, got {err}");
        };
        assert!(
            invalid.field().starts_with(field),
            "{field}: the error names {} ({err})",
            invalid.field()
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(ex.list().is_empty());
    assert_eq!(
        files_under(ex.state_dir()),
        before_files,
        "no files, sockets or directories left"
    );
    assert!(
        firecracker_pids(ex.state_dir()).is_empty(),
        "no processes left"
    );
    let distinct: BTreeSet<&str> = cases.iter().map(|c| c.2).collect();
    assert!(distinct.len() >= 20, "every field is covered");
}
