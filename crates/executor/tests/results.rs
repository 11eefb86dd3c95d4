//! What an execution leaves in `results_dir`, against the real VMM: a
//! symbolic link planted at an output's or a log's name is replaced, never
//! followed; a 1 GiB sparse output image is copied at once and stays sparse.

mod common;

use std::fs::{File, Permissions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Harness;
use serde_json::json;
use test_guest::Job;

const MIB: u64 = 1 << 20;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// The names under `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn symlinks_planted_in_results_dir_are_replaced_not_followed() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("planted").await;
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(h.path("in.img"), &data).unwrap();
    std::fs::write(h.path("out.img"), vec![0u8; data.len()]).unwrap();
    // Files the executor must not touch, and links to them where it writes,
    // planted as another user (nobody) would.
    let victim = h.path("victim");
    std::fs::write(&victim, b"not yours").unwrap();
    std::fs::set_permissions(&victim, Permissions::from_mode(0o644)).unwrap();
    let results = h.path("results");
    std::fs::create_dir(&results).unwrap();
    std::os::unix::fs::chown(&results, Some(65534), Some(65534)).unwrap();
    for name in ["job1-0-out", "stdout.log"] {
        let link = results.join(name);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    }

    // Drive order: 0 rootfs, 1 the input, 2 the output, then the config drive.
    let job = Job::new().copy(1, 2, data.len() as u64).out("copied\n");
    let mut request = h.agent("job1", &job);
    request.inputs = serde_json::from_value(json!([{"type": "local", "source": h.path("in.img"), "target": "/mnt/in", "readonly": true}])).unwrap();
    request.outputs = serde_json::from_value(
        json!([{"type": "local", "source": h.path("out.img"), "target": "/mnt/out"}]),
    )
    .unwrap();
    request.results_dir = results.display().to_string();
    let r = ex.run(&request).await.unwrap();
    assert_eq!((r.exit_code, r.error_msg.as_str()), (0, ""), "{r:?}");

    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    assert_eq!(mode(&victim), 0o644);
    assert_eq!(
        names(&results),
        ["console.log", "job1-0-out", "stderr.log", "stdout.log"],
        "no temporary file is left"
    );
    for (name, bytes) in [
        ("job1-0-out", &data[..]),
        ("stdout.log", b"copied\n"),
        ("stderr.log", b""),
    ] {
        let path = results.join(name);
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_file(),
            "{name} is a regular file"
        );
        // The mode fcexec chooses (`results::RESULT_FILE_MODE`).
        assert_eq!(mode(&path), 0o640, "{name}");
        assert!(std::fs::read(&path).unwrap() == bytes, "{name}'s contents");
    }
}

#[tokio::test]
async fn a_1_gib_sparse_output_is_copied_at_once_and_stays_sparse() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("sparse").await;
    let image = h.path("out.img");
    let len = 1024 * MIB;
    {
        let f = File::create(&image).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[7u8; 8192], 512 * MIB - 100).unwrap();
        f.write_all_at(b"end", len - 3).unwrap();
    }
    let results = h.path("results");
    let job = Job::new().out("done\n").exit(0);

    // The same run without the output, for the time the VM itself takes.
    let started = Instant::now();
    let r = ex.run(&h.agent("bare", &job)).await.unwrap();
    let bare = started.elapsed();
    assert_eq!(r.exit_code, 0, "{r:?}");

    // The guest leaves the output drive alone.
    let mut request = h.agent("big", &job);
    request.outputs =
        serde_json::from_value(json!([{"type": "local", "source": image, "target": "/mnt/big"}]))
            .unwrap();
    request.results_dir = results.display().to_string();
    let started = Instant::now();
    let r = ex.run(&request).await.unwrap();
    let with_output = started.elapsed();
    assert_eq!((r.exit_code, r.error_msg.as_str()), (0, ""), "{r:?}");
    assert!(
        with_output < bare + Duration::from_secs(1),
        "{with_output:?} with the output, {bare:?} without"
    );

    let copy = results.join("big-0-big");
    let (src, dst) = (
        std::fs::metadata(&image).unwrap(),
        std::fs::metadata(&copy).unwrap(),
    );
    // Between creating the copy and giving it its length.
    if let (Ok(created), Ok(modified)) = (dst.created(), dst.modified()) {
        let took = modified.duration_since(created).unwrap_or_default();
        assert!(took < Duration::from_secs(1), "the copy took {took:?}");
    }
    assert_eq!(dst.len(), len);
    assert!(
        dst.blocks() <= src.blocks() && dst.blocks() * 512 < MIB,
        "{} blocks, the image has {}",
        dst.blocks(),
        src.blocks()
    );
    let (src, dst) = (File::open(&image).unwrap(), File::open(&copy).unwrap());
    let (mut a, mut b) = (vec![0u8; 4 * MIB as usize], vec![0u8; 4 * MIB as usize]);
    for at in (0..len).step_by(4 * MIB as usize) {
        src.read_exact_at(&mut a, at).unwrap();
        dst.read_exact_at(&mut b, at).unwrap();
        assert!(a == b, "the copy differs in the 4 MiB at {at}");
    }
}
