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
