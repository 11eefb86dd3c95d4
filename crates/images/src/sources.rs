//! Where an image comes from: a directory (copied as is), an OCI image
//! layout directory, or a `docker save` archive. Resolving a source reads
//! its manifest and config and yields the layers to apply, bottom first,
//! and the run configuration; every blob named by a digest is checked
//! against it before anything is applied.
//!
//! OCI layout: `oci-layout` → `index.json` → (nested indexes →) the
//! linux/amd64 manifest → config and layers under `blobs/sha256/`. A
//! `docker save` archive (plain tar) has `manifest.json` listing the
//! `Config` and `Layers` paths inside the archive; layers are read in place
//! from the archive (no copy), and checked against the config's
//! `rootfs.diff_ids` as they are applied.

use crate::file::io;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigFile, ImageConfig};
use crate::registry::{PullOptions, Reference, RegistryError};

/// The only architecture fcexec's guests run.
pub const ARCHITECTURE: &str = "amd64";

/// Largest manifest, index or config file read into memory.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// An image source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A root file system tree, copied as is (no image config).
    Directory(PathBuf),
    /// An OCI image layout directory (has an `oci-layout` file).
    OciLayout(PathBuf),
    /// A `docker save` archive (an uncompressed tar file).
    DockerArchive(PathBuf),
    /// An image in a registry, pulled (see [`crate::registry`]) into a
    /// temporary OCI layout beside the output, removed after the build.
    Registry(Reference),
}

impl Source {
    /// The source at `path`: an OCI layout when it is a directory with an
    /// `oci-layout` file, another directory as is, a file as a `docker
    /// save` archive.
    pub fn detect(path: &Path) -> Result<Source, SourceError> {
        let meta = std::fs::metadata(path).map_err(io("read", path))?;
        Ok(if meta.is_dir() && path.join("oci-layout").is_file() {
            Source::OciLayout(path.to_path_buf())
        } else if meta.is_dir() {
            Source::Directory(path.to_path_buf())
        } else {
            Source::DockerArchive(path.to_path_buf())
        })
    }
}

/// True when `text` names a file or directory rather than a registry
/// reference: it is absolute, starts with `./` or `../`, or exists.
/// Everything else (`alpine:3.20`, `registry.example:5000/app@sha256:...`)
/// is a reference.
pub fn looks_like_path(text: &str) -> bool {
    text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text == "."
        || text == ".."
        || Path::new(text).symlink_metadata().is_ok()
}

impl Source {
    /// The source `text` names: a path (see [`looks_like_path`]) as
    /// [`Source::detect`] finds it, otherwise a registry reference.
    ///
    /// ```
    /// use fcexec_images::Source;
    ///
    /// let source = Source::parse("127.0.0.1:5000/app:1.0").unwrap();
    /// assert!(matches!(source, Source::Registry(_)));
    /// ```
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        match looks_like_path(text) {
            true => Source::detect(Path::new(text)),
            false => Ok(Source::Registry(Reference::parse(text)?)),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Directory(p) | Source::OciLayout(p) | Source::DockerArchive(p) => {
                write!(f, "{}", p.display())
            }
            Source::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading a file of the source failed.
    #[error(transparent)]
    Io(#[from] crate::file::FileError),
    /// A JSON document of the source is invalid.
    #[error("{name} is not a valid {what}: {source}")]
    Json {
        /// The document (file or blob).
        name: String,
        /// What it should be.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The source is structurally wrong (a missing file, an empty list...).
    #[error("{0}")]
    Invalid(String),
    /// A blob's content does not match its digest.
    #[error("blob {blob} does not match its digest: its content hashes to sha256:{actual}")]
    DigestMismatch {
        /// The blob's digest, as named by the manifest.
        blob: String,
        /// The digest of its content.
        actual: String,
    },
    /// A digest is not `sha256:` and 64 lowercase hex digits.
    #[error("unsupported or malformed digest {0:?}: expected sha256: and 64 lowercase hex digits")]
    BadDigest(String),
    /// The image is for another platform.
    #[error("the image is for {found}, and fcexec runs linux/{ARCHITECTURE} only")]
    WrongArchitecture {
        /// The platforms offered, as `os/architecture`.
        found: String,
    },
    /// A layer's media type is not a (gzip) tar.
    #[error("layer {digest} has the unsupported media type {media_type}; only tar and tar+gzip are supported")]
    UnsupportedMediaType {
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// Pulling from a registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// One layer to apply: `len` bytes at `offset` of `path`.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    /// How the source names the layer (a digest or an archive path).
    pub name: String,
    /// The file holding it.
    pub path: PathBuf,
    /// Where it starts in the file.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// `sha256:<hex>` of its uncompressed tar, when the config lists it.
    pub diff_id: Option<String>,
    /// The download directory the file is in, kept while the layer is.
    pub keep: Option<Arc<PullDir>>,
}

/// A directory removed when dropped (a registry pull's OCI layout).
#[derive(Debug)]
pub(crate) struct PullDir(PathBuf);

impl Drop for PullDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pulls `reference` into a temporary OCI layout beside `output` and
/// resolves it; the layout goes when the returned layers are dropped, and
/// at once on error.
pub(crate) fn resolve_registry(
    reference: &Reference,
    output: &Path,
    progress: Option<crate::ProgressFn>,
) -> Result<Resolved, SourceError> {
    let dir = Arc::new(PullDir(crate::beside(output, "pull")));
    std::fs::create_dir(&dir.0).map_err(io("create the download directory", &dir.0))?;
    let pulled = crate::registry::Client::new(reference, &PullOptions::default())
        .with_progress(progress)
        .pull(&dir.0)?;
    tracing::info!(%reference, manifest = %pulled.manifest, bytes = pulled.bytes, requests = pulled.requests, "pulled");
    let mut resolved = resolve_oci(&dir.0)?;
    for layer in &mut resolved.layers {
        layer.keep = Some(dir.clone());
    }
    Ok(resolved)
}

impl LayerBlob {
    /// A reader of the layer's bytes.
    pub fn open(&self) -> Result<impl Read, SourceError> {
        let mut file = std::fs::File::open(&self.path).map_err(io("open", &self.path))?;
        file.seek(SeekFrom::Start(self.offset))
            .map_err(io("seek in", &self.path))?;
        Ok(file.take(self.len))
    }
}

/// A resolved image: what to apply and how to run it.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The run configuration.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerBlob>,
}

/// `sha256:<hex>` of what `reader` yields.
pub(crate) fn sha256_of(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI layout's blob for `digest`, its content checked.
fn oci_blob(layout: &Path, digest: &str) -> Result<PathBuf, SourceError> {
    let hex_part = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| SourceError::BadDigest(digest.to_string()))?;
    let path = layout.join("blobs/sha256").join(hex_part);
    let file = std::fs::File::open(&path).map_err(io("open the blob", &path))?;
    let actual = sha256_of(file).map_err(io("read the blob", &path))?;
    if actual != hex_part {
        return Err(SourceError::DigestMismatch {
            blob: digest.to_string(),
            actual,
        });
    }
    Ok(path)
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    name: &str,
    what: &'static str,
) -> Result<T, SourceError> {
    let file = std::fs::File::open(path).map_err(io("open", path))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| SourceError::Json {
        name: name.to_string(),
        what,
        source,
    })
}

/// A descriptor in an OCI index or manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// An OCI index or manifest (told apart by which list is present).
#[derive(Debug, Deserialize)]
struct OciDocument {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Resolves an OCI image layout directory.
pub(crate) fn resolve_oci(layout: &Path) -> Result<Resolved, SourceError> {
    let marker: serde_json::Value = read_json(
        &layout.join("oci-layout"),
        "oci-layout",
        "OCI layout marker",
    )?;
    if marker.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(SourceError::Invalid(format!(
            "{}: oci-layout does not say imageLayoutVersion 1.0.0",
            layout.display()
        )));
    }
    let mut doc: OciDocument = read_json(&layout.join("index.json"), "index.json", "OCI index")?;
    let mut name = "index.json".to_string();
    // Follow indexes down to a manifest (bounded, in case of a cycle).
    for _ in 0..8 {
        let Some(manifests) = doc.manifests.take() else {
            break;
        };
        let chosen = pick_platform(&name, manifests)?;
        let path = oci_blob(layout, &chosen.digest)?;
        doc = read_json(&path, &chosen.digest, "OCI index or manifest")?;
        name = chosen.digest;
    }
    let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
        return Err(SourceError::Invalid(format!(
            "{name} is not an image manifest (no config and layers)"
        )));
    };
    let config_path = oci_blob(layout, &config.digest)?;
    let file: ConfigFile = read_json(&config_path, &config.digest, "image config")?;
    check_platform(&file)?;
    let diff_ids = diff_ids(&file, layers.len());
    let mut blobs = Vec::new();
    for (i, layer) in layers.into_iter().enumerate() {
        if layer.media_type.contains("zstd") || !layer.media_type.contains("tar") {
            return Err(SourceError::UnsupportedMediaType {
                digest: layer.digest,
                media_type: layer.media_type,
            });
        }
        let path = oci_blob(layout, &layer.digest)?;
        let len = std::fs::metadata(&path).map_err(io("read", &path))?.len();
        blobs.push(LayerBlob {
            name: layer.digest,
            path,
            offset: 0,
            len,
            diff_id: diff_ids.as_ref().map(|d| d[i].clone()),
            keep: None,
        });
    }
    Ok(Resolved {
        config: file.config.map(ImageConfig::from).unwrap_or_default(),
        layers: blobs,
    })
}

/// [`pick_platform`] over `(digest, Some((os, architecture)))` pairs: the
/// chosen digest.
pub(crate) fn pick_platform_of(
    name: &str,
    manifests: Vec<(String, Option<(String, String)>)>,
) -> Result<String, SourceError> {
    let descriptors = manifests
        .into_iter()
        .map(|(digest, platform)| Descriptor {
            media_type: String::new(),
            digest,
            platform: platform.map(|(os, architecture)| Platform { architecture, os }),
        })
        .collect();
    Ok(pick_platform(name, descriptors)?.digest)
}

/// The linux/amd64 entry of an index, or its only entry when it names no
/// platform.
fn pick_platform(name: &str, manifests: Vec<Descriptor>) -> Result<Descriptor, SourceError> {
    if manifests.is_empty() {
        return Err(SourceError::Invalid(format!("{name} lists no manifests")));
    }
    let found: Vec<String> = manifests
        .iter()
        .filter_map(|m| {
            m.platform
                .as_ref()
                .map(|p| format!("{}/{}", p.os, p.architecture))
        })
        .collect();
    let mut unlabeled = None;
    for m in manifests {
        match &m.platform {
            Some(p) if p.os == "linux" && p.architecture == ARCHITECTURE => return Ok(m),
            Some(_) => {}
            None => unlabeled = unlabeled.or(Some(m)),
        }
    }
    unlabeled.ok_or_else(|| SourceError::WrongArchitecture {
        found: found.join(", "),
    })
}

fn check_platform(file: &ConfigFile) -> Result<(), SourceError> {
    let arch_ok = file.architecture.is_empty() || file.architecture == ARCHITECTURE;
    let os_ok = file.os.is_empty() || file.os == "linux";
    if arch_ok && os_ok {
        Ok(())
    } else {
        Err(SourceError::WrongArchitecture {
            found: format!("{}/{}", file.os, file.architecture),
        })
    }
}

/// The config's diff ids when there is one per layer.
fn diff_ids(file: &ConfigFile, layers: usize) -> Option<Vec<String>> {
    let ids = &file.rootfs.as_ref()?.diff_ids;
    (ids.len() == layers).then(|| ids.clone())
}

/// One image of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    layers: Vec<String>,
}

/// Where a member of a tar archive is.
#[derive(Debug)]
struct Member {
    offset: u64,
    len: u64,
    /// The member it links to, for symbolic and hard links.
    link: Option<String>,
}

/// Resolves a `docker save` archive (its first image).
pub(crate) fn resolve_docker(archive: &Path) -> Result<Resolved, SourceError> {
    let file = std::fs::File::open(archive).map_err(io("open", archive))?;
    let mut members = std::collections::HashMap::new();
    let mut tar = tar::Archive::new(file);
    for entry in tar.entries().map_err(io("read the archive", archive))? {
        let entry = entry.map_err(io("read the archive", archive))?;
        let name = entry.path().map_err(io("read the archive", archive))?;
        let name = clean(&name.to_string_lossy());
        let link = match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => entry
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned()),
            _ => None,
        };
        let member = Member {
            offset: entry.raw_file_position(),
            len: entry.size(),
            link,
        };
        members.insert(name, member);
    }
    let find = |name: &str| -> Result<&Member, SourceError> {
        let mut name = clean(name);
        for _ in 0..8 {
            let member = members.get(&name).ok_or_else(|| {
                SourceError::Invalid(format!("{}: no {name} in the archive", archive.display()))
            })?;
            match &member.link {
                None => return Ok(member),
                Some(link) => {
                    let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                    name = clean(&dir.join(link).to_string_lossy());
                }
            }
        }
        Err(SourceError::Invalid(format!(
            "{}: {name} is a link loop",
            archive.display()
        )))
    };
    let read = |name: &str, what| -> Result<Vec<u8>, SourceError> {
        let member = find(name)?;
        if member.len > MAX_JSON_BYTES {
            return Err(SourceError::Invalid(format!(
                "{name} is {} bytes, too large for a {what}",
                member.len
            )));
        }
        let mut bytes = Vec::new();
        LayerBlob {
            name: name.to_string(),
            path: archive.to_path_buf(),
            offset: member.offset,
            len: member.len,
            diff_id: None,
            keep: None,
        }
        .open()?
        .read_to_end(&mut bytes)
        .map_err(io("read", archive))?;
        Ok(bytes)
    };
    let manifests: Vec<DockerManifest> = json(
        &read("manifest.json", "manifest")?,
        "manifest.json",
        "docker save manifest",
    )?;
    let manifest = manifests
        .into_iter()
        .next()
        .ok_or_else(|| SourceError::Invalid("manifest.json lists no image".to_string()))?;
    let config_bytes = read(&manifest.config, "config")?;
    // Legacy archives name the config after its digest: check it when so.
    let stem = Path::new(&manifest.config)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    if let Some(expected) =
        stem.filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        let actual = hex(&Sha256::digest(&config_bytes));
        if actual != expected {
            return Err(SourceError::DigestMismatch {
                blob: manifest.config.clone(),
                actual,
            });
        }
    }
    let file: ConfigFile = json(&config_bytes, &manifest.config, "image config")?;
    check_platform(&file)?;
    let diff_ids = diff_ids(&file, manifest.layers.len());
    let mut layers = Vec::new();
    for (i, name) in manifest.layers.iter().enumerate() {
        let member = find(name)?;
        layers.push(LayerBlob {
            name: name.clone(),
            path: archive.to_path_buf(),
            offset: member.offset,
            len: member.len,
            diff_id: diff_ids.as_ref().map(|d| d[i].clone()),
            keep: None,
        });
    }
    Ok(Resolved {
        config: file.config.map(ImageConfig::from).unwrap_or_default(),
        layers,
    })
}

fn json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    name: &str,
    what: &'static str,
) -> Result<T, SourceError> {
    serde_json::from_slice(bytes).map_err(|source| SourceError::Json {
        name: name.to_string(),
        what,
        source,
    })
}

/// An archive member name without `./` and trailing `/`, `..` resolved.
fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(digest: &str, platform: Option<(&str, &str)>) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: digest.to_string(),
            platform: platform.map(|(os, architecture)| Platform {
                os: os.to_string(),
                architecture: architecture.to_string(),
            }),
        }
    }

    #[test]
    fn the_linux_amd64_manifest_is_picked_and_others_refused() {
        let list = vec![
            descriptor("arm", Some(("linux", "arm64"))),
            descriptor("amd", Some(("linux", "amd64"))),
        ];
        assert_eq!(pick_platform("index", list).unwrap().digest, "amd");
        let list = vec![descriptor("any", None)];
        assert_eq!(pick_platform("index", list).unwrap().digest, "any");
        let list = vec![
            descriptor("arm", Some(("linux", "arm64"))),
            descriptor("win", Some(("windows", "amd64"))),
        ];
        let err = pick_platform("index", list).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image is for linux/arm64, windows/amd64, and fcexec runs linux/amd64 only"
        );
    }

    #[test]
    fn archive_member_names_are_cleaned() {
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("a/../../b"), "b");
    }
}
