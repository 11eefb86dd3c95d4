//! OCI image layouts made by the tests, and requests that name them.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A root-owned tar header.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
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
pub fn oci_layout(dir: &Path, config: serde_json::Value) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "etc", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 6);
    b.append_data(&mut h, "etc/hostname", &b"image\n"[..])
        .unwrap();
    oci_layout_of(dir, b.into_inner().unwrap(), config);
}

/// An OCI layout at `dir` with `layer` (an uncompressed tar) and `config`.
pub fn oci_layout_of(dir: &Path, layer: Vec<u8>, config: serde_json::Value) {
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
pub fn with_image(mut request: fcexec::ExecutionRequest, image: &Path) -> fcexec::ExecutionRequest {
    let params = &mut request.engine_spec.as_mut().unwrap().params;
    params.remove("root_file_system");
    params.insert("image".into(), json!(image));
    request
}
