//! Builds one multi-layer image (whiteout, opaque directory, hard link,
//! symbolic link, setuid and setgid files, a file owned by 1000:1000, a
//! FIFO, extended attributes including `security.capability`, a 50 MiB
//! file) from an OCI layout and from a `docker save` archive, and
//! checks the ext4 file by file with debugfs, without mounting it.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use fcexec_images::{build, BuildOptions, ImageConfig, Progress, Source};
use tar::EntryType;

const BIG: usize = 50 << 20;

/// `security.capability` v2, effective, permitting CAP_NET_RAW (13).
const CAPABILITY: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn big_content() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// The two layers, uncompressed, bottom first.
fn layers() -> Vec<Vec<u8>> {
    let base = layer(|b| {
        dir(b, "bin", 0o755);
        dir(b, "etc", 0o755);
        file(b, "etc/hostname", 0o644, (0, 0), b"base\n");
        file(b, "gone.txt", 0o644, (0, 0), b"whited out\n");
        dir(b, "opq", 0o755);
        file(b, "opq/old", 0o644, (0, 0), b"old\n");
        dir(b, "opq/sub", 0o755);
        file(b, "opq/sub/older", 0o644, (0, 0), b"older\n");
        file(b, "bin/su", 0o4755, (0, 0), b"#!/bin/su\n");
        dir(b, "home", 0o755);
        let mut h = header(EntryType::Directory, 0o750, 1000, 1000, 0);
        b.append_data(&mut h, "home/user", std::io::empty())
            .unwrap();
        file(b, "home/user/note", 0o640, (1000, 1000), b"mine\n");
        file(b, "data/orig", 0o600, (0, 0), b"hard linked\n");
        file(b, "big/blob", 0o644, (0, 0), &big_content());
    });
    let top = layer(|b| {
        file(b, ".wh.gone.txt", 0o644, (0, 0), b"");
        file(b, "opq/new", 0o644, (0, 0), b"new\n");
        file(b, "opq/.wh..wh..opq", 0o644, (0, 0), b"");
        link(b, EntryType::Link, "data/link", "data/orig");
        link(b, EntryType::Symlink, "etc/alias", "hostname");
        file(b, "bin/sg", 0o2755, (0, 50), b"#!/bin/sg\n");
        file(b, "etc/hostname", 0o644, (0, 0), b"top\n");
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", CAPABILITY.as_slice()),
            ("SCHILY.xattr.user.origin", b"layer 1".as_slice()),
        ])
        .unwrap();
        file(b, "bin/ping", 0o755, (0, 0), b"#!/bin/ping\n");
        let mut h = header(EntryType::Fifo, 0o620, 0, 0, 0);
        b.append_data(&mut h, "run/fifo", std::io::empty()).unwrap();
    });
    vec![base, top]
}

/// The paths checked in every image.
const PATHS: &[&str] = &[
    "/bin/su",
    "/bin/sg",
    "/bin/ping",
    "/run/fifo",
    "/etc/hostname",
    "/etc/alias",
    "/opq",
    "/opq/new",
    "/home/user",
    "/home/user/note",
    "/data/orig",
    "/data/link",
    "/big/blob",
    "/.fcexec/image.json",
];

fn check_image(image: &Path) {
    let st = |p| stat(image, p).unwrap_or_else(|| panic!("{p} missing"));
    assert!(stat(image, "/gone.txt").is_none(), "whiteout not applied");
    assert_eq!(
        ls(image, "/opq"),
        ["new"],
        "opaque directory kept lower files"
    );

    let su = st("/bin/su");
    assert_eq!(
        (su.kind.as_str(), su.mode, su.uid, su.gid),
        ("regular", 0o4755, 0, 0)
    );
    let sg = st("/bin/sg");
    assert_eq!((sg.mode, sg.gid), (0o2755, 50));
    assert_eq!(cat(image, "/bin/sg"), b"#!/bin/sg\n");

    let xattrs = ea_list(image, "/bin/ping");
    assert!(xattrs.contains("security.capability"), "{xattrs}");
    assert!(
        xattrs.contains("user.origin") && xattrs.contains("layer 1"),
        "{xattrs}"
    );

    let fifo = st("/run/fifo");
    assert_eq!((fifo.kind.as_str(), fifo.mode), ("FIFO", 0o620));

    let host = st("/etc/hostname");
    assert_eq!(cat(image, "/etc/hostname"), b"top\n");
    assert!(
        host.mtime.starts_with("0x6553f100"),
        "mtime {} is not 1700000000",
        host.mtime
    );
    let alias = st("/etc/alias");
    assert_eq!(alias.kind, "symlink");
    assert_eq!(alias.link_dest.as_deref(), Some("hostname"));

    let home = st("/home/user");
    assert_eq!(
        (home.kind.as_str(), home.mode, home.uid, home.gid),
        ("directory", 0o750, 1000, 1000)
    );
    let note = st("/home/user/note");
    assert_eq!((note.mode, note.uid, note.gid), (0o640, 1000, 1000));
    assert_eq!(cat(image, "/home/user/note"), b"mine\n");

    let orig = st("/data/orig");
    assert_eq!(orig.links, 2, "hard link shares the inode");
    assert_eq!(cat(image, "/data/link"), b"hard linked\n");

    let big = st("/big/blob");
    assert_eq!(big.size, BIG as u64);
    assert!(
        cat(image, "/big/blob") == big_content(),
        "50 MiB content differs"
    );

    let config: ImageConfig = serde_json::from_slice(&cat(image, "/.fcexec/image.json")).unwrap();
    assert_eq!(config.entrypoint, ["/bin/entry"]);
    assert_eq!(config.cmd, ["--flag"]);
    assert_eq!(config.working_dir, "/home/user");
    assert_eq!(config.user, "1000:1000");
    assert_eq!(config.env, ["PATH=/usr/bin:/bin", "A=1"]);
}

#[test]
fn oci_layout_and_docker_archive_give_the_same_files() {
    if !root_or_skip("oci_layout_and_docker_archive_give_the_same_files") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layers = layers();
    let oci = tmp.path().join("oci");
    oci_layout(&oci, &layers, "amd64");
    let docker = tmp.path().join("image.tar");
    docker_archive(&docker, &layers);

    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = BuildOptions {
        progress: Some(Arc::new(move |p: &Progress| {
            sink.lock().unwrap().push(p.clone())
        })),
        ..BuildOptions::default()
    };
    let oci_image = tmp.path().join("oci.ext4");
    let built = build(&Source::detect(&oci).unwrap(), &oci_image, &options).unwrap();
    eprintln!(
        "built the 50 MiB image from the OCI layout in {:?} ({} bytes of files, {} MiB file system)",
        built.elapsed,
        built.bytes,
        built.size >> 20
    );
    assert_eq!(built.layers, 2);
    let events = events.lock().unwrap().clone();
    assert!(
        matches!(events[0], Progress::Resolved { layers: 2 }),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Progress::LayerApplied {
            index: 1,
            count: 2,
            ..
        }
    )));
    check_image(&oci_image);

    let docker_image = tmp.path().join("docker.ext4");
    let source = Source::detect(&docker).unwrap();
    assert_eq!(source, Source::DockerArchive(docker.clone()));
    let built = build(&source, &docker_image, &BuildOptions::default()).unwrap();
    eprintln!(
        "built the 50 MiB image from the docker save archive in {:?}",
        built.elapsed
    );
    check_image(&docker_image);

    for path in PATHS {
        let st = stat(&oci_image, path);
        assert_eq!(st, stat(&docker_image, path), "{path}");
        if st.is_some_and(|s| s.kind == "directory") {
            assert_eq!(ls(&oci_image, path), ls(&docker_image, path), "{path}");
        } else {
            assert!(
                cat(&oci_image, path) == cat(&docker_image, path),
                "{path} content differs"
            );
        }
    }
    // Nothing but the two images and the sources is left.
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["docker.ext4", "image.tar", "oci", "oci.ext4"]);
}

#[test]
fn a_directory_source_is_copied_as_is() {
    if !root_or_skip("a_directory_source_is_copied_as_is") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hello\n").unwrap();
    std::os::unix::fs::symlink("motd", tree.join("etc/greeting")).unwrap();
    std::os::unix::fs::chown(tree.join("etc/motd"), Some(1000), Some(1000)).unwrap();
    let image = tmp.path().join("dir.ext4");
    let source = Source::detect(&tree).unwrap();
    assert_eq!(source, Source::Directory(tree.clone()));
    build(&source, &image, &BuildOptions::default()).unwrap();
    assert_eq!(cat(&image, "/etc/motd"), b"hello\n");
    let motd = stat(&image, "/etc/motd").unwrap();
    assert_eq!((motd.uid, motd.gid), (1000, 1000));
    assert_eq!(
        stat(&image, "/etc/greeting").unwrap().link_dest.as_deref(),
        Some("motd")
    );
    let config: ImageConfig = serde_json::from_slice(&cat(&image, "/.fcexec/image.json")).unwrap();
    assert_eq!(config, ImageConfig::default());
}

#[test]
fn an_image_for_another_architecture_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("oci");
    oci_layout(&oci, &[layer(|b| dir(b, "etc", 0o755))], "arm64");
    let output = tmp.path().join("out.ext4");
    let err = build(
        &Source::detect(&oci).unwrap(),
        &output,
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("linux/arm64"), "{err}");
    assert!(!output.exists());
}
