//! Pulling an image from a registry (the OCI distribution API v2) into a
//! temporary OCI image layout, which [`crate::build`] then applies like any
//! other layout.
//!
//! A small blocking client on `ureq`: the build is blocking already, and
//! the async `oci-client` would bring tokio, reqwest and a runtime inside
//! [`crate::build`] for the six kinds of request used here.
//!
//! - References: `host[:port]/repo[:tag]` or `...@sha256:<hex>`; without a
//!   host, Docker Hub (`docker.io`, `library/` for one-part names); without
//!   a tag or digest, `latest`.
//! - Transport: HTTPS, except plain HTTP for `localhost`, `127.0.0.1` and
//!   `[::1]` only (a registry on the loopback, as in tests and local
//!   mirrors). No other host is ever spoken to in clear.
//! - Authentication: anonymous first; on `401` with `WWW-Authenticate:
//!   Basic`, the credentials; with `Bearer realm=...,service=...,scope=...`,
//!   a token from the realm (with the credentials when there are some).
//!   Credentials are [`PullOptions::credentials`], or else
//!   `auths.<host>.auth` (base64 `user:password`) of the Docker config file
//!   `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
//! - Manifest lists / OCI indexes: the linux/amd64 entry, else
//!   [`RegistryError::WrongArchitecture`].
//! - Every manifest fetched by digest and every blob is checked against its
//!   digest as it is downloaded; a mismatch is
//!   [`RegistryError::DigestMismatch`] naming the blob, and the partial file
//!   is removed. [`pull`] fills a directory the caller removes on error.

use crate::file::io;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::sources::{hex, SourceError};

/// Largest manifest or config read into memory.
const MAX_JSON_BYTES: u64 = 16 << 20;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// An image reference: where the image is and which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` of the registry (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository (`library/alpine`).
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The manifest digest (`sha256:...`), which wins over the tag.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `[host[:port]/]repo[:tag][@sha256:hex]`.
    pub fn parse(text: &str) -> Result<Reference, RegistryError> {
        let bad = |why: &str| RegistryError::BadReference {
            reference: text.to_string(),
            why: why.to_string(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => {
                check_digest(d).map_err(|_| bad("the digest is not sha256: and 64 hex digits"))?;
                (rest, Some(d.to_string()))
            }
            None => (text, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        // A tag is after the last ':' of the last path component.
        let last = path.rsplit('/').next().unwrap_or("");
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, tag)) => (
                path[..path.len() - tag.len() - 1].to_string(),
                Some(tag.to_string()),
            ),
            None => (path.clone(), None),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("the tag must be letters, digits, '.', '_' and '-'"));
            }
        }
        if registry.is_empty() {
            return Err(bad("no registry host"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag or digest the manifest is fetched by.
    fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether the registry is on the loopback (plain HTTP allowed).
    fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// The base URL of the registry's API.
    fn base(&self) -> String {
        let host = if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        };
        let scheme = if self.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{host}/v2")
    }
}

impl std::str::FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Errors of a pull.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {why}")]
    BadReference {
        /// The text given.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// The registry cannot be reached (refused, timed out, DNS, TLS).
    #[error("cannot reach the registry {registry}: {message}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The transport error.
        message: String,
    },
    /// The registry has no such repository, tag or manifest.
    #[error("{reference} is not in the registry")]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// The registry refused the credentials, or there were none.
    #[error("the registry {registry} refused access: {message}")]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// What it said.
        message: String,
    },
    /// Another HTTP error.
    #[error("{url}: HTTP {status}: {body}")]
    Http {
        /// The request's URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The registry's answers are not what the protocol says.
    #[error("registry protocol error: {0}")]
    Protocol(String),
    /// A downloaded blob or manifest does not match its digest.
    #[error("blob {blob} does not match its digest: its content hashes to sha256:{actual}")]
    DigestMismatch {
        /// The blob's (or manifest's) digest.
        blob: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// The image has no linux/amd64 variant.
    #[error(
        "the image is for {found}, and fcexec runs linux/{} only",
        crate::sources::ARCHITECTURE
    )]
    WrongArchitecture {
        /// The platforms offered, as `os/architecture`.
        found: String,
    },
    /// Writing the download failed.
    #[error(transparent)]
    Io(#[from] crate::file::FileError),
}

pub(crate) fn check_digest(digest: &str) -> Result<&str, RegistryError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| {
            RegistryError::Protocol(format!("unsupported or malformed digest {digest:?}"))
        })
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `(user, password)`; when None, the Docker config file's, if any.
    pub credentials: Option<(String, String)>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of reading a response (between bytes).
    pub read_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What [`pull`] wrote.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image manifest's digest.
    pub manifest: String,
    /// How many layers.
    pub layers: usize,
    /// Bytes of blobs downloaded.
    pub bytes: u64,
    /// HTTP requests made, token requests included.
    pub requests: u64,
}

/// A blocking registry client for one pull (one repository).
pub struct Client {
    agent: ureq::Agent,
    reference: Reference,
    credentials: Option<(String, String)>,
    /// The `Authorization` header value that worked last.
    auth: Mutex<Option<String>>,
    requests: AtomicU64,
    /// Blob bytes downloaded so far.
    downloaded: AtomicU64,
    /// Told of the bytes downloaded as blobs arrive.
    progress: Option<crate::ProgressFn>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("reference", &self.reference)
            .field("credentials", &self.credentials.is_some())
            .field("requests", &self.requests())
            .finish()
    }
}

impl Client {
    /// A client for `reference`'s repository.
    pub fn new(reference: &Reference, options: &PullOptions) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(options.connect_timeout)
            .timeout_read(options.read_timeout)
            .redirects(5)
            .build();
        let credentials = options
            .credentials
            .clone()
            .or_else(|| docker_config_credentials(&reference.registry));
        Client {
            agent,
            reference: reference.clone(),
            credentials,
            auth: Mutex::new(None),
            requests: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            progress: None,
        }
    }

    /// Reports [`crate::Progress::Downloaded`] to `progress` as blobs arrive.
    pub fn with_progress(mut self, progress: Option<crate::ProgressFn>) -> Client {
        self.progress = progress;
        self
    }

    /// Adds `n` downloaded bytes; reports the total at every MiB boundary
    /// crossed and when `done`.
    fn downloaded(&self, n: u64, done: bool) {
        let before = self.downloaded.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if let Some(report) = &self.progress {
            if done || before >> 20 != after >> 20 {
                report(&crate::Progress::Downloaded { bytes: after });
            }
        }
    }

    /// HTTP requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut req = self.agent.get(url);
        if let Some(a) = accept {
            req = req.set("Accept", a);
        }
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        req.call().map_err(Box::new)
    }

    /// GET `url` with the authentication dance; the successful response.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<ureq::Response, RegistryError> {
        let auth = self.auth.lock().map(|a| a.clone()).unwrap_or_default();
        match self.send(url, accept, auth.as_deref()).map_err(|e| *e) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(401, r)) => {
                let challenge = r.header("WWW-Authenticate").unwrap_or("").to_string();
                let header = self.authenticate(&challenge)?;
                if let Ok(mut a) = self.auth.lock() {
                    *a = Some(header.clone());
                }
                match self.send(url, accept, Some(&header)) {
                    Ok(r) => Ok(r),
                    Err(e) => Err(self.error(url, *e)),
                }
            }
            Err(e) => Err(self.error(url, e)),
        }
    }

    fn error(&self, url: &str, e: ureq::Error) -> RegistryError {
        match e {
            ureq::Error::Status(401 | 403, r) => RegistryError::Unauthorized {
                registry: self.reference.registry.clone(),
                message: format!("HTTP {}: {}", r.status(), body_start(r)),
            },
            ureq::Error::Status(404, _) => RegistryError::NotFound {
                reference: self.reference.to_string(),
            },
            ureq::Error::Status(status, r) => RegistryError::Http {
                url: url.to_string(),
                status,
                body: body_start(r),
            },
            ureq::Error::Transport(t) => RegistryError::Unreachable {
                registry: self.reference.registry.clone(),
                message: t.to_string(),
            },
        }
    }

    /// The `Authorization` header answering `challenge`.
    fn authenticate(&self, challenge: &str) -> Result<String, RegistryError> {
        let unauthorized = |message: String| RegistryError::Unauthorized {
            registry: self.reference.registry.clone(),
            message,
        };
        let basic = self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => basic.ok_or_else(|| {
                unauthorized("credentials required, and none are configured".into())
            }),
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        RegistryError::Protocol(format!(
                            "bearer challenge without realm: {challenge}"
                        ))
                    })?;
                let mut url = realm.clone();
                let mut sep = if realm.contains('?') { '&' } else { '?' };
                let scope = params
                    .iter()
                    .find(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone());
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
                for (k, v) in params
                    .iter()
                    .filter(|(k, _)| k == "service")
                    .chain([&("scope".to_string(), scope)])
                {
                    url.push(sep);
                    url.push_str(k);
                    url.push('=');
                    url.push_str(&query_escape(v));
                    sep = '&';
                }
                let response = self
                    .send(&url, None, basic.as_deref())
                    .map_err(|e| match *e {
                        ureq::Error::Status(s, r) => {
                            unauthorized(format!("token request: HTTP {s}: {}", body_start(r)))
                        }
                        e => self.error(&url, e),
                    })?;
                let body = read_limited(response, &url)?;
                let token: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    RegistryError::Protocol(format!("token response is not JSON: {e}"))
                })?;
                let token = token
                    .get("token")
                    .or_else(|| token.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| RegistryError::Protocol("token response has no token".into()))?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(unauthorized(format!("unsupported challenge {challenge:?}"))),
        }
    }

    /// The manifest at `reference` (tag or digest), checked against the
    /// digest when it is one: its bytes and media type.
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String), RegistryError> {
        let url = format!(
            "{}/{}/manifests/{reference}",
            self.reference.base(),
            self.reference.repository
        );
        let response = self.get(&url, Some(MANIFEST_TYPES))?;
        let media_type = response.content_type().to_string();
        let bytes = read_limited(response, &url)?;
        if reference.starts_with("sha256:") {
            let actual = hex(&Sha256::digest(&bytes));
            if check_digest(reference)? != actual {
                return Err(RegistryError::DigestMismatch {
                    blob: reference.to_string(),
                    actual,
                });
            }
        }
        Ok((bytes, media_type))
    }

    /// Downloads blob `digest` to `blobs/<hex>`, checking it as it comes.
    fn blob(&self, digest: &str, blobs: &Path) -> Result<u64, RegistryError> {
        let hex_part = check_digest(digest)?;
        let path = blobs.join(hex_part);
        if path.exists() {
            return Ok(std::fs::metadata(&path).map_err(io("read", &path))?.len());
        }
        let url = format!(
            "{}/{}/blobs/{digest}",
            self.reference.base(),
            self.reference.repository
        );
        let response = self.get(&url, None)?;
        let partial = blobs.join(format!(".{hex_part}.partial"));
        let result = (|| {
            let mut file = std::fs::File::create(&partial).map_err(io("create", &partial))?;
            let mut reader = response.into_reader();
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| RegistryError::Unreachable {
                        registry: self.reference.registry.clone(),
                        message: format!("reading blob {digest}: {e}"),
                    })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io("write", &partial))?;
                total += n as u64;
                self.downloaded(n as u64, false);
            }
            self.downloaded(0, true);
            let actual = hex(&hasher.finalize());
            if actual != hex_part {
                return Err(RegistryError::DigestMismatch {
                    blob: digest.to_string(),
                    actual,
                });
            }
            file.sync_all().map_err(io("write", &partial))?;
            std::fs::rename(&partial, &path).map_err(io("rename", &partial))?;
            Ok(total)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// The linux/amd64 image manifest the reference names: its digest,
    /// bytes and media type (indexes followed, at most 4 deep).
    fn resolve(&self) -> Result<(String, Vec<u8>, String), RegistryError> {
        let (mut bytes, mut media_type) = self.manifest(self.reference.manifest_ref())?;
        let mut digest = match &self.reference.digest {
            Some(d) => d.clone(),
            None => format!("sha256:{}", hex(&Sha256::digest(&bytes))),
        };
        for _ in 0..4 {
            let doc: Document = parse(&bytes, &digest)?;
            let Some(manifests) = doc.manifests else {
                break;
            };
            let chosen = crate::sources::pick_platform_of(
                &digest,
                manifests
                    .into_iter()
                    .map(|m| (m.digest, m.platform.map(|p| (p.os, p.architecture))))
                    .collect(),
            )
            .map_err(|e| match e {
                SourceError::WrongArchitecture { found } => {
                    RegistryError::WrongArchitecture { found }
                }
                e => RegistryError::Protocol(e.to_string()),
            })?;
            (bytes, media_type) = self.manifest(&chosen)?;
            digest = chosen;
        }
        Ok((digest, bytes, media_type))
    }

    /// The digest of the linux/amd64 image manifest the reference names
    /// (what a tag points at now): a key for a cache of built images.
    /// Downloads manifests only.
    pub fn manifest_digest(&self) -> Result<String, RegistryError> {
        Ok(self.resolve()?.0)
    }

    /// Pulls the image into an OCI image layout at `layout` (an empty or
    /// missing directory): `oci-layout`, `index.json` naming the chosen
    /// manifest, and the manifest, config and layer blobs.
    pub fn pull(&self, layout: &Path) -> Result<Pulled, RegistryError> {
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
        let (digest, bytes, mut media_type) = self.resolve()?;
        let doc: Document = parse(&bytes, &digest)?;
        let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
            return Err(RegistryError::Protocol(format!(
                "{digest} is not an image manifest"
            )));
        };
        let mut total = self.blob(&config.digest, &blobs)?;
        for layer in &layers {
            total += self.blob(&layer.digest, &blobs)?;
        }
        let hex_part = check_digest(&digest)?;
        let manifest_path = blobs.join(hex_part);
        std::fs::write(&manifest_path, &bytes).map_err(io("write", &manifest_path))?;
        if media_type.is_empty() || !media_type.contains("manifest") {
            media_type = "application/vnd.oci.image.manifest.v1+json".to_string();
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": media_type, "digest": digest, "size": bytes.len()}],
        });
        let index_path = layout.join("index.json");
        std::fs::write(&index_path, serde_json::to_vec(&index).expect("JSON"))
            .map_err(io("write", &index_path))?;
        let marker = layout.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io("write", &marker))?;
        Ok(Pulled {
            manifest: digest,
            layers: layers.len(),
            bytes: total,
            requests: self.requests(),
        })
    }
}

/// Pulls `reference` into an OCI image layout at `layout`; see
/// [`Client::pull`].
pub fn pull(
    reference: &Reference,
    layout: &Path,
    options: &PullOptions,
) -> Result<Pulled, RegistryError> {
    Client::new(reference, options).pull(layout)
}

#[derive(Debug, serde::Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, serde::Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, serde::Deserialize)]
struct Document {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

fn parse(bytes: &[u8], name: &str) -> Result<Document, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Protocol(format!("{name} is not a valid manifest or index: {e}"))
    })
}

fn read_limited(response: ureq::Response, url: &str) -> Result<Vec<u8>, RegistryError> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::Protocol(format!("{url}: reading the response: {e}")))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(RegistryError::Protocol(format!(
            "{url}: response larger than {MAX_JSON_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

fn body_start(r: ureq::Response) -> String {
    let mut s = r.into_string().unwrap_or_default();
    s.truncate(s.trim_end().len().min(300));
    s
}

fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `Bearer realm="x",service="y"` → ("Bearer", [("realm","x"), ...]).
fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, mut rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.push((key, value.trim().to_string()));
        rest = next;
    }
    (scheme.to_string(), params)
}

/// `auths.<registry>.auth` of the Docker config file, decoded.
fn docker_config_credentials(registry: &str) -> Option<(String, String)> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    let text = std::fs::read(dir.join("config.json")).ok()?;
    credentials_from_config(&text, registry)
}

fn credentials_from_config(config: &[u8], registry: &str) -> Option<(String, String)> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let hub = registry == "docker.io";
    let entry = auths.iter().find_map(|(key, v)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let matches = host == registry
            || (hub
                && matches!(
                    host,
                    "index.docker.io" | "registry-1.docker.io" | "docker.io"
                ));
        matches.then_some(v)
    })?;
    let auth = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed() {
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.tag.as_deref(),
                r.digest.as_deref()
            ),
            ("127.0.0.1:5000", "a/b", Some("v1"), None)
        );
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2");
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.base(), "https://registry-1.docker.io/v2");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/x/y@{d}")).unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        assert_eq!(
            Reference::parse("example.com:8080/x").unwrap().base(),
            "https://example.com:8080/v2"
        );
        assert!(Reference::parse("localhost:1/x").unwrap().is_loopback());
        for bad in ["x@sha256:12", "Upper/case", "h.io/x:bad tag", "h.io//x"] {
            assert!(
                matches!(
                    Reference::parse(bad),
                    Err(RegistryError::BadReference { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn challenges_are_parsed() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull".into()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((s.as_str(), p.len()), ("Basic", 1));
    }

    #[test]
    fn docker_config_auths_are_read() {
        let config = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcjN0"}}}"#;
        assert_eq!(
            credentials_from_config(config, "127.0.0.1:5000"),
            Some(("alice".into(), "s3cr3t".into()))
        );
        assert_eq!(
            credentials_from_config(config, "docker.io"),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(credentials_from_config(config, "other.io"), None);
    }
}
