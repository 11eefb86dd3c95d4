//! Requests with an `image` against the real VMM: the image (an OCI layout
//! made here) is built into the executor's image cache, the VM's root
//! drive is the execution's own copy, the config drive's command is the
//! image's default command, and a second execution reuses the cache. The
//! test guest ignores the root file system and the agent's initrd, so
//! this checks what the VMM is handed.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::oci::{oci_layout, with_image};
use common::Harness;
use fcexec::{Executor, LogOptions};
use serde_json::json;
use test_guest::Job;

/// The cached ext4 files.
fn cached(h: &Harness) -> Vec<PathBuf> {
    let dir = h.state_root().join(".cache/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ext4"))
        .collect();
    files.sort();
    files
}

/// Starts `id` with `image`, waits for the guest's first output, and
/// returns the VM's configuration and the config drive's spec.
async fn start(
    h: &Harness,
    ex: &Executor,
    id: &str,
    image: &Path,
) -> (serde_json::Value, serde_json::Value) {
    let job = Job::new().out("up\n").hang();
    let request = with_image(
        h.request(
            id,
            json!({"agent": true,
                   "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())}),
        ),
        image,
    );
    ex.start(&request).await.unwrap();
    let mut logs = ex
        .logs(
            id,
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    assert_eq!(logs.next().await.unwrap().unwrap().data, b"up\n");
    common::vm_files(&h.state_root().join("images").join(id))
}

#[tokio::test]
async fn an_image_boots_from_its_own_copy_with_the_image_command_and_is_cached() {
    let h = Harness::new(testkit::require_vmm!());
    if !nix::unistd::geteuid().is_root() {
        testkit::skip_gated("building an image needs root (it keeps owners)");
        return;
    }
    let oci = h.path("oci");
    oci_layout(
        &oci,
        json!({"Entrypoint": ["/bin/entry"], "Cmd": ["--flag"],
               "Env": ["PATH=/usr/bin:/bin", "A=1"], "WorkingDir": "/home/user",
               "User": "1000:1000"}),
    );
    let config = fcexec::ExecutorConfig {
        agent_binary: Some(testkit::linux_guest::agent_binary().unwrap()),
        jail: common::unjailed(),
        ..h.config()
    };
    let ex = Executor::new("images", config).await.unwrap();

    let (vm, spec) = start(&h, &ex, "first", &oci).await;
    let root = PathBuf::from(vm["drives"][0]["path_on_host"].as_str().unwrap());
    let copy = h.state_root().join("images/first/rootfs.ext4");
    assert_eq!(root, copy);
    assert_eq!(vm["drives"][0]["is_root_device"], true);
    let images = cached(&h);
    assert_eq!(images.len(), 1, "{images:?}");
    let built = std::fs::metadata(&images[0]).unwrap();
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), built.len());
    assert_ne!(std::fs::metadata(&copy).unwrap().ino(), built.ino());
    assert_eq!(spec["command"], json!(["/bin/entry", "--flag"]));
    assert_eq!(spec["env"], json!([["PATH", "/usr/bin:/bin"], ["A", "1"]]));
    assert_eq!(
        (spec["working_dir"].as_str(), spec["user"].as_str()),
        (Some("/home/user"), Some("1000:1000"))
    );

    // The second execution copies the same cached image: no new build.
    let (vm, _) = start(&h, &ex, "second", &oci).await;
    assert_eq!(
        vm["drives"][0]["path_on_host"],
        json!(h.state_root().join("images/second/rootfs.ext4"))
    );
    assert_eq!(cached(&h), images);
    let again = std::fs::metadata(&images[0]).unwrap();
    assert_eq!(
        (again.ino(), again.mtime_nsec()),
        (built.ino(), built.mtime_nsec())
    );
    common::cancel_and_check(&ex, "first").await;
    common::cancel_and_check(&ex, "second").await;
    ex.remove("first", Duration::from_secs(10)).await.unwrap();
    assert!(!copy.exists());
}

#[tokio::test]
async fn image_errors_name_the_field() {
    let h = Harness::new(testkit::require_vmm!());
    if !nix::unistd::geteuid().is_root() {
        testkit::skip_gated("building an image needs root (it keeps owners)");
        return;
    }
    let ex = Executor::new(
        "images",
        fcexec::ExecutorConfig {
            agent_binary: Some(testkit::linux_guest::agent_binary().unwrap()),
            ..h.config()
        },
    )
    .await
    .unwrap();
    let oci = h.path("bare");
    oci_layout(&oci, json!({}));
    let both = h.request("both", json!({"agent": true, "image": oci}));
    let err = ex.start(&both).await.unwrap_err().to_string();
    assert!(
        err.contains("engine_spec.params.image: given with engine_spec.params.root_file_system"),
        "{err}"
    );
    let bare = with_image(h.request("bare", json!({"agent": true})), &oci);
    let err = ex.start(&bare).await.unwrap_err().to_string();
    assert!(err.contains("engine_spec.params.command: missing"), "{err}");
    let missing = with_image(h.request("missing", json!({})), &h.path("nope"));
    let err = ex.start(&missing).await.unwrap_err().to_string();
    assert!(err.contains("engine_spec.params.image"), "{err}");
    std::fs::create_dir(h.path("plain-dir")).unwrap();
    let dir = with_image(h.request("dir", json!({})), &h.path("plain-dir"));
    let err = ex.start(&dir).await.unwrap_err().to_string();
    assert!(err.contains("oci-layout"), "{err}");

    // Registry references: malformed, unreachable (nothing listens on
    // 127.0.0.1:9), and from a registry the policy does not allow.
    let reference = |id: &str, image: &str| {
        let mut r = h.request(id, json!({"agent": true}));
        let params = &mut r.engine_spec.as_mut().unwrap().params;
        params.remove("root_file_system");
        params.insert("image".into(), json!(image));
        r
    };
    let err = ex
        .start(&reference("bad-ref", "Repo With Spaces:tag"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("engine_spec.params.image"), "{err}");
    let started = std::time::Instant::now();
    let err = ex
        .start(&reference("down", "127.0.0.1:9/app:1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("engine_spec.params.image") && err.contains("127.0.0.1:9"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(ex.list().is_empty(), "a failed start leaves nothing");
    let strict = Executor::new(
        "strict",
        fcexec::ExecutorConfig {
            path_policy: fcexec::validate::PathPolicy {
                allowed_registries: Some(vec!["registry.internal:5000".into()]),
                ..Default::default()
            },
            ..h.config()
        },
    )
    .await
    .unwrap();
    let err = strict
        .start(&reference("other", "docker.io/library/alpine:3"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("may not be pulled from docker.io") && err.contains("registry.internal:5000"),
        "{err}"
    );
}
