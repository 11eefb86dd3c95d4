//! Unit tests of layer application.

use std::path::Path;

use tar::EntryType;

use super::fs::normalize;
use super::*;

#[test]
fn normalize_table() {
    let ok = [("a/b", "a/b"), ("./a/./b/", "a/b"), ("./", ""), (".", "")];
    for (raw, want) in ok {
        assert_eq!(
            normalize(0, Path::new(raw)).unwrap(),
            Path::new(want),
            "{raw}"
        );
    }
    for raw in ["../a", "a/../b", "a/.."] {
        assert!(matches!(
            normalize(0, Path::new(raw)),
            Err(LayerError::ParentComponent { .. })
        ));
    }
    for raw in ["/a", "/"] {
        assert!(matches!(
            normalize(0, Path::new(raw)),
            Err(LayerError::AbsolutePath { .. })
        ));
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (ownership)");
    }
    root
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if path.ends_with('/') {
            h.set_entry_type(EntryType::Directory);
            h.set_mode(0o755);
        }
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A whiteout or opaque marker hides lower layers only, wherever it
/// stands in its own layer.
#[test]
fn markers_spare_entries_of_their_own_layer() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut applier = Applier::new(dir.path(), Limits::default());
    let lower = tar_of(&[
        ("d/", b""),
        ("d/old", b"1"),
        ("d/sub/old", b"2"),
        ("x", b"3"),
    ]);
    applier.apply(0, lower.as_slice()).unwrap();
    let upper = tar_of(&[
        ("d/sub/new", b"4"),
        ("d/.wh..wh..opq", b""),
        ("y", b"5"),
        (".wh.x", b""),
    ]);
    applier.apply(1, upper.as_slice()).unwrap();
    let root = dir.path();
    assert!(!root.join("d/old").exists());
    assert!(!root.join("d/sub/old").exists());
    assert_eq!(std::fs::read(root.join("d/sub/new")).unwrap(), b"4");
    assert!(!root.join("x").exists());
    assert!(root.join("y").exists());
    assert_eq!(applier.applied().entries, 6);
}

#[test]
fn a_later_layer_replaces_a_directory_with_a_file_and_back() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut applier = Applier::new(dir.path(), Limits::default());
    applier
        .apply(0, tar_of(&[("p/", b""), ("p/in", b"1")]).as_slice())
        .unwrap();
    applier
        .apply(1, tar_of(&[("p", b"file")]).as_slice())
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("p")).unwrap(), b"file");
    applier.apply(2, tar_of(&[("p/", b"")]).as_slice()).unwrap();
    assert!(dir.path().join("p").is_dir());
}

#[test]
fn the_total_size_limit_spans_layers() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_file_bytes: 10,
        max_total_bytes: 15,
    };
    let mut applier = Applier::new(dir.path(), limits);
    let err = applier
        .apply(0, tar_of(&[("big", &[0u8; 11])]).as_slice())
        .unwrap_err();
    assert!(err.to_string().contains("per file"), "{err}");
    if !root() {
        return;
    }
    applier
        .apply(0, tar_of(&[("a", &[0u8; 8])]).as_slice())
        .unwrap();
    let err = applier
        .apply(1, tar_of(&[("b", &[0u8; 8])]).as_slice())
        .unwrap_err();
    assert!(
        err.to_string().contains("in total") && err.to_string().contains("\"b\""),
        "{err}"
    );
}
