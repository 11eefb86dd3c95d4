//! A content-addressed cache of built images under one directory (fcexec
//! uses `<data root>/.cache/images`, beside the agent's initrd cache).
//!
//! # Keys
//!
//! The key is the lowercase hex sha256 of a tag for the kind of source,
//! the build's headroom, and what names the image's content:
//!
//! - an OCI layout: its `index.json` (which names the manifests, which name
//!   the config and layers, by digest; every blob is checked at build);
//! - a `docker save` archive: its `manifest.json` and the config it names
//!   (the config lists the layers' diff ids, checked at build); an archive
//!   where they cannot be found is keyed by the sha256 of the whole file;
//! - a directory: not cached ([`CacheError::Uncacheable`]); a tree has no
//!   digest, and its path and times say too little about its content;
//! - a registry reference: the manifest digest (of the linux/amd64 image)
//!   it names. A tag is resolved to that digest by asking the registry,
//!   once: `tags/<sha256 of the reference>` remembers the digest, and while
//!   that image is cached the tag is served without any request (delete
//!   the image, `fcexec image rm REF`, to pull the tag again).
//!
//! # Files
//!
//! ```text
//! <key>.ext4    the image (written by [`crate::build`]: never half-built)
//! <key>.json    sidecar: source, size, config, built and last-used times
//! <key>.lock    flock(2)ed exclusively while the key is built, looked up or removed
//! <key>.use     flock(2)ed shared while an image is in use ([`CachedImage`])
//! tags/<hash>   the digest a registry tag pointed at when last built
//! ```
//!
//! Two calls of [`Cache::get_or_build`] for one key, from threads or
//! processes, build once: the second waits for `<key>.lock`. With a size
//! limit, the least recently used images go first when the total is over
//! it, skipping images in use (a shared lock on `<key>.use`) and the one
//! just returned.

use crate::file::io;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::registry::{Client, PullOptions, Reference, RegistryError};
use crate::sources::hex;
use crate::{build, BuildOptions, ImageConfig, ImageError, Source};

/// Largest JSON member of a docker archive read for its key.
const MAX_KEY_JSON: u64 = 16 << 20;

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The source cannot be keyed by its content.
    #[error("{0} cannot be cached: only OCI image layouts and docker save archives have a content digest")]
    Uncacheable(String),
    /// Building the image failed.
    #[error(transparent)]
    Build(#[from] ImageError),
    /// No cached image has this key or name.
    #[error("no cached image is called {0:?}")]
    NotFound(String),
    /// More than one cached image matches.
    #[error("{0:?} names several cached images; give more of the key")]
    Ambiguous(String),
    /// The image is in use or being built.
    #[error("cached image {0} is in use; try again when its executions are done")]
    InUse(String),
    /// Asking a registry what a tag points at failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A file of the cache could not be read or written.
    #[error(transparent)]
    Io(#[from] crate::file::FileError),
}

/// What the cache knows about one image (its sidecar JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The key (64 hex digits).
    pub key: String,
    /// The source it was built from, as given.
    pub source: String,
    /// The ext4 file's size in bytes.
    pub size: u64,
    /// The run configuration stored in it.
    pub config: ImageConfig,
    /// When it was built (ms since the epoch).
    pub built_ms: u64,
    /// When it was last returned (ms since the epoch).
    pub last_used_ms: u64,
}

/// An image from the cache, held in use (not evicted nor removed) until dropped.
#[derive(Debug)]
pub struct CachedImage {
    /// The key.
    pub key: String,
    /// The ext4 file: read or copy it, never write it.
    pub path: PathBuf,
    /// The run configuration stored in it.
    pub config: ImageConfig,
    /// Its size in bytes.
    pub size: u64,
    /// True when this call built it.
    pub built: bool,
    /// The shared lock on `<key>.use`.
    _in_use: File,
}

/// A directory of built images.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    limit: Option<u64>,
}

/// Milliseconds since the epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Opens (creating) `path` and flocks it with `op`; `None` when `op` has
/// `LOCK_NB` and the lock is held elsewhere.
fn lock(path: &Path, op: libc::c_int) -> Result<Option<File>, CacheError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("open the lock file", path))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(Some(file));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(None),
            _ => return Err(io("lock", path)(err).into()),
        }
    }
}

/// The cache key of `source` with `options` (see the module doc).
pub fn source_key(source: &Source, options: &BuildOptions) -> Result<String, CacheError> {
    let mut hasher = Sha256::new();
    hasher.update(b"fcexec-image-cache 1\0");
    hasher.update(
        format!(
            "headroom {} {}\0",
            options.headroom.fraction, options.headroom.bytes
        )
        .as_bytes(),
    );
    match source {
        Source::OciLayout(dir) => {
            let index = dir.join("index.json");
            let bytes = std::fs::read(&index).map_err(io("read", &index))?;
            hasher.update(b"oci\0");
            hasher.update(&bytes);
        }
        Source::DockerArchive(file) => {
            hasher.update(b"docker\0");
            match docker_manifest_and_config(file)? {
                Some((manifest, config)) => {
                    hasher.update(&manifest);
                    hasher.update(b"\0");
                    hasher.update(&config);
                }
                None => {
                    let f = File::open(file).map_err(io("open", file))?;
                    let digest = crate::sources::sha256_of(f).map_err(io("read", file))?;
                    hasher.update(b"whole\0");
                    hasher.update(digest.as_bytes());
                }
            }
        }
        Source::Directory(dir) => {
            return Err(CacheError::Uncacheable(format!(
                "the directory {}",
                dir.display()
            )))
        }
        Source::Registry(reference) => match &reference.digest {
            // The manifest digest names the config and layers by digest,
            // wherever the image is pulled from.
            Some(digest) => {
                hasher.update(b"registry\0");
                hasher.update(digest.as_bytes());
            }
            None => {
                return Err(CacheError::Uncacheable(format!(
                    "the tag {reference} (without the digest it points at)"
                )))
            }
        },
    }
    Ok(hex(&hasher.finalize()))
}

/// A docker archive's `manifest.json` and config, as bytes.
type ManifestAndConfig = (Vec<u8>, Vec<u8>);

/// `manifest.json` and the config it names, from a docker archive; `None`
/// when they are not plain members.
fn docker_manifest_and_config(file: &Path) -> Result<Option<ManifestAndConfig>, CacheError> {
    let f = File::open(file).map_err(io("open", file))?;
    let mut archive = tar::Archive::new(f);
    let mut jsons = std::collections::HashMap::new();
    for entry in archive.entries().map_err(io("read the archive", file))? {
        let mut entry = entry.map_err(io("read the archive", file))?;
        let name = entry
            .path()
            .map_err(io("read the archive", file))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name.ends_with(".json") && entry.size() <= MAX_KEY_JSON {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(io("read the archive", file))?;
            jsons.insert(name, bytes);
        }
    }
    let Some(manifest) = jsons.get("manifest.json") else {
        return Ok(None);
    };
    let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap_or_default();
    let config = parsed
        .get(0)
        .and_then(|m| m.get("Config"))
        .and_then(|c| c.as_str())
        .map(|c| c.trim_start_matches("./").to_string())
        .and_then(|c| jsons.get(&c));
    Ok(config.map(|c| (manifest.clone(), c.clone())))
}

impl Cache {
    /// The cache in `dir` (created 0700 when missing), keeping the images'
    /// total size under `limit` bytes when given.
    pub fn open(dir: &Path, limit: Option<u64>) -> Result<Cache, CacheError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            limit,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, key: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{key}.{ext}"))
    }

    /// The image of `source`: from the cache when built before, built
    /// (once, however many callers ask at the same time) otherwise. Then
    /// evicts least recently used images while over the limit. Blocking.
    pub fn get_or_build(
        &self,
        source: &Source,
        options: &BuildOptions,
    ) -> Result<CachedImage, CacheError> {
        let (pinned, tag) = self.pin(source, options)?;
        let key = source_key(&pinned, options)?;
        let guard = lock(&self.file(&key, "lock"), libc::LOCK_EX)?.expect("a blocking lock");
        let image = self.file(&key, "ext4");
        let (mut entry, built) = match self.entry(&key) {
            Some(entry) if image.is_file() => (entry, false),
            _ => {
                let done = build(&pinned, &image, options)?;
                let now = now_ms();
                let entry = CacheEntry {
                    key: key.clone(),
                    source: describe(source),
                    size: done.size,
                    config: done.config,
                    built_ms: now,
                    last_used_ms: now,
                };
                (entry, true)
            }
        };
        entry.last_used_ms = entry.last_used_ms.max(now_ms());
        if let Err(e) = self.write_entry(&entry) {
            if built {
                let _ = std::fs::remove_file(&image);
            }
            return Err(e);
        }
        if let (Some(tag), Source::Registry(pinned)) = (&tag, &pinned) {
            self.remember_tag(tag, pinned)?;
        }
        let in_use = lock(&self.file(&key, "use"), libc::LOCK_SH)?.expect("a blocking lock");
        drop(guard);
        if built {
            tracing::info!(key = %key, size = entry.size, "built a cached image");
        }
        if let Some(limit) = self.limit {
            self.evict(limit, &key)?;
        }
        Ok(CachedImage {
            key,
            path: image,
            config: entry.config,
            size: entry.size,
            built,
            _in_use: in_use,
        })
    }

    /// `source` with a registry tag replaced by the digest it points at,
    /// and the tag's reference when it had one. A tag whose image is
    /// cached is answered from `tags/` without asking the registry (as a
    /// container runtime's "pull if missing" does: `fcexec image rm` it
    /// to pull again); otherwise the registry is asked for the digest.
    fn pin(
        &self,
        source: &Source,
        options: &BuildOptions,
    ) -> Result<(Source, Option<Reference>), CacheError> {
        let Source::Registry(reference) = source else {
            return Ok((source.clone(), None));
        };
        if reference.digest.is_some() {
            return Ok((source.clone(), None));
        }
        let with = |digest: String| Reference {
            digest: Some(digest),
            ..reference.clone()
        };
        if let Some(digest) = self.tag_digest(reference) {
            let pinned = Source::Registry(with(digest));
            let key = source_key(&pinned, options)?;
            if self.entry(&key).is_some() && self.file(&key, "ext4").is_file() {
                tracing::debug!(%reference, key = %key, "tag found in the cache");
                return Ok((pinned, Some(reference.clone())));
            }
        }
        let digest = Client::new(reference, &PullOptions::default()).manifest_digest()?;
        tracing::info!(%reference, %digest, "resolved the tag");
        Ok((Source::Registry(with(digest)), Some(reference.clone())))
    }

    /// `tags/<sha256 of the reference>`: the digest the tag pointed at
    /// when its image was last built or found.
    fn tag_file(&self, tag: &Reference) -> PathBuf {
        let name = hex(&Sha256::digest(tag.to_string().as_bytes()));
        self.dir.join("tags").join(name)
    }

    fn tag_digest(&self, tag: &Reference) -> Option<String> {
        let text = std::fs::read_to_string(self.tag_file(tag)).ok()?;
        let digest = text.trim();
        crate::registry::check_digest(digest).ok()?;
        Some(digest.to_string())
    }

    fn remember_tag(&self, tag: &Reference, pinned: &Reference) -> Result<(), CacheError> {
        let Some(digest) = &pinned.digest else {
            return Ok(());
        };
        let path = self.tag_file(tag);
        let dir = self.dir.join("tags");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let temp = dir.join(format!(".tag.{}", std::process::id()));
        std::fs::write(&temp, format!("{digest}\n")).map_err(io("write", &temp))?;
        std::fs::rename(&temp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io("rename to", &path)(e).into()
        })
    }

    /// The sidecar of `key`, when readable.
    fn entry(&self, key: &str) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.file(key, "json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_entry(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let path = self.file(&entry.key, "json");
        let temp = self
            .dir
            .join(format!(".{}.json.{}", entry.key, std::process::id()));
        let json = serde_json::to_vec_pretty(entry).expect("an entry serializes");
        std::fs::write(&temp, json).map_err(io("write", &temp))?;
        std::fs::rename(&temp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io("rename to", &path)(e).into()
        })
    }

    /// Every cached image, least recently used first.
    pub fn list(&self) -> Result<Vec<CacheEntry>, CacheError> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let item = item.map_err(io("read", &self.dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json").filter(|k| !k.starts_with('.')) else {
                continue;
            };
            if let Some(entry) = self.entry(key) {
                if self.file(key, "ext4").is_file() {
                    entries.push(entry);
                }
            }
        }
        entries.sort_by(|a, b| (a.last_used_ms, &a.key).cmp(&(b.last_used_ms, &b.key)));
        Ok(entries)
    }

    /// Removes the image whose key is, or starts with, `key_or_name`, or
    /// whose source is `key_or_name`; refused while it is in use.
    pub fn remove(&self, key_or_name: &str) -> Result<CacheEntry, CacheError> {
        let entries = self.list()?;
        let exact: Vec<&CacheEntry> = entries
            .iter()
            .filter(|e| e.key == key_or_name || e.source == key_or_name)
            .collect();
        let matches = if exact.is_empty() && !key_or_name.is_empty() {
            entries
                .iter()
                .filter(|e| e.key.starts_with(key_or_name))
                .collect()
        } else {
            exact
        };
        let entry = match matches.as_slice() {
            [] => return Err(CacheError::NotFound(key_or_name.to_string())),
            [one] => (*one).clone(),
            _ => return Err(CacheError::Ambiguous(key_or_name.to_string())),
        };
        if !self.try_remove(&entry.key)? {
            return Err(CacheError::InUse(entry.key));
        }
        Ok(entry)
    }

    /// Removes `key` unless it is being built or in use; true when removed.
    fn try_remove(&self, key: &str) -> Result<bool, CacheError> {
        let Some(_guard) = lock(&self.file(key, "lock"), libc::LOCK_EX | libc::LOCK_NB)? else {
            return Ok(false);
        };
        let Some(_use) = lock(&self.file(key, "use"), libc::LOCK_EX | libc::LOCK_NB)? else {
            return Ok(false);
        };
        for ext in ["ext4", "json"] {
            let path = self.file(key, ext);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &path)(e).into()),
            }
        }
        Ok(true)
    }

    /// Evicts least recently used images, never `keep` nor one in use,
    /// while the total is over `limit`.
    fn evict(&self, limit: u64, keep: &str) -> Result<(), CacheError> {
        let entries = self.list()?;
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        for entry in &entries {
            if total <= limit {
                break;
            }
            if entry.key == keep {
                continue;
            }
            if self.try_remove(&entry.key)? {
                tracing::info!(key = %entry.key, size = entry.size, "evicted a cached image");
                total -= entry.size;
            }
        }
        Ok(())
    }
}

/// How an entry names its source: as given (a tag stays a tag).
fn describe(source: &Source) -> String {
    source.to_string()
}
