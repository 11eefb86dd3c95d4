//! A request that names an `image` and no command, through fcexec's guest
//! agent as PID 1: the image's default command runs and its exit code
//! arrives.
//!
//! The executor starts the request against the real VMM (the test guest,
//! which ignores the root file system and the agent's initrd, stands in
//! for a Linux kernel that cannot boot here); the execution's own copy of
//! the built image and the job on its config drive are then handed to the
//! agent running as PID 1 of fresh namespaces, with the rootfs on a loop
//! device (the agent's PID-1 harness of `crates/guest-agent/tests`), and a
//! scripted host takes its report.

mod common;
#[path = "../../guest-agent/tests/support/harness.rs"]
mod harness;
#[path = "../../guest-agent/tests/support/host.rs"]
mod host;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::oci::{oci_layout_of, with_image};
use common::Harness;
use fcexec::{Executor, LogOptions};
use fcexec_guest_protocol::ExitStatus;
use harness::{busybox_tree, config_drive, Agent, Loop, Slot};
use host::{accept, serve, Stored};
use serde_json::json;
use test_guest::Job;

/// Not a test: the namespaced agent's entry (see the harness).
#[test]
fn pid1_harness_entry() {
    harness::entry();
}

/// A tar of the tree at `dir`, owned by root, symbolic links kept.
fn tar_of(dir: &std::path::Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

#[tokio::test]
async fn an_image_request_runs_the_image_default_command_under_the_agent_as_pid1() {
    let h = Harness::new(testkit::require_vmm!());
    if let Some(reason) = harness::missing() {
        testkit::skip(
            "an_image_request_runs_the_image_default_command_under_the_agent_as_pid1",
            &reason,
        );
        return;
    }
    // The image: busybox, and a default command that says who runs it.
    let tree = h.path("tree");
    busybox_tree(&tree);
    let oci = h.path("oci");
    oci_layout_of(
        &oci,
        tar_of(&tree),
        json!({"Entrypoint": ["/bin/sh", "-c"],
               "Cmd": ["echo \"from the image: $GREETING in $(pwd) as $(id -u)\"; exit 7"],
               "Env": ["PATH=/bin", "GREETING=hello"],
               "WorkingDir": "/work", "User": "1000"}),
    );

    // The executor builds it, copies it for the execution and plans the job.
    let config = fcexec::ExecutorConfig {
        agent_binary: Some(testkit::linux_guest::agent_binary().unwrap()),
        jail: common::unjailed(),
        ..h.config()
    };
    let ex = Executor::new("image-agent", config).await.unwrap();
    let job = Job::new().out("up\n").hang();
    let request = with_image(
        h.request(
            "img",
            json!({"agent": true,
                   "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())}),
        ),
        &oci,
    );
    ex.start(&request).await.unwrap();
    let mut logs = ex
        .logs(
            "img",
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    assert_eq!(logs.next().await.unwrap().unwrap().data, b"up\n");
    let (vm, spec) = common::vm_files(&h.state_root().join("image-agent").join("img"));
    assert_eq!(
        spec.get("command"),
        Some(&json!([
            "/bin/sh",
            "-c",
            "echo \"from the image: $GREETING in $(pwd) as $(id -u)\"; exit 7"
        ])),
        "{spec}"
    );
    let copy = PathBuf::from(vm["drives"][0]["path_on_host"].as_str().unwrap());
    common::cancel_and_check(&ex, "img").await;

    // The agent as PID 1 with that rootfs and that job.
    let _slot = Slot::take();
    let rootfs = h.path("rootfs.ext4");
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(&copy)
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(copied.success());
    ex.remove("img", Duration::from_secs(10)).await.unwrap();
    let device = Loop::attach(&rootfs);
    let config = h.path("config.img");
    std::fs::write(&config, config_drive(spec.to_string().as_bytes(), 200)).unwrap();
    let socket = h.path("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut agent = Agent::start(
        &[device.0.clone(), config],
        &socket,
        &h.path("mnt"),
        &h.path("console.log"),
    );
    let mut stored = Stored::default();
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut connected = false;
    while Instant::now() < give_up && !connected {
        if let Some(mut conn) = accept(&listener, Duration::from_millis(50)) {
            connected = true;
            serve(
                &mut conn,
                &mut stored,
                Duration::from_secs(30),
                &mut |_, _, _| {},
            );
        }
    }
    let code = agent.wait(Duration::from_secs(30));
    let console = agent.console();
    assert!(connected, "the agent never connected; console:\n{console}");
    assert_eq!(
        stored.status(),
        Some(ExitStatus::Code(7)),
        "stderr: {}\nconsole:\n{console}",
        stored.err()
    );
    assert_eq!(stored.out(), "from the image: hello in /work as 1000\n");
    assert_eq!(code, Some(0), "console:\n{console}");
}
