//! `fcexec image build`: a directory becomes an ext4 image, read back with
//! debugfs; a bad source is an error that names it. (The builder's own
//! tests cover OCI layouts, `docker save` archives and malicious layers.)

mod common;

use common::Fcexec;

#[test]
fn a_directory_becomes_an_ext4_image() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip_gated("needs root (an image keeps its files' owners)");
        return;
    }
    let f = Fcexec::new();
    let tree = f.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hello"), "hi from the image\n").unwrap();
    let out = f.dir.path().join("root.ext4");
    let run = f
        .run(&[
            "image",
            "build",
            tree.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .expect(0);
    assert!(run.stderr.contains("built "), "{run:?}");
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /etc/hello"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "hi from the image\n");
}

#[test]
fn a_missing_source_is_named() {
    let f = Fcexec::new();
    let run = f
        .run(&["image", "build", "/no/such/image", "-o", "/tmp/never.ext4"])
        .expect(1);
    assert!(run.stderr.contains("/no/such/image"), "{run:?}");
    assert!(!std::path::Path::new("/tmp/never.ext4").exists());
}

#[test]
fn cached_images_are_listed_and_removed() {
    let f = Fcexec::new();
    let empty = f.run(&["image", "ls"]).expect(0);
    assert_eq!(empty.stdout.lines().count(), 1, "{empty:?}");
    assert!(!f.state().exists(), "listing creates nothing");
    let cache = f.state().join(".cache/images");
    std::fs::create_dir_all(&cache).unwrap();
    let key = "ab".repeat(32);
    std::fs::write(cache.join(format!("{key}.ext4")), vec![0u8; 3 << 20]).unwrap();
    let entry = serde_json::json!({
        "key": key, "source": "/images/alpine-oci", "size": 3u64 << 20,
        "config": {"cmd": ["sh"]}, "built_ms": 1u64, "last_used_ms": 2u64,
    });
    std::fs::write(
        cache.join(format!("{key}.json")),
        serde_json::to_vec(&entry).unwrap(),
    )
    .unwrap();
    let ls = f.run(&["image", "ls"]).expect(0);
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{ls:?}");
    assert!(
        lines[0].starts_with("KEY") && lines[0].contains("LAST USED"),
        "{ls:?}"
    );
    assert!(lines[1].starts_with(&key[..12]), "{ls:?}");
    assert!(
        lines[1].contains("3 MiB") && lines[1].ends_with("/images/alpine-oci"),
        "{ls:?}"
    );

    let missing = f.run(&["image", "rm", "ffff"]).expect(1);
    assert!(missing.stderr.contains("no cached image"), "{missing:?}");
    let rm = f.run(&["image", "rm", &key[..6]]).expect(0);
    assert_eq!(rm.stdout.trim(), key);
    assert!(!cache.join(format!("{key}.ext4")).exists());
    let ls = f.run(&["image", "ls"]).expect(0);
    assert_eq!(ls.stdout.lines().count(), 1, "{ls:?}");
}
