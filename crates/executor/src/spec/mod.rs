//! The engine spec: the node's generic [`SpecConfig`] and its decoding into a
//! typed Firecracker [`EngineSpec`].
//!
//! The node sends `{"type": "firecracker", "params": {...}}` (`types.SpecConfig`
//! of NuNet's device-management-service). Decoding follows the reference's
//! `DecodeSpec`, restated:
//!
//! - `type` matches `"firecracker"` case-insensitively after trimming;
//! - `params` keys are matched like Go's `encoding/json` matches struct fields:
//!   exactly first, then ignoring ASCII case; a `null` value counts as absent,
//!   and so does an empty string (Go's `omitempty`);
//! - the reference's params: `kernel_image`, `initrd_path`, `kernel_args`,
//!   `root_file_system`, `mmds_message`; `kernel_image` and
//!   `root_file_system` are required;
//! - unknown params are tolerated (as Go does), so that a newer node's spec
//!   stays valid here.
//!
//! fcexec's extensions are optional, so every spec the node sends today keeps
//! its meaning:
//!
//! | param | type | meaning |
//! |---|---|---|
//! | `agent` | bool, default false | agent mode: a guest agent reports over the guest protocol; plain mode otherwise |
//! | `boot_timeout_ms` | integer 1..=600000 | agent mode: the longest wait from the VM's start to the agent's `hello` frame |
//! | `agent_job` | string | agent mode: the job handed to the agent on the config drive (`job=` line) |
//! | `agent_transport` | `"vsock"` (default) or `"serial"` | agent mode: the agent reports with guest protocol 2 over vsock, or with protocol 1 over the serial console (for guests without vsock) |
//! | `command` | array of strings | agent mode: the command fcexec's guest agent runs in the root file system (which makes fcexec attach its agent's initrd) |
//! | `env` | object of strings, or array of `"NAME=value"` | with `command`: its environment |
//! | `working_dir` | absolute path | with `command`: its working directory (default `/`) |
//! | `user` | name, `uid` or `uid:gid` | with `command`: who runs it (default root) |
//! | `image` | string | instead of `root_file_system`: an OCI image layout directory or a `docker save` archive, built into an ext4 root file system (cached) of which the execution gets its own copy; in agent mode without `command`, the image's entrypoint and cmd are the command |
//! | `timeout_ms` | integer 1..=2^53 | the longest the whole execution may run; past it the VM is stopped and the execution fails ("timed out after ...") |
//!
//! `mmds_message` is a string holding JSON in the reference; a JSON object
//! given directly is accepted too and kept as its text.
//!
//! Only types are checked here; files, sizes and the rest are checked by
//! [`crate::validate()`].

mod command;

use std::time::Duration;

pub use command::Command;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The engine type this executor runs.
pub const ENGINE_TYPE: &str = "firecracker";

/// The longest `boot_timeout_ms` accepted (ten minutes).
pub const MAX_BOOT_TIMEOUT_MS: u64 = 600_000;

/// The longest `timeout_ms` accepted (2^53, the largest integer every JSON
/// reader keeps exactly: about 285,000 years).
pub const MAX_TIMEOUT_MS: u64 = 1 << 53;

/// A whole number of milliseconds from 1 to `max`, when present.
fn millis_param(
    p: &Map<String, Value>,
    name: &str,
    max: u64,
    fix: &'static str,
) -> Result<Option<Duration>, SpecError> {
    let Some(v) = lookup(p, name) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(ms) if (1..=max).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        Some(_) => Err(SpecError::OutOfRange {
            field: path(name),
            value: v.to_string(),
            fix,
        }),
        None if v.is_number() => Err(SpecError::OutOfRange {
            field: path(name),
            value: v.to_string(),
            fix,
        }),
        None => Err(wrong_type(name, v, "an integer")),
    }
}

/// The node's generic spec (`types.SpecConfig`): a type and free-form params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecConfig {
    /// The engine type, e.g. `"firecracker"`.
    #[serde(rename = "type", alias = "Type", default)]
    pub kind: String,
    /// The engine's parameters (JSON object; Go omits it when empty).
    #[serde(
        alias = "Params",
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "crate::request::null_as_default"
    )]
    pub params: Map<String, Value>,
}

impl SpecConfig {
    /// A spec of this type with no params.
    pub fn new(kind: impl Into<String>) -> SpecConfig {
        SpecConfig {
            kind: kind.into(),
            params: Map::new(),
        }
    }

    /// Sets one param (builder style).
    pub fn with_param(mut self, key: impl Into<String>, value: impl Into<Value>) -> SpecConfig {
        self.params.insert(key.into(), value.into());
        self
    }

    /// True when the type is `kind`, ignoring case and surrounding blanks.
    pub fn is_type(&self, kind: &str) -> bool {
        self.kind.trim().eq_ignore_ascii_case(kind.trim())
    }
}

/// How the job reports back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reference parity: the serial console is stdout, a clean VMM exit is
    /// exit code 0.
    #[default]
    Plain,
    /// A guest agent reports stdout, stderr and the exit code in frames.
    Agent,
}

/// How an agent reports back (agent mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Guest protocol 2 over Firecracker's hybrid vsock; the serial console
    /// is a diagnostic log.
    #[default]
    Vsock,
    /// Guest protocol 1 over the serial console.
    Serial,
}

impl Transport {
    /// The transport of records written before transports existed.
    pub fn serial() -> Transport {
        Transport::Serial
    }

    /// The name used in specs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Vsock => "vsock",
            Transport::Serial => "serial",
        }
    }
}

/// The decoded Firecracker engine spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSpec {
    /// Host path of the uncompressed ELF kernel (`kernel_image`).
    pub kernel_image: String,
    /// Host path of the initrd (`initrd_path`).
    pub initrd_path: Option<String>,
    /// The kernel command line (`kernel_args`); empty means the executor's default.
    pub kernel_args: String,
    /// Host path of the root file system image (`root_file_system`); empty
    /// when `image` is given instead.
    pub root_file_system: String,
    /// A container image to build the root file system from (extension
    /// `image`), instead of `root_file_system`.
    pub image: Option<String>,
    /// JSON text for the VM's metadata service (`mmds_message`).
    pub mmds_message: Option<String>,
    /// Plain or agent mode (extension `agent`).
    pub mode: Mode,
    /// Agent mode: the wait for the agent's hello (extension `boot_timeout_ms`).
    pub boot_timeout: Option<Duration>,
    /// Agent mode: the job for the agent's config drive (extension `agent_job`).
    pub agent_job: Option<String>,
    /// Agent mode: how the agent reports (extension `agent_transport`).
    pub transport: Transport,
    /// Agent mode: the command fcexec's own guest agent runs (extensions
    /// `command`, `env`, `working_dir`, `user`).
    pub command: Option<Command>,
    /// The longest the execution may run (extension `timeout_ms`).
    pub timeout: Option<Duration>,
    /// Whether the VM gets a network (extension `network`); `None`: when
    /// `ports_to_bind` or `gateway_ip` ask for one, or by the executor's
    /// default.
    pub network: Option<bool>,
    /// Whether a networked VM may reach the outside (extension `egress`);
    /// `None`: the executor's setting.
    pub egress: Option<bool>,
}

/// A spec that cannot be decoded; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// `type` is not `firecracker`.
    #[error(
        "engine_spec.type: {0:?} is not \"firecracker\"; this executor runs only firecracker specs"
    )]
    WrongEngine(String),
    /// A required param is absent, null or empty.
    #[error("{field}: missing; {fix}")]
    MissingParam {
        /// JSON path of the param.
        field: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// A param has the wrong JSON type.
    #[error("{field}: {value} is {found}, not {expected}; give {expected}")]
    ParamType {
        /// JSON path of the param.
        field: String,
        /// The value given (shortened).
        value: String,
        /// The JSON type given.
        found: &'static str,
        /// The JSON type wanted.
        expected: &'static str,
    },
    /// Two params that exclude each other are both given.
    #[error("{field}: given with {other}; give one of the two")]
    Conflict {
        /// JSON path of the param.
        field: String,
        /// JSON path of the other param.
        other: String,
    },
    /// A param is out of its range.
    #[error("{field}: {value} is out of range; {fix}")]
    OutOfRange {
        /// JSON path of the param.
        field: String,
        /// The value given.
        value: String,
        /// How to fix it.
        fix: &'static str,
    },
}

impl SpecError {
    /// JSON path of the offending field.
    pub fn field(&self) -> &str {
        match self {
            SpecError::WrongEngine(_) => "engine_spec.type",
            SpecError::MissingParam { field, .. }
            | SpecError::ParamType { field, .. }
            | SpecError::OutOfRange { field, .. }
            | SpecError::Conflict { field, .. } => field,
        }
    }
}

impl EngineSpec {
    /// Decodes a node spec (see the module doc for the rules).
    pub fn decode(spec: &SpecConfig) -> Result<EngineSpec, SpecError> {
        if !spec.is_type(ENGINE_TYPE) {
            return Err(SpecError::WrongEngine(spec.kind.clone()));
        }
        let p = &spec.params;
        let kernel_image = string_param(p, "kernel_image")?.ok_or_else(|| {
            missing(
                "kernel_image",
                "give the host path of an uncompressed ELF kernel (vmlinux)",
            )
        })?;
        let image = string_param(p, "image")?;
        let root_file_system = match (string_param(p, "root_file_system")?, &image) {
            (Some(_), Some(_)) => {
                return Err(SpecError::Conflict {
                    field: path("image"),
                    other: path("root_file_system"),
                })
            }
            (Some(root), None) => root,
            (None, Some(_)) => String::new(),
            (None, None) => {
                return Err(missing(
                    "root_file_system",
                    "give the host path of the root file system image (e.g. rootfs.ext4), \
                     or an image (engine_spec.params.image)",
                ))
            }
        };
        let mmds_message = match lookup(p, "mmds_message") {
            Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.to_string()),
            _ => string_param(p, "mmds_message")?,
        };
        let agent = match lookup(p, "agent") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(wrong_type("agent", v, "a boolean")),
        };
        let network = bool_param(p, "network")?;
        let egress = bool_param(p, "egress")?;
        let transport = match string_param(p, "agent_transport")?.as_deref() {
            None => Transport::default(),
            Some(t) if t.trim().eq_ignore_ascii_case("vsock") => Transport::Vsock,
            Some(t) if t.trim().eq_ignore_ascii_case("serial") => Transport::Serial,
            Some(t) => {
                return Err(wrong_type(
                    "agent_transport",
                    &Value::String(t.to_string()),
                    "\"vsock\" (guest protocol 2) or \"serial\" (guest protocol 1)",
                ))
            }
        };
        let boot_timeout = millis_param(
            p,
            "boot_timeout_ms",
            MAX_BOOT_TIMEOUT_MS,
            "give a whole number of milliseconds from 1 to 600000",
        )?;
        let timeout = millis_param(
            p,
            "timeout_ms",
            MAX_TIMEOUT_MS,
            "give a whole number of milliseconds of at least 1 (e.g. 3600000 for an hour)",
        )?;
        Ok(EngineSpec {
            kernel_image,
            initrd_path: string_param(p, "initrd_path")?,
            kernel_args: string_param(p, "kernel_args")?.unwrap_or_default(),
            root_file_system,
            image,
            mmds_message,
            mode: if agent { Mode::Agent } else { Mode::Plain },
            boot_timeout,
            agent_job: string_param(p, "agent_job")?,
            transport,
            command: command::decode(p)?,
            timeout,
            network,
            egress,
        })
    }

    /// The node spec that decodes to this spec.
    pub fn to_spec_config(&self) -> SpecConfig {
        let mut spec =
            SpecConfig::new(ENGINE_TYPE).with_param("kernel_image", self.kernel_image.clone());
        let optional = [
            (
                "root_file_system",
                Some(self.root_file_system.clone()).filter(|r| !r.is_empty()),
            ),
            ("image", self.image.clone()),
            ("initrd_path", self.initrd_path.clone()),
            (
                "kernel_args",
                Some(self.kernel_args.clone()).filter(|a| !a.is_empty()),
            ),
            ("mmds_message", self.mmds_message.clone()),
            ("agent_job", self.agent_job.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                spec = spec.with_param(key, value);
            }
        }
        if self.mode == Mode::Agent {
            spec = spec.with_param("agent", true);
        }
        for (key, value) in [("network", self.network), ("egress", self.egress)] {
            if let Some(value) = value {
                spec = spec.with_param(key, value);
            }
        }
        if self.transport != Transport::default() {
            spec = spec.with_param("agent_transport", self.transport.as_str());
        }
        if let Some(c) = &self.command {
            spec = spec.with_param("command", c.argv.clone());
            if !c.env.is_empty() {
                let env: Map<String, Value> = c
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                spec = spec.with_param("env", env);
            }
            for (key, value) in [("working_dir", &c.working_dir), ("user", &c.user)] {
                if let Some(value) = value {
                    spec = spec.with_param(key, value.clone());
                }
            }
        }
        if let Some(t) = self.boot_timeout {
            spec = spec.with_param("boot_timeout_ms", t.as_millis() as u64);
        }
        if let Some(t) = self.timeout {
            spec = spec.with_param("timeout_ms", t.as_millis() as u64);
        }
        spec
    }
}

fn path(name: &str) -> String {
    format!("engine_spec.params.{name}")
}

fn missing(name: &str, fix: &'static str) -> SpecError {
    SpecError::MissingParam {
        field: path(name),
        fix,
    }
}

fn wrong_type(name: &str, value: &Value, expected: &'static str) -> SpecError {
    let mut text = value.to_string();
    if text.len() > 64 {
        let mut cut = 61;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    SpecError::ParamType {
        field: path(name),
        value: text,
        found: json_type(value),
        expected,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The param called `name`, matched like Go's encoding/json: exact key
/// first, then ignoring ASCII case. `null` counts as absent.
fn lookup<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params
        .get(name)
        .or_else(|| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

/// An optional boolean param.
fn bool_param(p: &Map<String, Value>, key: &str) -> Result<Option<bool>, SpecError> {
    match lookup(p, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong_type(key, v, "a boolean")),
    }
}

/// A string param; absent, null and "" give `None`.
fn string_param(params: &Map<String, Value>, name: &str) -> Result<Option<String>, SpecError> {
    match lookup(params, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong_type(name, v, "a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> SpecConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn decodes_the_reference_spec() {
        let s = spec(json!({"type": " FireCracker ", "params": {
            "kernel_image": "/img/vmlinux", "initrd_path": "/img/initrd",
            "kernel_args": "console=ttyS0 reboot=k panic=1", "root_file_system": "/img/rootfs.ext4",
            "mmds_message": "{\"latest\":{\"meta-data\":{\"node_id\":\"n1\",\"pkey\":\"k\"}}}"}}));
        let e = EngineSpec::decode(&s).unwrap();
        assert_eq!(e.kernel_image, "/img/vmlinux");
        assert_eq!(e.initrd_path.as_deref(), Some("/img/initrd"));
        assert_eq!(e.kernel_args, "console=ttyS0 reboot=k panic=1");
        assert_eq!(e.root_file_system, "/img/rootfs.ext4");
        assert!(e.mmds_message.unwrap().contains("node_id"));
        assert_eq!(e.mode, Mode::Plain);
        assert_eq!(e.boot_timeout, None);
    }

    #[test]
    fn go_style_keys_nulls_empties_and_unknown_params() {
        let s = spec(json!({"Type": "firecracker", "Params": {
            "Kernel_Image": "/k", "root_file_system": "/r", "initrd_path": "",
            "kernel_args": null, "future_param": [1, 2], "mmds_message": {"a": 1}}}));
        let e = EngineSpec::decode(&s).unwrap();
        assert_eq!(e.kernel_image, "/k");
        assert_eq!(e.initrd_path, None);
        assert_eq!(e.kernel_args, "");
        assert_eq!(e.mmds_message.as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn extensions_decode_and_round_trip() {
        let s = SpecConfig::new("firecracker")
            .with_param("kernel_image", "/k")
            .with_param("root_file_system", "/r")
            .with_param("agent", true)
            .with_param("boot_timeout_ms", 1500)
            .with_param("agent_job", "out:hi,exit:0");
        let e = EngineSpec::decode(&s).unwrap();
        assert_eq!(e.mode, Mode::Agent);
        assert_eq!(e.boot_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(e.agent_job.as_deref(), Some("out:hi,exit:0"));
        assert_eq!(EngineSpec::decode(&e.to_spec_config()).unwrap(), e);
        let s = SpecConfig::new("firecracker")
            .with_param("kernel_image", "/k")
            .with_param("image", "/images/alpine-oci");
        let e = EngineSpec::decode(&s).unwrap();
        assert_eq!(e.image.as_deref(), Some("/images/alpine-oci"));
        assert_eq!(e.root_file_system, "");
        assert_eq!(EngineSpec::decode(&e.to_spec_config()).unwrap(), e);
        assert_eq!(
            serde_json::to_value(SpecConfig::new("x")).unwrap(),
            json!({"type": "x"})
        );
    }

    #[test]
    fn errors_name_the_field() {
        let base = || SpecConfig::new("firecracker").with_param("kernel_image", "/k");
        let cases: Vec<(SpecConfig, &str, &str)> = vec![
            (SpecConfig::new("docker"), "engine_spec.type", "\"docker\""),
            (
                SpecConfig::new(""),
                "engine_spec.type",
                "not \"firecracker\"",
            ),
            (base(), "engine_spec.params.root_file_system", "missing"),
            (
                base()
                    .with_param("root_file_system", "/r")
                    .with_param("image", "/oci"),
                "engine_spec.params.image",
                "given with engine_spec.params.root_file_system; give one of the two",
            ),
            (
                base().with_param("image", 3),
                "engine_spec.params.image",
                "not a string",
            ),
            (
                SpecConfig::new("firecracker").with_param("root_file_system", "/r"),
                "engine_spec.params.kernel_image",
                "uncompressed ELF kernel",
            ),
            (
                base().with_param("root_file_system", 7),
                "engine_spec.params.root_file_system",
                "7 is a number, not a string",
            ),
            (
                base()
                    .with_param("root_file_system", "/r")
                    .with_param("agent", "yes"),
                "engine_spec.params.agent",
                "not a boolean",
            ),
            (
                base()
                    .with_param("root_file_system", "/r")
                    .with_param("boot_timeout_ms", 0),
                "engine_spec.params.boot_timeout_ms",
                "out of range",
            ),
            (
                base()
                    .with_param("root_file_system", "/r")
                    .with_param("boot_timeout_ms", -5),
                "engine_spec.params.boot_timeout_ms",
                "-5 is out of range",
            ),
            (
                base()
                    .with_param("root_file_system", "/r")
                    .with_param("boot_timeout_ms", "9"),
                "engine_spec.params.boot_timeout_ms",
                "not an integer",
            ),
            (
                base()
                    .with_param("root_file_system", "/r")
                    .with_param("mmds_message", true),
                "engine_spec.params.mmds_message",
                "not a string",
            ),
        ];
        for (spec, field, text) in cases {
            let err = EngineSpec::decode(&spec).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            let msg = err.to_string();
            assert!(msg.starts_with(field) && msg.contains(text), "{msg}");
        }
    }
}
