//! The execution request as the node sends it, and its resources.
//!
//! These types mirror the wire, not what fcexec can honour: they decode
//! anything the node may send and [`crate::validate()`] then decides. Names
//! follow NuNet's device-management-service (`types/execution.go`,
//! `types/storage.go`, `types/hardware.go`):
//!
//! - The node's `ExecutionRequest` has no JSON tags, so Go writes its field
//!   names as they are (`JobID`, `ExecutionID`, `EngineSpec`, ...). fcexec
//!   writes the snake_case names of the design (`job_id`, `execution_id`,
//!   ...) and reads both.
//! - Go writes a nil slice or map as `null`; every list and map here reads
//!   `null` as empty, and a `null` volume in a list as an empty volume (which
//!   validation then rejects by its index).
//! - `persist_logs_duration` is a Go `time.Duration`: integer nanoseconds.
//! - `provision_scripts` is a Go `map[string][]byte`: each value is standard
//!   base64 with padding.
//! - Resources: `cpu.cores` is fractional, `ram.size` and `disk.size` are
//!   bytes. Fields are optional so that "absent" (take the default) and "0"
//!   (an error) stay apart; unknown fields are ignored everywhere.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::SpecConfig;

/// One execution request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionRequest {
    /// The job this execution belongs to.
    #[serde(alias = "JobID", deserialize_with = "null_as_default")]
    pub job_id: String,
    /// This execution's ID, unique in the executor.
    #[serde(alias = "ExecutionID", deserialize_with = "null_as_default")]
    pub execution_id: String,
    /// The engine spec (`{"type": "firecracker", "params": {...}}`).
    #[serde(alias = "EngineSpec")]
    pub engine_spec: Option<SpecConfig>,
    /// Requested resources; absent means the defaults.
    #[serde(alias = "Resources")]
    pub resources: Option<Resources>,
    /// Input volumes, attached as drives after the root file system.
    #[serde(alias = "Inputs", deserialize_with = "volumes")]
    pub inputs: Vec<StorageVolume>,
    /// Output volumes, attached read-write after the inputs.
    #[serde(alias = "Outputs", deserialize_with = "volumes")]
    pub outputs: Vec<StorageVolume>,
    /// Host directory for the results; required when there are outputs.
    #[serde(alias = "ResultsDir", deserialize_with = "null_as_default")]
    pub results_dir: String,
    /// How long to keep the logs on disk, in nanoseconds (Go `time.Duration`).
    #[serde(alias = "PersistLogsDuration", deserialize_with = "null_as_default")]
    pub persist_logs_duration: i64,
    /// Named scripts to run in the guest at boot (base64 in JSON).
    #[serde(alias = "ProvisionScripts", with = "base64_map")]
    pub provision_scripts: BTreeMap<String, Vec<u8>>,
    /// Ports to publish (networking; not supported yet).
    #[serde(alias = "PortsToBind", deserialize_with = "null_as_default")]
    pub ports_to_bind: Vec<PortBinding>,
    /// Gateway IP for DNS (networking; not supported yet).
    #[serde(alias = "GatewayIP", deserialize_with = "null_as_default")]
    pub gateway_ip: String,
}

/// A storage volume (`types.StorageVolumeExecutor`): a host file attached as a drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageVolume {
    /// The node's volume type (e.g. `"bind"`); not used by Firecracker.
    #[serde(rename = "type", deserialize_with = "null_as_default")]
    pub kind: String,
    /// Host path of the image file or block device.
    #[serde(deserialize_with = "null_as_default")]
    pub source: String,
    /// Where the guest should mount it (handed to the agent, not to Firecracker).
    #[serde(deserialize_with = "null_as_default")]
    pub target: String,
    /// Attach the drive read-only (the node's `readonly`). fcexec attaches
    /// inputs read-only and outputs read-write whatever this says: only
    /// outputs and the root file system may be written by a guest.
    #[serde(
        rename = "readonly",
        alias = "read_only",
        deserialize_with = "null_as_default"
    )]
    pub read_only: bool,
}

/// A port binding (`types.PortsToBind`, untagged in Go).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortBinding {
    /// Host IP to bind.
    #[serde(alias = "IP", deserialize_with = "null_as_default")]
    pub ip: String,
    /// Host port.
    #[serde(alias = "HostPort")]
    pub host_port: i64,
    /// Port inside the execution.
    #[serde(alias = "ExecutorPort")]
    pub executor_port: i64,
    /// `tcp` (the default, also when empty) or `udp`: fcexec's extension.
    #[serde(
        alias = "Protocol",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub protocol: String,
}

/// Requested resources (`types.Resources`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// CPU request.
    pub cpu: Option<Cpu>,
    /// GPUs requested (not supported: Firecracker has no device passthrough).
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gpus: Vec<Gpu>,
    /// Memory request.
    pub ram: Option<Ram>,
    /// Disk request: speeds and IOPS become the drives' rate limiters
    /// ([`crate::disk_limits`]); the size is not enforced.
    pub disk: Option<Disk>,
}

/// CPU request (`types.CPU`); only `cores` is used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// Fractional cores; rounded up to whole vCPUs.
    pub cores: Option<f64>,
    /// Clock speed in Hz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_speed: Option<f64>,
    /// CPU model name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// CPU vendor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Logical threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<i64>,
    /// Architecture, e.g. `x86_64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Cache size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u64>,
}

/// Memory request (`types.RAM`); only `size` is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ram {
    /// Size in bytes (any JSON integer is read, so that a negative or huge
    /// value reaches validation and gets a clear message).
    pub size: Option<i128>,
    /// Clock speed in Hz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_speed: Option<u64>,
    /// RAM type, e.g. `DDR4`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Disk request (`types.Disk`): see [`crate::disk_limits`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// Size in bytes.
    pub size: Option<i128>,
    /// Disk model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Disk vendor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Disk type, e.g. `SSD`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Interface, e.g. `NVMe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Read speed in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_speed: Option<u64>,
    /// Write speed in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_speed: Option<u64>,
    /// Operations per second (fcexec's extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops: Option<u64>,
}

/// A GPU (`types.GPU`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpu {
    /// Index in the system.
    pub index: i64,
    /// Vendor, e.g. `NVIDIA`.
    #[serde(deserialize_with = "null_as_default")]
    pub vendor: String,
    /// PCI address `AAAA:BB:CC.C`.
    #[serde(deserialize_with = "null_as_default")]
    pub pci_address: String,
    /// Model, e.g. `Tesla T4`.
    #[serde(deserialize_with = "null_as_default")]
    pub model: String,
    /// VRAM in bytes.
    pub vram: u64,
    /// Device UUID.
    #[serde(deserialize_with = "null_as_default")]
    pub uuid: String,
}

/// Reads `null` as the type's default (Go writes nil slices and maps as `null`).
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads a volume list: `null` is empty and a `null` entry is an empty volume.
fn volumes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StorageVolume>, D::Error> {
    let list: Option<Vec<Option<StorageVolume>>> = Option::deserialize(d)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// `map[string][]byte` as Go writes it: values in standard padded base64.
mod base64_map {
    use super::*;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw: Option<BTreeMap<String, Option<String>>> = Option::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, text) in raw.unwrap_or_default() {
            let bytes = STANDARD.decode(text.unwrap_or_default()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "provision_scripts[{name:?}]: not standard base64 ({e}); \
                     encode script bytes as Go encodes []byte"
                ))
            })?;
            out.insert(name, bytes);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As Go's `json.Marshal(types.ExecutionRequest{...})` writes it: untagged
    /// top-level names, nil slices as null, Duration in ns, []byte in base64.
    const GO_REQUEST: &str = r#"{
      "JobID": "job-7f3a", "ExecutionID": "exec-0001",
      "EngineSpec": {"type": "firecracker", "params": {
        "kernel_image": "/var/lib/nunet/vmlinux", "kernel_args": "console=ttyS0 reboot=k panic=1",
        "root_file_system": "/var/lib/nunet/rootfs.ext4", "mmds_message": ""}},
      "Resources": {
        "cpu": {"clock_speed": 2400000000, "cores": 1.5, "model": "Xeon", "vendor": "GenuineIntel",
                "threads": 2, "architecture": "x86_64", "cache_size": 33554432},
        "ram": {"size": 536870912, "clock_speed": 3200000000, "type": "DDR4"},
        "disk": {"size": 10737418240, "type": "SSD", "read_speed": 1, "write_speed": 2, "new": 1}},
      "Inputs": [{"type": "bind", "source": "/data/in.ext4", "target": "/in", "readonly": true}],
      "Outputs": null,
      "ResultsDir": "/var/lib/nunet/results/exec-0001",
      "PersistLogsDuration": 3600000000000,
      "ProvisionScripts": {"setup.sh": "IyEvYmluL3NoCmVjaG8gaGkK", "empty": null},
      "PortsToBind": null, "GatewayIP": "", "SomeNewerField": {"x": 1}
    }"#;

    #[test]
    fn decodes_the_go_shape() {
        let r: ExecutionRequest = serde_json::from_str(GO_REQUEST).unwrap();
        assert_eq!(r.job_id, "job-7f3a");
        assert_eq!(r.execution_id, "exec-0001");
        assert!(r.engine_spec.as_ref().unwrap().is_type("firecracker"));
        let res = r.resources.as_ref().unwrap();
        assert_eq!(res.cpu.as_ref().unwrap().cores, Some(1.5));
        assert_eq!(res.ram.as_ref().unwrap().size, Some(536_870_912));
        assert_eq!(res.disk.as_ref().unwrap().size, Some(10_737_418_240));
        assert!(res.gpus.is_empty());
        assert_eq!(
            r.inputs,
            vec![StorageVolume {
                kind: "bind".into(),
                source: "/data/in.ext4".into(),
                target: "/in".into(),
                read_only: true,
            }]
        );
        assert!(r.outputs.is_empty());
        assert_eq!(r.persist_logs_duration, 3_600_000_000_000);
        assert_eq!(r.provision_scripts["setup.sh"], b"#!/bin/sh\necho hi\n");
        assert_eq!(r.provision_scripts["empty"], b"");
        assert!(r.ports_to_bind.is_empty());
    }

    #[test]
    fn snake_case_round_trips_and_equals_the_go_shape() {
        let go: ExecutionRequest = serde_json::from_str(GO_REQUEST).unwrap();
        let text = serde_json::to_string(&go).unwrap();
        assert!(text.contains("\"job_id\":\"job-7f3a\""), "{text}");
        assert!(text.contains("\"readonly\":true"), "{text}");
        assert!(
            text.contains("\"setup.sh\":\"IyEvYmluL3NoCmVjaG8gaGkK\""),
            "{text}"
        );
        let back: ExecutionRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, go);
    }

    #[test]
    fn design_shape_with_gpus_ports_and_nulls() {
        let r: ExecutionRequest = serde_json::from_value(json!({
            "job_id": "j", "execution_id": "e", "engine_spec": null,
            "resources": {"cpu": {"cores": 2}, "ram": {"size": -1}, "gpus": [
                {"index": 0, "vendor": "NVIDIA", "pci_address": "0000:01:00.0",
                 "model": "Tesla T4", "vram": 16_106_127_360_u64, "uuid": "GPU-1"}]},
            "inputs": [null, {"source": "/a", "read_only": true}],
            "ports_to_bind": [{"IP": "0.0.0.0", "HostPort": 8080, "ExecutorPort": 80}],
            "gateway_ip": "10.0.0.1"
        }))
        .unwrap();
        assert!(r.engine_spec.is_none());
        let res = r.resources.unwrap();
        assert_eq!(res.ram.unwrap().size, Some(-1));
        assert_eq!(res.gpus[0].model, "Tesla T4");
        assert_eq!(r.inputs[0], StorageVolume::default());
        assert!(r.inputs[1].read_only);
        assert_eq!(r.ports_to_bind[0].host_port, 8080);
        assert_eq!(r.gateway_ip, "10.0.0.1");
    }

    #[test]
    fn huge_sizes_and_bad_base64_are_reported() {
        let r: ExecutionRequest =
            serde_json::from_str(r#"{"Resources":{"ram":{"size":18446744073709551615}}}"#).unwrap();
        assert_eq!(
            r.resources.unwrap().ram.unwrap().size,
            Some(u64::MAX as i128)
        );
        let err = serde_json::from_str::<ExecutionRequest>(r#"{"provision_scripts":{"a":"%%"}}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("provision_scripts[\"a\"]"),
            "{err}"
        );
    }
}
