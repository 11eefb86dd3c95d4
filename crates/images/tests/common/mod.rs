//! Shared helpers: root check, layer tars made in the test, OCI layout and
//! `docker save` packaging, and reading an ext4 image with `debugfs`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// True when running as root; otherwise counts the test as skipped
/// (testkit prints one line at exit) and the test should return.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        testkit::skip_gated(&format!("{test} needs root (file owners and modes)"));
    }
    root
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Builds a tar layer from the closure's appends.
pub fn layer(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

/// A header of `kind` with mode, owner and mtime.
pub fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// Appends a regular file.
pub fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, owner: (u64, u64), data: &[u8]) {
    let mut h = header(
        tar::EntryType::Regular,
        mode,
        owner.0,
        owner.1,
        data.len() as u64,
    );
    b.append_data(&mut h, path, data).unwrap();
}

/// Appends a directory.
pub fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0, 0, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

/// Appends a symbolic or hard link.
pub fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
    let mut h = header(kind, 0o777, 0, 0, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// One raw 512-byte header whose name and link name are written as is
/// (the `tar` crate's builder refuses `..` and absolute paths), followed
/// by `data` padded to a block. Appending the end blocks is up to the caller.
pub fn raw(kind: tar::EntryType, name: &str, link: &str, size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = header(kind, 0o644, 0, 0, size);
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// `parts` followed by the two zero blocks ending an archive.
pub fn archive(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = parts.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An image config JSON for uncompressed `layers`.
pub fn config_json(layers: &[Vec<u8>], arch: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/entry"],
            "Cmd": ["--flag"],
            "Env": ["PATH=/usr/bin:/bin", "A=1"],
            "WorkingDir": "/home/user",
            "User": "1000:1000"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

/// Writes an OCI layout at `dir`: `layers` (uncompressed; the first is
/// stored gzip-compressed) and their config, one linux/`arch` manifest.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>], arch: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        serde_json::json!({"digest": d, "size": bytes.len()})
    };
    let config = config_json(layers, arch);
    let mut config_desc = put(&config);
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let layer_descs: Vec<_> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (bytes, media) = if i == 0 {
                (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
            } else {
                (l.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            let mut d = put(&bytes);
            d["mediaType"] = media.into();
            d
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    }))
    .unwrap();
    let mut manifest_desc = put(&manifest);
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_desc["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes a legacy `docker save` archive of `layers` at `file`.
pub fn docker_archive(file: &Path, layers: &[Vec<u8>]) {
    let config = config_json(layers, "amd64");
    let config_name = format!("{}.json", &digest(&config)[7..]);
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{:064x}/layer.tar", i + 1);
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, l.len() as u64);
        b.append_data(&mut h, &name, l.as_slice()).unwrap();
        names.push(name);
    }
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, config.len() as u64);
    b.append_data(&mut h, &config_name, config.as_slice())
        .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}
    ]))
    .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, manifest.len() as u64);
    b.append_data(&mut h, "manifest.json", manifest.as_slice())
        .unwrap();
    std::fs::write(file, b.into_inner().unwrap()).unwrap();
}

/// What `debugfs stat` says about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub mtime: String,
    pub link_dest: Option<String>,
}

fn debugfs(image: &Path, request: &str) -> std::process::Output {
    Command::new("debugfs")
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .expect("debugfs runs")
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    let at = text
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + name.len();
    text[at..].split_whitespace().next().unwrap()
}

/// `debugfs -R 'stat PATH'`, or None when the path is missing.
pub fn stat(image: &Path, path: &str) -> Option<Stat> {
    let out = debugfs(image, &format!("stat {path}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains("Inode:") {
        return None;
    }
    Some(Stat {
        kind: field(&text, "Type:").to_string(),
        mode: u32::from_str_radix(field(&text, "Mode:"), 8).unwrap(),
        uid: field(&text, "User:").parse().unwrap(),
        gid: field(&text, "Group:").parse().unwrap(),
        size: field(&text, "Size:").parse().unwrap(),
        links: field(&text, "Links:").parse().unwrap(),
        mtime: field(&text, "mtime:").to_string(),
        link_dest: text
            .find("Fast link dest: \"")
            .map(|at| text[at + 17..].split('"').next().unwrap().to_string()),
    })
}

/// `debugfs -R 'cat PATH'`.
pub fn cat(image: &Path, path: &str) -> Vec<u8> {
    debugfs(image, &format!("cat {path}")).stdout
}

/// `debugfs -R 'ea_list PATH'`: the extended attributes, as text.
pub fn ea_list(image: &Path, path: &str) -> String {
    String::from_utf8_lossy(&debugfs(image, &format!("ea_list {path}")).stdout).into_owned()
}

/// The names in directory `path` (without `.` and `..`), sorted.
pub fn ls(image: &Path, path: &str) -> Vec<String> {
    let out = debugfs(image, &format!("ls -p {path}"));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// Every file under `dir` with its content (a snapshot to compare).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = p.symlink_metadata().unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            out.push((p, Vec::new()));
        } else if m.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        } else {
            out.push((p, b"<other>".to_vec()));
        }
    }
    out.sort();
    out
}
