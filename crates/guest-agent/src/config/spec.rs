//! The job spec: the JSON after the config drive's first sector.
//!
//! It is read through `serde_json::Value` field by field rather than
//! derived, so that every error names the field's path (`volumes[1].target`)
//! and the offending value. Unknown fields are ignored, so later hosts can
//! add some; every field but `command` is optional, and `null` counts as
//! absent.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use super::{ConfigError, MAX_SCRIPT_NAME};

/// A volume to mount inside the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The drive's index among the VM's block devices (0 is the rootfs).
    pub drive: usize,
    /// The absolute mount point inside the rootfs.
    pub target: String,
    /// Mount read-only (input volumes).
    pub read_only: bool,
}

/// A provision script, run as root with `/bin/sh` before the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionScript {
    /// Its name: a file name of letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// The script's bytes (decoded from `script_b64`).
    pub script: Vec<u8>,
}

/// An IPv4 address with its prefix length, written `10.213.0.6/30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

/// The guest's network, as the host set it up.
///
/// The kernel's `ip=` argument configures `eth0` (address, gateway) before
/// the agent starts; the agent itself only uses `dns`, which it gives the
/// job as its `/etc/resolv.conf` (see `guest.rs`). Each part may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSpec {
    /// The guest's address on `eth0`, with its prefix (`address`).
    pub address: Option<Ipv4Cidr>,
    /// The default gateway (`gateway`).
    pub gateway: Option<Ipv4Addr>,
    /// The DNS server the job should use (`dns`).
    pub dns: Option<Ipv4Addr>,
}

/// The job: what to run, how, and with which volumes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSpec {
    /// The argv; `command[0]` is looked up in `PATH` inside the rootfs.
    pub command: Vec<String>,
    /// The environment, in order (the job gets exactly this, plus a default
    /// `PATH` when it has none).
    pub env: Vec<(String, String)>,
    /// The absolute working directory inside the rootfs; `/` when absent.
    pub working_dir: Option<String>,
    /// `uid[:gid]` or `name[:group]`, looked up in the rootfs's
    /// `/etc/passwd` and `/etc/group`; root when absent.
    pub user: Option<String>,
    /// Mount the rootfs read-only.
    pub root_read_only: bool,
    /// Volumes, mounted in this order.
    pub volumes: Vec<VolumeSpec>,
    /// Provision scripts, run in this order.
    pub provision_scripts: Vec<ProvisionScript>,
    /// Grace between SIGTERM and SIGKILL when the agent itself stops the job.
    pub cancel_grace_ms: Option<u64>,
    /// The guest's network, when the VM has one.
    pub network: Option<NetworkSpec>,
}

impl JobSpec {
    /// Parses the JSON job spec. Unknown fields are ignored; every field but
    /// `command` is optional; `null` counts as absent.
    pub fn parse(json: &[u8]) -> Result<JobSpec, ConfigError> {
        let value: Value = serde_json::from_slice(json).map_err(ConfigError::Json)?;
        let Value::Object(top) = value else {
            return Err(bad(
                "",
                format!("the spec is a JSON object, not {}", kind(&value)),
            ));
        };
        let command = match get(&top, "command") {
            None => {
                return Err(bad(
                    "command",
                    "is missing: the job's argv is required".into(),
                ))
            }
            Some(v) => strings(v, "command")?,
        };
        match command.first() {
            None => return Err(bad("command", "is empty: give at least the program".into())),
            Some(program) if program.is_empty() => {
                return Err(bad("command[0]", "the program is an empty string".into()))
            }
            _ => {}
        }
        let mut spec = JobSpec {
            command,
            ..JobSpec::default()
        };
        if let Some(env) = get(&top, "env") {
            spec.env = parse_env(env)?;
        }
        if let Some(dir) = get(&top, "working_dir") {
            spec.working_dir = Some(absolute(dir, "working_dir")?);
        }
        if let Some(user) = get(&top, "user") {
            let user = string(user, "user")?;
            if user.is_empty() {
                return Err(bad(
                    "user",
                    "is empty: give uid[:gid] or name[:group]".into(),
                ));
            }
            spec.user = Some(user);
        }
        if let Some(ro) = get(&top, "root_read_only") {
            spec.root_read_only = boolean(ro, "root_read_only")?;
        }
        if let Some(volumes) = get(&top, "volumes") {
            spec.volumes = parse_volumes(volumes)?;
        }
        if let Some(scripts) = get(&top, "provision_scripts") {
            spec.provision_scripts = parse_scripts(scripts)?;
        }
        if let Some(grace) = get(&top, "cancel_grace_ms") {
            spec.cancel_grace_ms = Some(number(grace, "cancel_grace_ms")?);
        }
        if let Some(network) = get(&top, "network") {
            spec.network = Some(parse_network(network)?);
        }
        Ok(spec)
    }
}

fn bad(field: &str, reason: String) -> ConfigError {
    ConfigError::BadField {
        field: field.to_string(),
        reason,
    }
}

fn get<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shows a value in an error, shortened.
fn show(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn string(value: &Value, field: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) if s.contains('\0') => {
            Err(bad(field, format!("{} contains a NUL byte", show(value))))
        }
        Value::String(s) => Ok(s.clone()),
        _ => Err(bad(
            field,
            format!("expected a string, got {}", show(value)),
        )),
    }
}

fn boolean(value: &Value, field: &str) -> Result<bool, ConfigError> {
    value.as_bool().ok_or_else(|| {
        bad(
            field,
            format!("expected true or false, got {}", show(value)),
        )
    })
}

fn number(value: &Value, field: &str) -> Result<u64, ConfigError> {
    value.as_u64().ok_or_else(|| {
        bad(
            field,
            format!("expected a non-negative integer, got {}", show(value)),
        )
    })
}

fn array<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>, ConfigError> {
    value
        .as_array()
        .ok_or_else(|| bad(field, format!("expected an array, got {}", show(value))))
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| bad(field, format!("expected an object, got {}", show(value))))
}

fn strings(value: &Value, field: &str) -> Result<Vec<String>, ConfigError> {
    array(value, field)?
        .iter()
        .enumerate()
        .map(|(i, v)| string(v, &format!("{field}[{i}]")))
        .collect()
}

/// An absolute path (`..` is fine: inside the chroot it cannot climb out).
fn absolute(value: &Value, field: &str) -> Result<String, ConfigError> {
    let path = string(value, field)?;
    if !path.starts_with('/') {
        return Err(bad(field, format!("{path:?} is not an absolute path")));
    }
    Ok(path)
}

/// A mount point inside the rootfs: a relative one is taken from `/`, as
/// the host does not insist; `..` is resolved inside the rootfs when it is
/// mounted. The rootfs's `/` itself is refused.
fn target(value: &Value, field: &str) -> Result<String, ConfigError> {
    let path = string(value, field)?;
    if path.trim_matches('/').is_empty() {
        return Err(bad(
            field,
            format!("{path:?}: a volume cannot be mounted over the rootfs's /"),
        ));
    }
    Ok(if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    })
}

fn parse_env(value: &Value) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (i, pair) in array(value, "env")?.iter().enumerate() {
        let field = format!("env[{i}]");
        let strings = strings(pair, &field)?;
        let [name, value] = <[String; 2]>::try_from(strings).map_err(|_| {
            bad(
                &field,
                format!("expected a [name, value] pair, got {}", show(pair)),
            )
        })?;
        if name.is_empty() || name.contains('=') {
            return Err(bad(
                &field,
                format!("the name {name:?} is empty or contains `=`"),
            ));
        }
        env.push((name, value));
    }
    Ok(env)
}

fn parse_volumes(value: &Value) -> Result<Vec<VolumeSpec>, ConfigError> {
    let mut volumes: Vec<VolumeSpec> = Vec::new();
    for (i, v) in array(value, "volumes")?.iter().enumerate() {
        let field = format!("volumes[{i}]");
        let map = object(v, &field)?;
        let drive = match get(map, "drive") {
            Some(d) => number(d, &format!("{field}.drive"))?,
            None => return Err(bad(&format!("{field}.drive"), "is missing".into())),
        };
        if drive == 0 {
            return Err(bad(
                &format!("{field}.drive"),
                "drive 0 is the root file system, not a volume".into(),
            ));
        }
        let target = match get(map, "target") {
            Some(t) => target(t, &format!("{field}.target"))?,
            None => return Err(bad(&format!("{field}.target"), "is missing".into())),
        };
        let read_only = match get(map, "read_only") {
            Some(r) => boolean(r, &format!("{field}.read_only"))?,
            None => false,
        };
        let drive = usize::try_from(drive).unwrap_or(usize::MAX);
        if let Some(other) = volumes.iter().position(|o| o.drive == drive) {
            return Err(bad(
                &format!("{field}.drive"),
                format!("drive {drive} is already volumes[{other}]"),
            ));
        }
        volumes.push(VolumeSpec {
            drive,
            target,
            read_only,
        });
    }
    Ok(volumes)
}

/// An IPv4 address in dotted-quad form.
fn ipv4(value: &Value, field: &str) -> Result<Ipv4Addr, ConfigError> {
    let text = string(value, field)?;
    text.parse().map_err(|_| {
        bad(
            field,
            format!("{} is not an IPv4 address like 10.0.0.1", show(value)),
        )
    })
}

/// An IPv4 address with a prefix length: `a.b.c.d/n`, `n` 0 to 32.
fn ipv4_cidr(value: &Value, field: &str) -> Result<Ipv4Cidr, ConfigError> {
    let text = string(value, field)?;
    let parsed = text.split_once('/').and_then(|(addr, prefix)| {
        let addr = addr.parse().ok()?;
        let digits = (1..=2).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_digit());
        let prefix: u8 = prefix.parse().ok().filter(|&p| digits && p <= 32)?;
        Some(Ipv4Cidr { addr, prefix })
    });
    parsed.ok_or_else(|| {
        bad(
            field,
            format!(
                "{} is not an IPv4 address with a prefix length like 10.0.0.2/30",
                show(value)
            ),
        )
    })
}

fn parse_network(value: &Value) -> Result<NetworkSpec, ConfigError> {
    let map = object(value, "network")?;
    let mut network = NetworkSpec::default();
    if let Some(address) = get(map, "address") {
        network.address = Some(ipv4_cidr(address, "network.address")?);
    }
    if let Some(gateway) = get(map, "gateway") {
        network.gateway = Some(ipv4(gateway, "network.gateway")?);
    }
    if let Some(dns) = get(map, "dns") {
        network.dns = Some(ipv4(dns, "network.dns")?);
    }
    Ok(network)
}

fn parse_scripts(value: &Value) -> Result<Vec<ProvisionScript>, ConfigError> {
    let mut scripts: Vec<ProvisionScript> = Vec::new();
    for (i, v) in array(value, "provision_scripts")?.iter().enumerate() {
        let field = format!("provision_scripts[{i}]");
        let map = object(v, &field)?;
        let name = match get(map, "name") {
            Some(n) => string(n, &format!("{field}.name"))?,
            None => return Err(bad(&format!("{field}.name"), "is missing".into())),
        };
        let good = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty()
            || name.len() > MAX_SCRIPT_NAME
            || name.starts_with('.')
            || !name.chars().all(good)
        {
            return Err(bad(
                &format!("{field}.name"),
                format!(
                    "{name:?} is not a script name: use 1 to {MAX_SCRIPT_NAME} letters, digits, \
                     `.`, `_` or `-`, not starting with `.`"
                ),
            ));
        }
        if scripts.iter().any(|s| s.name == name) {
            return Err(bad(
                &format!("{field}.name"),
                format!("two scripts are named {name:?}"),
            ));
        }
        let b64 = match get(map, "script_b64") {
            Some(s) => string(s, &format!("{field}.script_b64"))?,
            None => return Err(bad(&format!("{field}.script_b64"), "is missing".into())),
        };
        let script = base64_decode(&b64).map_err(|reason| {
            bad(
                &format!("{field}.script_b64"),
                format!("not standard base64: {reason}"),
            )
        })?;
        scripts.push(ProvisionScript { name, script });
    }
    Ok(scripts)
}

/// Decodes standard base64 (RFC 4648, `+/`), with or without `=` padding.
pub(crate) fn base64_decode(text: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = text.as_bytes();
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 || (pad > 0 && bytes.len() % 4 != 0) {
        return Err("bad `=` padding");
    }
    let body = bytes.get(..bytes.len() - pad).unwrap_or_default();
    if body.len() % 4 == 1 {
        return Err("its length is not a whole number of bytes");
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("a character outside A-Z a-z 0-9 + /"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
