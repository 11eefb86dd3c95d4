//! The config drive: what the host tells the agent (`docs/guest-protocol.md`,
//! "Config drive" and "Version 2").
//!
//! The drive's first 512-byte sector is ASCII text ended by a NUL byte or the
//! end of the sector:
//!
//! ```text
//! FCXCFG1
//! key=<32 hex digits>
//! proto=2
//! vsock_port=1024
//! heartbeat_ms=1000
//! spec=<N>
//! ```
//!
//! `spec=<N>`: the job spec, N bytes of UTF-8 JSON, starts at byte 512 (the
//! image is NUL-padded to a multiple of 4096 bytes). Every field but
//! `command` is optional; unknown fields are ignored (see [`JobSpec`]):
//!
//! ```json
//! {"command": ["/bin/sh", "-c", "echo hi"],
//!  "env": [["PATH", "/usr/bin:/bin"], ["K", "V"]],
//!  "working_dir": "/",
//!  "user": "1000:1000",
//!  "root_read_only": false,
//!  "volumes": [{"drive": 1, "target": "/mnt/in", "read_only": true},
//!              {"drive": 2, "target": "/mnt/out", "read_only": false}],
//!  "provision_scripts": [{"name": "01-setup", "script_b64": "ZWNobyBoaQo="}],
//!  "cancel_grace_ms": 5000,
//!  "network": {"address": "10.213.0.6/30", "gateway": "10.213.0.5", "dns": "10.213.0.5"}}
//! ```
//!
//! `network` is the guest's network (the kernel's `ip=` argument configures
//! `eth0`); the agent gives the job `network.dns` as its `/etc/resolv.conf`.
//!
//! The config is parsed in two stages on purpose: a bad *header* (no magic, no key) leaves
//! the agent unable to authenticate any report, so it can only say so on the
//! console; a bad *spec* is reported to the host as a `fail` with the reason,
//! because the key is known by then. That is why [`load`] returns the spec as
//! a `Result` of its own inside [`Loaded`].
//!
//! Parsing never panics; every error names the line or the JSON field, the
//! offending value, and what was expected.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use fcexec_guest_protocol::{DEFAULT_PORT, KEY_LEN};

mod spec;
#[cfg(test)]
use spec::base64_decode;
pub use spec::{Ipv4Cidr, JobSpec, NetworkSpec, ProvisionScript, VolumeSpec};

/// The first line of the config text, by which the agent finds the drive.
pub const MAGIC: &[u8] = b"FCXCFG1\n";
/// The size of the sector that holds the config text; the spec follows it.
pub const SECTOR: usize = 512;
/// The largest job spec the agent reads (it is held in memory).
pub const MAX_SPEC: usize = 16 << 20;
/// The longest provision script name.
pub const MAX_SCRIPT_NAME: usize = 128;

/// Why the config drive cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading a drive failed.
    #[error("cannot read the config drive {}: {source}", path.display())]
    Read {
        /// The drive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No drive carries the magic.
    #[error(
        "no config drive: none of the {count} block devices starts with FCXCFG1 \
         (the host attaches it as the last drive in agent mode)"
    )]
    NotFound {
        /// How many drives were looked at.
        count: usize,
    },
    /// This drive does not start with the magic.
    #[error("not a config drive: its first sector does not start with FCXCFG1")]
    NoMagic,
    /// The text is not UTF-8.
    #[error("the config drive's text is not UTF-8")]
    NotText,
    /// No `key=` line.
    #[error("the config drive has no key= line, so no report could be authenticated")]
    MissingKey,
    /// A header line has a bad value.
    #[error("bad config drive line `{line}`: {reason}")]
    BadLine {
        /// The line as written.
        line: String,
        /// What is expected.
        reason: &'static str,
    },
    /// The header has no `spec=` line.
    #[error(
        "the config drive carries no job spec (no spec= line): fcexec-agent needs \
         a host that writes the job (argv, env, volumes) on the drive"
    )]
    NoSpec,
    /// The spec would end past the drive.
    #[error(
        "the job spec is {len} bytes from offset 512, past the end of the \
         {size}-byte config drive"
    )]
    SpecPastEnd {
        /// The `spec=` length.
        len: usize,
        /// The drive's size.
        size: u64,
    },
    /// The spec is longer than the agent reads.
    #[error("the job spec is {len} bytes, more than the {max} the agent reads")]
    SpecTooLong {
        /// The `spec=` length.
        len: usize,
        /// [`MAX_SPEC`].
        max: usize,
    },
    /// The spec is not JSON.
    #[error("the job spec is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A field of the spec has a bad value.
    #[error("bad job spec field `{field}`: {reason}")]
    BadField {
        /// The field's path, for example `volumes[1].target`.
        field: String,
        /// What is wrong, with the value.
        reason: String,
    },
}

/// The config text of the first sector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The execution's key, which every report carries.
    pub key: [u8; KEY_LEN],
    /// The guest protocol version to speak: 1 or 2.
    pub proto: u8,
    /// The host's vsock port (protocol 2).
    pub vsock_port: u32,
    /// Heartbeat interval in milliseconds; 0: none.
    pub heartbeat_ms: u64,
    /// The length of the JSON job spec after the sector, if there is one.
    pub spec_len: Option<usize>,
}

/// A config drive as read: the header, and the spec or why it is unusable.
#[derive(Debug)]
pub struct Loaded {
    /// The header (its errors are [`load`]'s own).
    pub header: Header,
    /// The job spec; its errors are reported to the host as a `fail`.
    pub spec: Result<JobSpec, ConfigError>,
}

/// A whole config: header and spec, both valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The header.
    pub header: Header,
    /// The job spec.
    pub spec: JobSpec,
}

impl AgentConfig {
    /// Parses a config drive image held in memory.
    pub fn parse(image: &[u8]) -> Result<AgentConfig, ConfigError> {
        let loaded = load(&mut std::io::Cursor::new(image))?;
        Ok(AgentConfig {
            header: loaded.header,
            spec: loaded.spec?,
        })
    }
}

/// Reads a config drive: its header, then the spec that follows it.
///
/// `Err` only when the header is unusable ([`ConfigError::NoMagic`] when the
/// drive is not a config drive at all).
pub fn load(drive: &mut (impl Read + Seek)) -> Result<Loaded, ConfigError> {
    let io = |source| ConfigError::Read {
        path: PathBuf::from("<image>"),
        source,
    };
    let mut sector = Vec::with_capacity(SECTOR);
    drive
        .take(SECTOR as u64)
        .read_to_end(&mut sector)
        .map_err(io)?;
    let header = Header::parse(&sector)?;
    let spec = match header.spec_len {
        None => Err(ConfigError::NoSpec),
        Some(len) => read_spec(drive, len).and_then(|json| JobSpec::parse(&json)),
    };
    Ok(Loaded { header, spec })
}

/// Finds the config drive among `drives` (the last one with the magic, as
/// the host attaches it last) and reads it. Returns its index too.
pub fn find(drives: &[PathBuf]) -> Result<(usize, Loaded), ConfigError> {
    for (index, path) in drives.iter().enumerate().rev() {
        let mut file = std::fs::File::open(path).map_err(|source| read_error(path, source))?;
        match load(&mut file) {
            Err(ConfigError::NoMagic) => continue,
            Err(ConfigError::Read { source, .. }) => return Err(read_error(path, source)),
            Err(e) => return Err(e),
            Ok(mut loaded) => {
                if let Err(ConfigError::Read { source, .. }) = loaded.spec {
                    loaded.spec = Err(read_error(path, source));
                }
                return Ok((index, loaded));
            }
        }
    }
    Err(ConfigError::NotFound {
        count: drives.len(),
    })
}

fn read_error(path: &Path, source: std::io::Error) -> ConfigError {
    ConfigError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn read_spec(drive: &mut (impl Read + Seek), len: usize) -> Result<Vec<u8>, ConfigError> {
    let io = |source| ConfigError::Read {
        path: PathBuf::from("<image>"),
        source,
    };
    if len > MAX_SPEC {
        return Err(ConfigError::SpecTooLong { len, max: MAX_SPEC });
    }
    // A block device's metadata says 0 bytes; seeking to its end tells.
    let size = drive.seek(SeekFrom::End(0)).map_err(io)?;
    if (SECTOR + len) as u64 > size {
        return Err(ConfigError::SpecPastEnd { len, size });
    }
    drive.seek(SeekFrom::Start(SECTOR as u64)).map_err(io)?;
    let mut json = vec![0; len];
    drive.read_exact(&mut json).map_err(io)?;
    Ok(json)
}

impl Header {
    /// Parses the first sector (or the start of it).
    pub fn parse(sector: &[u8]) -> Result<Header, ConfigError> {
        let sector = sector.get(..SECTOR).unwrap_or(sector);
        let end = sector.iter().position(|&b| b == 0).unwrap_or(sector.len());
        let text = sector
            .get(..end)
            .and_then(|t| t.strip_prefix(MAGIC))
            .ok_or(ConfigError::NoMagic)?;
        let text = std::str::from_utf8(text).map_err(|_| ConfigError::NotText)?;
        let mut key = None;
        let mut header = Header {
            key: [0; KEY_LEN],
            proto: 1,
            vsock_port: DEFAULT_PORT,
            heartbeat_ms: 0,
            spec_len: None,
        };
        for line in text.lines() {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let bad = |reason| ConfigError::BadLine {
                line: line.to_string(),
                reason,
            };
            match name {
                "key" => key = Some(parse_key(value).ok_or(bad("a key is 32 hex digits"))?),
                "proto" => {
                    header.proto = match value {
                        "1" => 1,
                        "2" => 2,
                        _ => return Err(bad("this agent speaks protocol 1 or 2")),
                    }
                }
                "vsock_port" => {
                    header.vsock_port = value.parse().map_err(|_| bad("a port is a decimal u32"))?
                }
                "heartbeat_ms" => {
                    header.heartbeat_ms = value
                        .parse()
                        .map_err(|_| bad("heartbeat_ms is a decimal number of milliseconds"))?
                }
                "spec" => {
                    header.spec_len = Some(
                        value
                            .parse()
                            .map_err(|_| bad("spec is the spec's length in bytes, in decimal"))?,
                    )
                }
                _ => {}
            }
        }
        header.key = key.ok_or(ConfigError::MissingKey)?;
        Ok(header)
    }
}

fn parse_key(hex: &str) -> Option<[u8; KEY_LEN]> {
    if hex.len() != 2 * KEY_LEN || !hex.is_ascii() {
        return None;
    }
    let mut key = [0; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
