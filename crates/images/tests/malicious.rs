//! Malicious archives: each is refused with the offending entry named, and
//! nothing is written outside the staging directory (a canary directory
//! beside it, and /etc/passwd, stay as they were).

mod common;

use std::path::Path;

use common::*;
use fcexec_images::layers::{Applier, LayerError, Limits};
use fcexec_images::{build, BuildOptions, ImageError, Source, SourceError};
use tar::EntryType::{self, Block, Char, Directory, Link, Regular, Symlink};

/// One case: the layers (bottom first) and what the refusal must name.
struct Case {
    name: &'static str,
    layers: Vec<Vec<u8>>,
    names: &'static str,
    is: fn(&LayerError) -> bool,
}

fn one(kind: EntryType, name: &str, link: &str, data: &[u8]) -> Vec<u8> {
    raw(kind, name, link, data.len() as u64, data)
}

fn cases(canary: &Path) -> Vec<Case> {
    let canary = canary.to_str().unwrap().to_string();
    // Leaked: the cases' link targets must live as long as the table.
    let canary: &'static str = Box::leak(canary.into_boxed_str());
    vec![
        Case {
            name: "../ escape",
            layers: vec![archive(&[one(Regular, "../canary/pwned", "", b"x")])],
            names: "../canary/pwned",
            is: |e| matches!(e, LayerError::ParentComponent { .. }),
        },
        Case {
            name: "nested ../ escape",
            layers: vec![archive(&[one(Regular, "a/../../canary/pwned", "", b"x")])],
            names: "a/../../canary/pwned",
            is: |e| matches!(e, LayerError::ParentComponent { .. }),
        },
        Case {
            name: "absolute path",
            layers: vec![archive(&[one(Regular, "/tmp/fcexec-pwned", "", b"x")])],
            names: "/tmp/fcexec-pwned",
            is: |e| matches!(e, LayerError::AbsolutePath { .. }),
        },
        Case {
            name: "symlink then write through it",
            layers: vec![archive(&[
                one(Symlink, "lnk", canary, b""),
                one(Regular, "lnk/pwned", "", b"x"),
            ])],
            names: "lnk/pwned",
            is: |e| matches!(e, LayerError::ThroughSymlink { .. }),
        },
        Case {
            name: "symlink in a lower layer, write through it in an upper one",
            layers: vec![
                archive(&[one(Symlink, "etc", canary, b"")]),
                archive(&[one(Regular, "etc/pwned", "", b"x")]),
            ],
            names: "etc/pwned",
            is: |e| matches!(e, LayerError::ThroughSymlink { .. }),
        },
        Case {
            name: "whiteout through a symlink",
            layers: vec![archive(&[
                one(Symlink, "lnk", canary, b""),
                one(Regular, "lnk/.wh.keep", "", b""),
            ])],
            names: "lnk/.wh.keep",
            is: |e| matches!(e, LayerError::ThroughSymlink { .. }),
        },
        Case {
            name: "opaque marker through a symlink",
            layers: vec![archive(&[
                one(Symlink, "lnk", canary, b""),
                one(Regular, "lnk/.wh..wh..opq", "", b""),
            ])],
            names: "lnk/.wh..wh..opq",
            is: |e| matches!(e, LayerError::ThroughSymlink { .. }),
        },
        Case {
            name: "hard link to /etc/passwd",
            layers: vec![archive(&[one(Link, "passwd", "/etc/passwd", b"")])],
            names: "/etc/passwd",
            is: |e| matches!(e, LayerError::BadHardLink { .. }),
        },
        Case {
            name: "hard link with ../ to outside",
            layers: vec![archive(&[one(
                Link,
                "passwd",
                "../../../../etc/passwd",
                b"",
            )])],
            names: "\"passwd\"",
            is: |e| matches!(e, LayerError::BadHardLink { .. }),
        },
        Case {
            name: "hard link to a symlink",
            layers: vec![archive(&[
                one(Symlink, "lnk", "/etc/passwd", b""),
                one(Link, "hl", "lnk", b""),
            ])],
            names: "\"hl\"",
            is: |e| matches!(e, LayerError::BadHardLink { .. }),
        },
        Case {
            name: "character device",
            layers: vec![archive(&[one(Char, "dev/mem", "", b"")])],
            names: "dev/mem",
            is: |e| matches!(e, LayerError::RefusedType { .. }),
        },
        Case {
            name: "block device",
            layers: vec![archive(&[one(Block, "dev/sda", "", b"")])],
            names: "dev/sda",
            is: |e| matches!(e, LayerError::RefusedType { .. }),
        },
        Case {
            name: "huge declared size",
            layers: vec![archive(&[raw(Regular, "huge", "", 100 << 30, b"")])],
            names: "huge",
            is: |e| matches!(e, LayerError::TooLarge { .. }),
        },
        Case {
            name: "duplicate entries",
            layers: vec![archive(&[
                one(Regular, "twice", "", b"first"),
                one(Regular, "twice", "", b"second"),
            ])],
            names: "twice",
            is: |e| matches!(e, LayerError::Duplicate { .. }),
        },
        Case {
            name: "whiteout of ..",
            layers: vec![archive(&[one(Regular, "a/.wh...", "", b"")])],
            names: "a/.wh...",
            is: |e| matches!(e, LayerError::BadWhiteout { .. }),
        },
        Case {
            name: "file where a directory is needed",
            layers: vec![archive(&[
                one(Regular, "f", "", b"x"),
                one(Directory, "f/d", "", b""),
            ])],
            names: "f/d",
            is: |e| matches!(e, LayerError::NotADirectory { .. }),
        },
    ]
}

#[test]
fn malicious_layers_are_refused_naming_the_entry_and_write_nothing_outside() {
    if !root_or_skip("malicious_layers_are_refused_naming_the_entry_and_write_nothing_outside") {
        return;
    }
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("keep"), "untouched").unwrap();
    let before = snapshot(&canary);
    for (i, case) in cases(&canary).into_iter().enumerate() {
        let staging = tmp.path().join(format!("staging-{i}"));
        std::fs::create_dir(&staging).unwrap();
        let mut applier = Applier::new(&staging, Limits::default());
        let err = case
            .layers
            .iter()
            .enumerate()
            .try_for_each(|(n, l)| applier.apply(n, l.as_slice()).map(drop))
            .expect_err(case.name);
        assert!((case.is)(&err), "{}: wrong error {err:?}", case.name);
        let message = err.to_string();
        assert!(
            message.contains(case.names),
            "{}: {message:?} does not name {}",
            case.name,
            case.names
        );
        assert_eq!(
            snapshot(&canary),
            before,
            "{}: wrote outside the staging directory",
            case.name
        );
        assert!(!Path::new("/tmp/fcexec-pwned").exists(), "{}", case.name);
    }
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
}

#[test]
fn a_truncated_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let full = archive(&[one(Regular, "file", "", &[7u8; 4096])]);
    let mut applier = Applier::new(tmp.path(), Limits::default());
    let err = applier.apply(0, &full[..1024]).unwrap_err();
    assert!(matches!(err, LayerError::Archive { .. }), "{err:?}");
    assert!(err.to_string().contains("file"), "{err}");
}

/// The image built in the test, then a layer blob changed on disk.
#[test]
fn a_layer_blob_not_matching_its_digest_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("oci");
    let layer0 = layer(|b| file(b, "etc/hostname", 0o644, (0, 0), b"host\n"));
    oci_layout(&oci, std::slice::from_ref(&layer0), "amd64");
    let blob = digest(&gzip(&layer0));
    let path = oci.join("blobs/sha256").join(&blob[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let output = out.join("image.ext4");
    let err = build(
        &Source::detect(&oci).unwrap(),
        &output,
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ImageError::Source(SourceError::DigestMismatch { blob: b, .. }) if *b == blob),
        "{err:?}"
    );
    assert!(err.to_string().contains(&blob), "{err}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "something was left behind"
    );
}

/// A docker save layer whose content does not match the config's diff id.
#[test]
fn a_docker_layer_not_matching_its_diff_id_is_refused_and_leaves_nothing() {
    if !root_or_skip("a_docker_layer_not_matching_its_diff_id_is_refused_and_leaves_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer0 = layer(|b| file(b, "etc/hostname", 0o644, (0, 0), b"host\n"));
    let archive_path = tmp.path().join("image.tar");
    docker_archive(&archive_path, std::slice::from_ref(&layer0));
    // Flip one byte of the file content inside the layer inside the archive.
    let mut bytes = std::fs::read(&archive_path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"host\n").unwrap();
    bytes[at] = b'H';
    std::fs::write(&archive_path, bytes).unwrap();

    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = build(
        &Source::DockerArchive(archive_path),
        &out.join("i.ext4"),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("layer.tar"), "{err}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "something was left behind"
    );
}

/// A digest used as a blob path must not name another file.
#[test]
fn a_malformed_digest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("oci");
    oci_layout(&oci, &[layer(|b| dir(b, "etc", 0o755))], "amd64");
    let index = std::fs::read_to_string(oci.join("index.json")).unwrap();
    let start = index.find("sha256:").unwrap();
    let bad = format!(
        "{}sha256:../../../../etc/passwd{}",
        &index[..start],
        &index[start + 71..]
    );
    std::fs::write(oci.join("index.json"), bad).unwrap();
    let err = build(
        &Source::OciLayout(oci),
        &tmp.path().join("o.ext4"),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Source(SourceError::BadDigest(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("../../../../etc/passwd"), "{err}");
}
