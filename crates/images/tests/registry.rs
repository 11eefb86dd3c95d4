//! Pulls from a real registry (Debian's `docker-registry`, started by each
//! test on 127.0.0.1 with a free port and its storage in a temporary
//! directory; killed on drop). Images are pushed by the test itself through
//! the distribution API. Skips with one line when the registry binary is
//! missing or does not start.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fcexec_images::registry::Client;
use fcexec_images::{
    build, BuildOptions, Cache, PullOptions, Reference, RegistryError, Source, SourceError,
};
use tar::EntryType;

const BIG: usize = 50 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A registry process, killed and its storage removed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// `Authorization` header for pushes, when the registry wants one.
    auth: Option<String>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_binary() -> Option<PathBuf> {
    std::env::var_os("FCEXEC_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/docker-registry")))
        .filter(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry; None (the test counted as skipped) when it cannot.
    /// With `user`, the registry wants basic auth (htpasswd).
    fn start(user: Option<(&str, &str)>) -> Option<Registry> {
        let Some(binary) = registry_binary() else {
            testkit::skip_gated(
                "docker-registry is not installed (apt-get install docker-registry)",
            );
            return None;
        };
        let mut dir = tempfile::tempdir().unwrap();
        let mut auth_config = String::new();
        let mut auth = None;
        if let Some((name, password)) = user {
            // Cost 4, the least bcrypt takes: the registry checks it per request.
            let hash = bcrypt::hash(password, 4).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{name}:{hash}\n")).unwrap();
            auth_config = format!(
                "auth:\n  htpasswd:\n    realm: fcexec-test\n    path: {}\n",
                file.display()
            );
            auth = Some(basic(name, password));
        }
        for _ in 0..5 {
            let port = free_port();
            let storage = dir.path().join("storage");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_config}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn();
            let Ok(child) = child else {
                testkit::skip_gated("docker-registry does not run");
                return None;
            };
            let mut registry = Registry {
                child,
                port,
                dir,
                auth,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = registry.child.try_wait() {
                    break;
                }
                match ureq::get(&format!("{}/v2/", registry.url())).call() {
                    Ok(_) | Err(ureq::Error::Status(401, _)) => return Some(registry),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            let log = std::fs::read_to_string(registry.dir.path().join("registry.log"))
                .unwrap_or_default();
            eprintln!("registry on port {port} did not answer; its log:\n{log}");
            // Take the directory back for another port.
            let _ = registry.child.kill();
            let _ = registry.child.wait();
            dir = std::mem::replace(&mut registry.dir, tempfile::tempdir().unwrap());
            auth = registry.auth.take();
        }
        testkit::skip_gated("docker-registry does not start");
        None
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn reference(&self, path: &str) -> Reference {
        Reference::parse(&format!("{}/{path}", self.host())).unwrap()
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let r = ureq::request(method, url);
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    /// Uploads a blob (monolithic POST then PUT with the digest).
    fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let r = self
            .request("POST", &format!("{}/v2/{repo}/blobs/uploads/", self.url()))
            .call()
            .unwrap();
        assert_eq!(r.status(), 202);
        let location = r.header("Location").unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.url())
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .request("PUT", &format!("{location}{sep}digest={d}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
            .unwrap();
        assert_eq!(r.status(), 201);
        d
    }

    /// Puts a manifest or index under `reference` (a tag or digest).
    fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        let r = self
            .request(
                "PUT",
                &format!("{}/v2/{repo}/manifests/{reference}", self.url()),
            )
            .set("Content-Type", media_type)
            .send_bytes(bytes)
            .unwrap();
        assert_eq!(r.status(), 201);
        digest(bytes)
    }

    /// Pushes an image of `layers` (uncompressed; the first is pushed
    /// gzip-compressed) for linux/`arch` under `tag`; the manifest's digest
    /// and the layer blobs' digests.
    fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        arch: &str,
    ) -> (String, Vec<String>) {
        let config = config_json(layers, arch);
        let config_digest = self.push_blob(repo, &config);
        let mut blobs = Vec::new();
        let descs: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (bytes, media) = if i == 0 {
                    (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
                } else {
                    (l.clone(), "application/vnd.oci.image.layer.v1.tar")
                };
                let d = self.push_blob(repo, &bytes);
                blobs.push(d.clone());
                serde_json::json!({"mediaType": media, "digest": d, "size": bytes.len()})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        (
            self.push_manifest(repo, tag, OCI_MANIFEST, &manifest),
            blobs,
        )
    }

    /// Requests the registry has answered so far (from its own log).
    fn served(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("response completed"))
            .count()
    }

    /// The registry's stored file of blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn big_content() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// A whiteout, an opaque directory, a hard link, a symbolic link, a
/// setuid file, a file owned by 1000 and a 50 MiB file, over two layers.
fn full_layers() -> Vec<Vec<u8>> {
    let base = layer(|b| {
        dir(b, "bin", 0o755);
        dir(b, "etc", 0o755);
        file(b, "etc/hostname", 0o644, (0, 0), b"base\n");
        file(b, "etc/gone", 0o644, (0, 0), b"whited out\n");
        dir(b, "opq", 0o755);
        file(b, "opq/old", 0o644, (0, 0), b"old\n");
        file(b, "bin/su", 0o4755, (0, 0), b"#!/bin/su\n");
        dir(b, "home", 0o755);
        let mut h = header(EntryType::Directory, 0o750, 1000, 1000, 0);
        b.append_data(&mut h, "home/user", std::io::empty())
            .unwrap();
        file(b, "home/user/note", 0o640, (1000, 1000), b"mine\n");
        file(b, "data/orig", 0o600, (0, 0), b"hard linked\n");
    });
    let top = layer(|b| {
        file(b, "etc/.wh.gone", 0o644, (0, 0), b"");
        file(b, "opq/new", 0o644, (0, 0), b"new\n");
        file(b, "opq/.wh..wh..opq", 0o644, (0, 0), b"");
        link(b, EntryType::Link, "data/link", "data/orig");
        link(b, EntryType::Symlink, "etc/alias", "hostname");
        file(b, "big/blob", 0o644, (0, 0), &big_content());
    });
    vec![base, top]
}

fn small_layers(text: &[u8]) -> Vec<Vec<u8>> {
    vec![layer(|b| file(b, "hello", 0o644, (0, 0), text))]
}

fn check_full_image(image: &Path) {
    let st = |p| stat(image, p).unwrap_or_else(|| panic!("{p} missing"));
    assert!(stat(image, "/etc/gone").is_none(), "whiteout not applied");
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
    let home = st("/home/user");
    assert_eq!(
        (home.kind.as_str(), home.mode, home.uid, home.gid),
        ("directory", 0o750, 1000, 1000)
    );
    let note = st("/home/user/note");
    assert_eq!((note.mode, note.uid, note.gid), (0o640, 1000, 1000));
    assert_eq!(cat(image, "/home/user/note"), b"mine\n");
    assert_eq!(st("/data/orig").links, 2, "hard link shares the inode");
    assert_eq!(cat(image, "/data/link"), b"hard linked\n");
    let alias = st("/etc/alias");
    assert_eq!(
        (alias.kind.as_str(), alias.link_dest.as_deref()),
        ("symlink", Some("hostname"))
    );
    assert_eq!(cat(image, "/etc/hostname"), b"base\n");
    assert_eq!(st("/big/blob").size, BIG as u64);
    assert!(
        cat(image, "/big/blob") == big_content(),
        "big file content differs"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&cat(image, "/.fcexec/image.json")).unwrap();
    assert_eq!(config["entrypoint"], serde_json::json!(["/bin/entry"]));
}

/// The names in `dir` (to check nothing is left behind).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_pushed_image_is_pulled_and_built() {
    if !root_or_skip("a_pushed_image_is_pulled_and_built") {
        return;
    }
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let (manifest, _) = registry.push_image("fcexec/full", "v1", &full_layers(), "amd64");

    // Through build(): pull into a temporary layout beside the output.
    let out = tempfile::tempdir().unwrap();
    let image = out.path().join("full.ext4");
    let started = Instant::now();
    let built = build(
        &Source::Registry(registry.reference("fcexec/full:v1")),
        &image,
        &BuildOptions::default(),
    )
    .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "pull + build of the 50 MiB image from a local registry: {elapsed:.2?} ({} bytes ext4, {} layers)",
        built.size, built.layers
    );
    assert_eq!(built.layers, 2);
    check_full_image(&image);
    assert_eq!(
        names(out.path()),
        ["full.ext4"],
        "the download directory is removed"
    );

    // By digest, with the client's request count: manifest, config, 2 layers.
    let layout = out.path().join("layout");
    let reference = registry.reference(&format!("fcexec/full@{manifest}"));
    let client = Client::new(&reference, &PullOptions::default());
    let pulled = client.pull(&layout).unwrap();
    assert_eq!(
        (pulled.manifest.as_str(), pulled.layers),
        (manifest.as_str(), 2)
    );
    assert_eq!(client.requests(), 4);
    let image2 = out.path().join("by-digest.ext4");
    build(
        &Source::OciLayout(layout),
        &image2,
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(cat(&image2, "/etc/hostname"), b"base\n");
}

#[test]
fn an_index_gives_linux_amd64_and_refuses_other_architectures() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let repo = "fcexec/multi";
    let (amd, _) = registry.push_image(repo, "amd64-only", &small_layers(b"amd64\n"), "amd64");
    let (arm, _) = registry.push_image(repo, "arm64-only", &small_layers(b"arm64\n"), "arm64");
    let entry = |d: &str, arch: &str| {
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 1,
            "platform": {"os": "linux", "architecture": arch}})
    };
    // Sizes in an index are informative here; use the real ones.
    let size = |d: &str| {
        let r = ureq::get(&format!("{}/v2/{repo}/manifests/{d}", registry.url()))
            .set("Accept", OCI_MANIFEST)
            .call()
            .unwrap();
        let mut b = Vec::new();
        r.into_reader().read_to_end(&mut b).unwrap();
        b.len()
    };
    let mut both = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")]});
    both["manifests"][0]["size"] = size(&arm).into();
    both["manifests"][1]["size"] = size(&amd).into();
    registry.push_manifest(
        repo,
        "multi",
        OCI_INDEX,
        &serde_json::to_vec(&both).unwrap(),
    );
    let mut arm_only = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry(&arm, "arm64")]});
    arm_only["manifests"][0]["size"] = size(&arm).into();
    registry.push_manifest(
        repo,
        "arm",
        OCI_INDEX,
        &serde_json::to_vec(&arm_only).unwrap(),
    );

    let dir = tempfile::tempdir().unwrap();
    let pulled = fcexec_images::registry::pull(
        &registry.reference("fcexec/multi:multi"),
        &dir.path().join("a"),
        &PullOptions::default(),
    )
    .unwrap();
    assert_eq!(pulled.manifest, amd);
    let client = Client::new(
        &registry.reference("fcexec/multi:multi"),
        &PullOptions::default(),
    );
    assert_eq!(client.manifest_digest().unwrap(), amd);
    assert_eq!(client.requests(), 2, "the index and the manifest, no blob");

    let err = fcexec_images::registry::pull(
        &registry.reference("fcexec/multi:arm"),
        &dir.path().join("b"),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::WrongArchitecture { found } if found == "linux/arm64"),
        "{err}"
    );

    // A single arm64 manifest is refused by its config.
    let err = build(
        &Source::Registry(registry.reference("fcexec/multi:arm64-only")),
        &dir.path().join("arm.ext4"),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("linux/arm64"), "{err}");
    assert!(!dir.path().join("arm.ext4").exists());
}

#[test]
fn unknown_references_are_not_found() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    registry.push_image("fcexec/known", "v1", &small_layers(b"hi\n"), "amd64");
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "fcexec/known:v2".to_string(),
        "fcexec/unknown:v1".to_string(),
        format!("fcexec/known@sha256:{}", "0".repeat(64)),
    ] {
        let err = build(
            &Source::Registry(registry.reference(&name)),
            &dir.path().join("x.ext4"),
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                fcexec_images::ImageError::Source(SourceError::Registry(
                    RegistryError::NotFound { .. }
                ))
            ),
            "{name}: {err}"
        );
    }
    assert!(
        names(dir.path()).is_empty(),
        "left behind: {:?}",
        names(dir.path())
    );
}

#[test]
fn an_unreachable_registry_fails_quickly() {
    let port = free_port();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/fcexec/none:v1")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err =
        fcexec_images::registry::pull(&reference, dir.path(), &PullOptions::default()).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_left() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let layers = vec![
        layer(|b| file(b, "a", 0o644, (0, 0), b"first\n")),
        layer(|b| file(b, "b", 0o644, (0, 0), &[7u8; 4096])),
    ];
    let (_, blobs) = registry.push_image("fcexec/corrupt", "v1", &layers, "amd64");
    // Same size, different bytes, in the registry's storage.
    let stored = registry.blob_file(&blobs[1]);
    let mut bytes = std::fs::read(&stored).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let err = fcexec_images::registry::pull(
        &registry.reference("fcexec/corrupt:v1"),
        &layout,
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DigestMismatch { blob, .. } if *blob == blobs[1]),
        "{err}"
    );
    assert!(err.to_string().contains(&blobs[1]), "{err}");
    let left = names(&layout.join("blobs/sha256"));
    assert!(
        !left
            .iter()
            .any(|n| n.contains("partial") || *n == blobs[1][7..]),
        "{left:?}"
    );

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = build(
        &Source::Registry(registry.reference("fcexec/corrupt:v1")),
        &out.join("x.ext4"),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&blobs[1]), "{err}");
    assert!(names(&out).is_empty(), "left behind: {:?}", names(&out));
}

#[test]
fn basic_auth_uses_the_credentials_given_or_from_the_docker_config() {
    let Some(registry) = Registry::start(Some(("alice", "s3cr3t"))) else {
        return;
    };
    registry.push_image("fcexec/private", "v1", &small_layers(b"secret\n"), "amd64");
    let reference = registry.reference("fcexec/private:v1");
    let dir = tempfile::tempdir().unwrap();

    // No credentials (and an empty Docker config): refused.
    let empty = dir.path().join("empty-docker");
    std::fs::create_dir(&empty).unwrap();
    std::env::set_var("DOCKER_CONFIG", &empty);
    let err =
        fcexec_images::registry::pull(&reference, &dir.path().join("a"), &PullOptions::default())
            .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // Wrong password: refused.
    let wrong = PullOptions {
        credentials: Some(("alice".into(), "nope".into())),
        ..PullOptions::default()
    };
    let err = fcexec_images::registry::pull(&reference, &dir.path().join("b"), &wrong).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // Given credentials: a 401, then manifest, config and layer.
    let right = PullOptions {
        credentials: Some(("alice".into(), "s3cr3t".into())),
        ..PullOptions::default()
    };
    let client = Client::new(&reference, &right);
    client.pull(&dir.path().join("c")).unwrap();
    assert_eq!(client.requests(), 4);

    // From $DOCKER_CONFIG/config.json.
    let docker = dir.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    let auth = basic("alice", "s3cr3t");
    let config = serde_json::json!({"auths": {registry.host(): {"auth": &auth["Basic ".len()..]}}});
    std::fs::write(
        docker.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", &docker);
    let pulled =
        fcexec_images::registry::pull(&reference, &dir.path().join("d"), &PullOptions::default())
            .unwrap();
    assert_eq!(pulled.layers, 1);
    std::env::remove_var("DOCKER_CONFIG");
}

/// A stand-in registry that wants a bearer token (the real one needs a
/// signed-JWT token server): `GET /token` with basic credentials gives
/// `tok`; `/v2/...` without `Bearer tok` gets the challenge. Serves one
/// image from memory; records each request line with its Authorization.
fn token_registry(
    blobs: std::collections::HashMap<String, (Vec<u8>, &'static str)>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h
                    .strip_prefix("Authorization: ")
                    .or(h.strip_prefix("authorization: "))
                {
                    auth = v.trim().to_string();
                }
            }
            seen.lock().unwrap().push(format!("{path} {auth}"));
            let (status, headers, body): (&str, String, Vec<u8>) = if path.starts_with("/token?") {
                if auth == basic("bob", "pw")
                    && path.contains("scope=repository%3Afcexec%2Ftok%3Apull")
                {
                    ("200 OK", String::new(), br#"{"token":"tok"}"#.to_vec())
                } else {
                    ("401 Unauthorized", String::new(), b"{}".to_vec())
                }
            } else if auth != "Bearer tok" {
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:fcexec/tok:pull\"\r\n"
                );
                ("401 Unauthorized", challenge, b"{}".to_vec())
            } else {
                let key = path.rsplit('/').next().unwrap().to_string();
                match blobs.get(&key) {
                    Some((b, t)) => ("200 OK", format!("Content-Type: {t}\r\n"), b.clone()),
                    None => ("404 Not Found", String::new(), b"{}".to_vec()),
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (port, log)
}

#[test]
fn bearer_tokens_are_fetched_from_the_realm_with_the_credentials() {
    let layers = small_layers(b"token\n");
    let config = config_json(&layers, "amd64");
    let layer_bytes = layers[0].clone();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer_bytes), "size": layer_bytes.len()}],
    }))
    .unwrap();
    let mut blobs = std::collections::HashMap::new();
    blobs.insert(digest(&config), (config, "application/octet-stream"));
    blobs.insert(
        digest(&layer_bytes),
        (layer_bytes, "application/octet-stream"),
    );
    blobs.insert("v1".to_string(), (manifest.clone(), OCI_MANIFEST));
    let (port, log) = token_registry(blobs);
    let reference = Reference::parse(&format!("127.0.0.1:{port}/fcexec/tok:v1")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let client = Client::new(
        &reference,
        &PullOptions {
            credentials: Some(("bob".into(), "pw".into())),
            ..PullOptions::default()
        },
    );
    let pulled = client.pull(&dir.path().join("a")).unwrap();
    assert_eq!(pulled.manifest, digest(&manifest));
    // Challenge, token, manifest again, config, layer.
    assert_eq!(client.requests(), 5, "{:?}", log.lock().unwrap());
    let log = log.lock().unwrap().clone();
    assert!(
        log[1].starts_with("/token?service=test&scope=") && log[1].ends_with(&basic("bob", "pw")),
        "{log:?}"
    );
    assert!(
        log[2..].iter().all(|l| l.ends_with("Bearer tok")),
        "{log:?}"
    );

    let wrong = PullOptions {
        credentials: Some(("bob".into(), "nope".into())),
        ..PullOptions::default()
    };
    let err = fcexec_images::registry::pull(&reference, &dir.path().join("b"), &wrong).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[test]
fn a_cached_tag_is_served_without_asking_the_registry_and_builds_once() {
    if !root_or_skip("a_cached_tag_is_served_without_asking_the_registry_and_builds_once") {
        return;
    }
    let Some(registry) = Registry::start(None) else {
        return;
    };
    registry.push_image("fcexec/cached", "v1", &small_layers(b"one"), "amd64");
    let dir = tempfile::tempdir().unwrap();
    let cache = std::sync::Arc::new(Cache::open(&dir.path().join("cache"), None).unwrap());
    let source = Source::parse(&registry.reference("fcexec/cached:v1").to_string()).unwrap();
    assert!(matches!(source, Source::Registry(_)), "{source:?}");

    // Two builds at once: one builds, the other waits and finds it.
    let before = registry.served();
    let started = Instant::now();
    let builds: Vec<_> = (0..2)
        .map(|_| {
            let (cache, source) = (cache.clone(), source.clone());
            std::thread::spawn(move || {
                let image = cache
                    .get_or_build(&source, &BuildOptions::default())
                    .unwrap();
                (image.built, image.key.clone())
            })
        })
        .collect();
    let results: Vec<(bool, String)> = builds.into_iter().map(|t| t.join().unwrap()).collect();
    let cold = started.elapsed();
    assert_eq!(
        results.iter().filter(|(built, _)| *built).count(),
        1,
        "{results:?}"
    );
    assert_eq!(results[0].1, results[1].1);
    let first = registry.served() - before;
    assert!(first >= 4, "the first build pulled ({first} requests)");

    // Again: served from the cache, the registry sees no request at all.
    let before = registry.served();
    let started = Instant::now();
    let again = cache
        .get_or_build(&source, &BuildOptions::default())
        .unwrap();
    let cached = started.elapsed();
    eprintln!("a tag from the local registry: cold pull+build {cold:.2?}, cached {cached:.2?}");
    assert!(!again.built);
    assert_eq!(cat(&again.path, "/hello"), b"one");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(registry.served() - before, 0, "no request for a cached tag");
    let listed = cache.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].source, source.to_string(), "listed under its tag");
    drop(again);

    // The tag moves: after `image rm`, the new image is pulled.
    registry.push_image("fcexec/cached", "v1", &small_layers(b"two"), "amd64");
    cache.remove(&source.to_string()).unwrap();
    let moved = cache
        .get_or_build(&source, &BuildOptions::default())
        .unwrap();
    assert!(moved.built);
    assert_eq!(cat(&moved.path, "/hello"), b"two");
}
