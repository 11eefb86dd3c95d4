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

use common::Harness;
use fcexec::{Executor, LogOptions};
use serde_json::json;
use sha2::{Digest, Sha256};
use test_guest::Job;

fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A root-owned tar header.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// An OCI layout at `dir`: one uncompressed layer with `/etc/hostname`,
/// and `config` as the image's run configuration.
fn oci_layout(dir: &Path, config: serde_json::Value) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "etc", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 6);
    b.append_data(&mut h, "etc/hostname", &b"image\n"[..])
        .unwrap();
    let layer = b.into_inner().unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8], media: &str| {
        let d = digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        json!({"digest": d, "size": bytes.len(), "mediaType": media})
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": put(&config, "application/vnd.oci.image.config.v1+json"),
        "layers": [put(&layer, "application/vnd.oci.image.layer.v1.tar")],
    }))
    .unwrap();
    let manifest = put(&manifest, "application/vnd.oci.image.manifest.v1+json");
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// `request` with `image` in place of `root_file_system`.
fn with_image(mut request: fcexec::ExecutionRequest, image: &Path) -> fcexec::ExecutionRequest {
    let params = &mut request.engine_spec.as_mut().unwrap().params;
    params.remove("root_file_system");
    params.insert("image".into(), json!(image));
    request
}

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
}
