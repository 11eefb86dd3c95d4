//! The agent-mode config drive and the per-execution secret [`Key`].
//!
//! In agent mode the host attaches one extra read-only drive, always the last
//! one, that tells the guest agent the execution's secret key (and optionally
//! its job). Its first 512-byte sector holds ASCII text ended by a NUL byte or
//! the end of the sector (see `docs/guest-protocol.md`, "Config drive"):
//!
//! ```text
//! FCXCFG1
//! key=<32 lowercase hex digits>
//! job=<job string, optional>
//! ```
//!
//! When the agent reports over vsock (guest protocol 2) three more lines
//! follow the key: `proto=2`, `vsock_port=<port>` and `heartbeat_ms=<ms>`.
//! For fcexec's own guest agent a `spec=<bytes>` line says that many bytes
//! of JSON ([`crate::guest_job::GuestJob`]) start at byte 512; the image
//! then grows by whole pages to hold them.
//!
//! The image is [`CONFIG_DRIVE_SIZE`] bytes (one page, a whole number of
//! 512-byte sectors, which is what Firecracker's block device reads); everything
//! after the text is NUL. The file is created with mode 0600 because it holds
//! the key.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Size in bytes of the config drive image that [`write_config_drive`] writes.
pub const CONFIG_DRIVE_SIZE: u64 = 4096;

/// Size of the sector that holds the config text; the text must fit in it.
pub const CONFIG_SECTOR_SIZE: usize = 512;

/// Firecracker drive ID suggested for the config drive (IDs take `[A-Za-z0-9_]`).
pub const CONFIG_DRIVE_ID: &str = "fcx_config";

/// The first line of the config text, by which the agent finds the drive.
pub const CONFIG_MAGIC: &str = "FCXCFG1\n";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// The operating system's random source failed.
    #[error("cannot generate the execution key: the OS random source failed: {0}")]
    Random(getrandom::Error),
    /// A key string is not 32 lowercase hex digits.
    #[error("invalid key {0:?}: a key is 32 lowercase hex digits")]
    BadKey(String),
    /// The job string contains a byte that would break the line format.
    #[error("config drive job {job:?} contains a newline or NUL byte; give a job on one line")]
    BadJob {
        /// The offending job string.
        job: String,
    },
    /// The config text is longer than the sector.
    #[error(
        "config drive text is {len} bytes, more than the {max}-byte sector; shorten the job \
         (it may be at most {room} bytes)"
    )]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The sector size.
        max: usize,
        /// How many bytes the job may have.
        room: usize,
    },
    /// Writing the image failed.
    #[error("cannot write the config drive {path}: {source}")]
    Write {
        /// The image path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A per-execution 128-bit secret; frames are accepted only with this key.
///
/// `Display` writes the 32 lowercase hex digits used on the wire; `Debug` does
/// not show the key, so it does not leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 16]);

impl Key {
    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Result<Key, ConfigDriveError> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(ConfigDriveError::Random)?;
        Ok(Key(bytes))
    }

    /// The key with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The key as the 32 lowercase hex digits written on the wire.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

impl FromStr for Key {
    type Err = ConfigDriveError;

    /// Parses 32 lowercase hex digits (the wire form; upper case is refused).
    fn from_str(s: &str) -> Result<Key, ConfigDriveError> {
        let bad = || ConfigDriveError::BadKey(s.to_string());
        let digits = s.as_bytes();
        if digits.len() != 32 {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            bytes[i] = hi << 4 | lo;
        }
        Ok(Key(bytes))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Guest protocol 2 settings, for an agent that reports over vsock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VsockSettings {
    /// The vsock port the agent connects to on the host (CID 2).
    pub port: u32,
    /// How often the agent sends a heartbeat, ms; 0 for never.
    pub heartbeat_ms: u32,
}

/// The most bytes the protocol 2 lines take: `proto=2\n`, then the port
/// and the heartbeat at their longest, then `spec=<bytes>\n` (at most
/// [`MAX_SPEC_LEN`], 8 digits).
const VSOCK_LINES_MAX: usize = 8 + 22 + 24 + 14;

/// The longest agent job (JSON) the config drive carries.
pub const MAX_SPEC_LEN: usize = 16 << 20;

/// Renders the config sector: the text, then NUL bytes up to 512 bytes.
pub fn render_config_sector(
    key: &Key,
    job: Option<&str>,
    vsock: Option<VsockSettings>,
    spec_len: Option<usize>,
) -> Result<[u8; CONFIG_SECTOR_SIZE], ConfigDriveError> {
    let mut text = format!("{CONFIG_MAGIC}key={key}\n");
    if let Some(v) = vsock {
        text.push_str(&format!(
            "proto=2\nvsock_port={}\nheartbeat_ms={}\n",
            v.port, v.heartbeat_ms
        ));
    }
    if let Some(len) = spec_len {
        text.push_str(&format!("spec={len}\n"));
    }
    if let Some(job) = job {
        if job.bytes().any(|b| b == b'\n' || b == 0) {
            return Err(ConfigDriveError::BadJob {
                job: job.to_string(),
            });
        }
        text.push_str("job=");
        text.push_str(job);
        text.push('\n');
    }
    if text.len() > CONFIG_SECTOR_SIZE {
        return Err(ConfigDriveError::TooLong {
            len: text.len(),
            max: CONFIG_SECTOR_SIZE,
            room: max_job_len(),
        });
    }
    let mut sector = [0u8; CONFIG_SECTOR_SIZE];
    sector[..text.len()].copy_from_slice(text.as_bytes());
    Ok(sector)
}

/// The longest job string (in bytes) that always fits on the config drive.
pub const fn max_job_len() -> usize {
    // magic + "key=" + 32 hex + "\n" + protocol 2 lines + "job=" + job + "\n"
    CONFIG_SECTOR_SIZE - CONFIG_MAGIC.len() - 4 - 32 - 1 - VSOCK_LINES_MAX - 4 - 1
}

/// Writes the config drive image at `path` (created or truncated, mode
/// 0600), with the agent job `spec` (JSON) after the first sector.
pub fn write_config_drive(
    path: &Path,
    key: &Key,
    job: Option<&str>,
    vsock: Option<VsockSettings>,
    spec: Option<&[u8]>,
) -> Result<(), ConfigDriveError> {
    if let Some(spec) = spec.filter(|s| s.len() > MAX_SPEC_LEN) {
        return Err(ConfigDriveError::TooLong {
            len: spec.len(),
            max: MAX_SPEC_LEN,
            room: MAX_SPEC_LEN,
        });
    }
    let sector = render_config_sector(key, job, vsock, spec.map(<[u8]>::len))?;
    let size = match spec {
        Some(spec) => (CONFIG_SECTOR_SIZE + spec.len()).div_ceil(4096) as u64 * 4096,
        None => CONFIG_DRIVE_SIZE,
    };
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        // `mode` applies only when the file is new; an old file gets it here.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&sector)?;
        if let Some(spec) = spec {
            file.write_all(spec)?;
        }
        // No fsync: the VMM reads the image through the same page cache.
        file.set_len(size)
    };
    write().map_err(|source| ConfigDriveError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key::from_bytes([
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ]);

    #[test]
    fn key_displays_as_lowercase_hex_and_parses_back() {
        assert_eq!(KEY.to_string(), "0123456789abcdef0123456789abcdef");
        assert_eq!(KEY.to_hex().parse::<Key>().unwrap(), KEY);
        assert!("0123456789ABCDEF0123456789abcdef".parse::<Key>().is_err());
        assert!("0123".parse::<Key>().is_err());
        assert!("0123456789abcdef0123456789abcdeg".parse::<Key>().is_err());
    }

    #[test]
    fn generated_keys_differ_and_debug_hides_them() {
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 32);
        assert!(!format!("{a:?}").contains(&a.to_string()));
    }

    #[test]
    fn sector_holds_the_documented_text_then_nuls() {
        let sector = render_config_sector(&KEY, Some("out:hi,exit:3"), None, None).unwrap();
        let text = "FCXCFG1\nkey=0123456789abcdef0123456789abcdef\njob=out:hi,exit:3\n";
        assert_eq!(&sector[..text.len()], text.as_bytes());
        assert!(sector[text.len()..].iter().all(|&b| b == 0));
        let no_job = render_config_sector(&KEY, None, None, None).unwrap();
        assert!(no_job.starts_with(b"FCXCFG1\nkey=0123456789abcdef0123456789abcdef\n\0"));
        let vsock = VsockSettings {
            port: 1024,
            heartbeat_ms: 250,
        };
        let v2 = render_config_sector(&KEY, Some("exit:0"), Some(vsock), None).unwrap();
        let text = "FCXCFG1\nkey=0123456789abcdef0123456789abcdef\nproto=2\nvsock_port=1024\nheartbeat_ms=250\njob=exit:0\n\0";
        assert!(v2.starts_with(text.as_bytes()));
    }

    #[test]
    fn the_longest_job_fits_with_the_longest_protocol_2_lines() {
        let job = "x".repeat(max_job_len());
        let widest = VsockSettings {
            port: u32::MAX,
            heartbeat_ms: u32::MAX,
        };
        let sector =
            render_config_sector(&KEY, Some(&job), Some(widest), Some(MAX_SPEC_LEN)).unwrap();
        assert_eq!(sector[CONFIG_SECTOR_SIZE - 1], b'\n');
        let err = render_config_sector(
            &KEY,
            Some(&format!("{job}x")),
            Some(widest),
            Some(MAX_SPEC_LEN),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigDriveError::TooLong { len: 513, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_agent_spec_follows_the_first_sector_and_the_image_grows_by_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.img");
        let spec = vec![b'x'; 5000];
        write_config_drive(&path, &KEY, None, None, Some(&spec)).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 8192);
        assert!(data.starts_with(b"FCXCFG1\nkey=0123456789abcdef0123456789abcdef\nspec=5000\n\0"));
        assert_eq!(&data[512..5512], &spec[..]);
        assert!(data[5512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn job_with_newline_or_nul_is_refused() {
        for job in ["a\nkey=00", "a\0b"] {
            let err = render_config_sector(&KEY, Some(job), None, None).unwrap_err();
            assert!(matches!(err, ConfigDriveError::BadJob { .. }), "{err}");
        }
    }

    #[test]
    fn writes_a_private_image_of_the_drive_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.img");
        std::fs::write(&path, vec![0xffu8; 10_000]).unwrap();
        write_config_drive(&path, &KEY, Some("exit:0"), None, None).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, CONFIG_DRIVE_SIZE);
        assert!(data.starts_with(CONFIG_MAGIC.as_bytes()));
        assert!(data[100..].iter().all(|&b| b == 0));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = write_config_drive(&dir.path().join("no/such/dir"), &KEY, None, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
