//! The host side of fcexec's guest agent against the real VMM: a request
//! with a `command` boots with the agent's initrd and kernel arguments and
//! a config drive carrying the job as JSON. The test guest ignores the
//! initrd and runs its own job, so this checks what the VMM is handed.

mod common;

use common::Harness;
use fcexec::{Executor, LogOptions};
use serde_json::json;
use test_guest::Job;

#[tokio::test]
async fn a_command_boots_with_the_agent_initrd_and_its_job_on_the_config_drive() {
    let h = Harness::new(testkit::require_vmm!());
    // The real static agent (the test guest ignores the initrd it is in).
    let agent = testkit::linux_guest::agent_binary().unwrap();
    let config = fcexec::ExecutorConfig {
        agent_binary: Some(agent.clone()),
        jail: common::unjailed(),
        ..h.config()
    };
    let ex = Executor::new("agent", config).await.unwrap();
    let job = Job::new().out("up\n").hang();
    let mut request = h.request(
        "cmd",
        json!({"agent": true,
               "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg()),
               "command": ["/bin/sh", "-c", "echo hi"],
               "env": {"GREETING": "hello"},
               "working_dir": "/srv",
               "user": "1000:1000"}),
    );
    request
        .provision_scripts
        .insert("01-setup".into(), b"echo setting up".to_vec());
    ex.start(&request).await.unwrap();
    let mut logs = ex
        .logs(
            "cmd",
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    let first = logs.next().await.unwrap().unwrap();
    assert_eq!(first.data, b"up\n");

    let run = h.state_root().join("agent/cmd");
    let (vm, spec) = common::vm_files(&run);
    let boot = &vm["boot-source"];
    let initrd = boot["initrd_path"].as_str().expect("an initrd");
    assert_eq!(
        std::fs::read(initrd).unwrap(),
        fcexec::initrd::archive(&std::fs::read(&agent).unwrap())
    );
    let args = boot["boot_args"].as_str().unwrap();
    assert!(
        args.contains("reboot=k") && args.contains("panic=1"),
        "{args}"
    );

    let drive = std::fs::read(run.join("config.img")).unwrap();
    assert_eq!(spec["command"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(spec["env"], json!([["GREETING", "hello"]]));
    assert_eq!(
        (spec["working_dir"].as_str(), spec["user"].as_str()),
        (Some("/srv"), Some("1000:1000"))
    );
    assert_eq!(spec["provision_scripts"][0]["name"], "01-setup");
    assert_eq!(spec["cancel_grace_ms"], 5000);
    // The agent reads what the executor wrote: both ends agree on the format.
    let parsed = fcexec_guest_agent::config::AgentConfig::parse(&drive).unwrap();
    assert_eq!(parsed.header.proto, 2);
    assert_eq!(parsed.spec.command, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(
        parsed.spec.env,
        [("GREETING".to_string(), "hello".to_string())]
    );
    assert_eq!(parsed.spec.user.as_deref(), Some("1000:1000"));
    assert_eq!(parsed.spec.provision_scripts.len(), 1);

    common::cancel_and_check(&ex, "cmd").await;
}

#[tokio::test]
async fn a_command_without_the_agent_installed_fails_with_how_to_install_it() {
    let h = Harness::new(testkit::require_vmm!());
    let config = fcexec::ExecutorConfig {
        agent_binary: Some(h.path("no-such-agent")),
        ..h.config()
    };
    let ex = Executor::new("noagent", config).await.unwrap();
    let request = h.request("cmd", json!({"agent": true, "command": ["/bin/true"]}));
    let err = ex.start(&request).await.unwrap_err();
    let text = fcexec::error::chain(&err);
    assert!(text.contains("cannot read the guest agent"), "{text}");
}

#[tokio::test]
async fn a_command_is_refused_in_plain_mode_and_with_a_user_initrd() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("refused").await;
    let plain = h.request("p", json!({"command": ["/bin/true"]}));
    let err = ex.start(&plain).await.unwrap_err().to_string();
    assert!(
        err.contains("engine_spec.params.command") && err.contains("plain mode"),
        "{err}"
    );
    std::fs::write(h.path("initrd"), b"x").unwrap();
    let with_initrd = h.request(
        "i",
        json!({"agent": true, "command": ["/bin/true"], "initrd_path": h.path("initrd")}),
    );
    let err = ex.start(&with_initrd).await.unwrap_err().to_string();
    assert!(err.contains("initrd_path"), "{err}");
    let env_alone = h.request("e", json!({"agent": true, "env": {"A": "b"}}));
    let err = ex.start(&env_alone).await.unwrap_err().to_string();
    assert!(err.contains("engine_spec.params.command"), "{err}");
}
