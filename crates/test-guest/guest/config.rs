//! The config drive: in agent mode the host attaches a read-only drive whose
//! first sector holds `FCXCFG1\n` and `name=value` lines (`key=`, `job=`, and
//! for protocol 2 `proto=`, `vsock_port=`, `heartbeat_ms=`), ended by a NUL
//! byte or the end of the sector (`docs/guest-protocol.md`). Unknown lines
//! are ignored.

use crate::{virtio, Global};

const MAGIC: &[u8] = b"FCXCFG1\n";

/// What the config drive says.
pub struct Config {
    /// The `key=` value, unchecked.
    pub key: Option<&'static [u8]>,
    /// The `job=` value.
    pub job: Option<&'static [u8]>,
    /// The `proto=` value, unchecked.
    pub proto: Option<&'static [u8]>,
    /// The `vsock_port=` value, unchecked.
    pub vsock_port: Option<&'static [u8]>,
    /// The `heartbeat_ms=` value, unchecked.
    pub heartbeat_ms: Option<&'static [u8]>,
}

/// The config drive's first sector (kept: the job and key point into it).
static SECTOR: Global<[u8; virtio::SECTOR]> = Global::new([0; virtio::SECTOR]);

/// Looks for the config drive, last drive first (the host attaches it last).
pub fn find() -> Option<Config> {
    // SAFETY: only this function uses the buffer, once; afterwards it is
    // only read, through the returned `Config`.
    let sector = unsafe { &mut *SECTOR.get() };
    for drive in (0..virtio::count()).rev() {
        if virtio::read(drive, 0, sector).is_ok() && sector.starts_with(MAGIC) {
            let sector: &'static [u8] = sector;
            return Some(parse(&sector[MAGIC.len()..]));
        }
    }
    None
}

fn parse(text: &'static [u8]) -> Config {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let mut config = Config {
        key: None,
        job: None,
        proto: None,
        vsock_port: None,
        heartbeat_ms: None,
    };
    for line in text[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (&line[..eq], &line[eq + 1..]);
        let field = match name {
            b"key" => &mut config.key,
            b"job" => &mut config.job,
            b"proto" => &mut config.proto,
            b"vsock_port" => &mut config.vsock_port,
            b"heartbeat_ms" => &mut config.heartbeat_ms,
            _ => continue,
        };
        *field = Some(value);
    }
    config
}
