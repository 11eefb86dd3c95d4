//! Logger, metrics, entropy and serial devices, errors and the full VM
//! configuration.

use serde::{Deserialize, Serialize};

use super::{
    Balloon, BootSource, CpuConfig, Drive, MachineConfiguration, MemoryHotplugConfig, MmdsConfig,
    NetworkInterface, Pmem, RateLimiter, TokenBucket, Vsock,
};

string_enum! {
    /// Log level (Firecracker matches it case-insensitively; default `Info`).
    #[derive(Default)]
    LoggerLevel {
        /// Errors only.
        Error = "Error",
        /// Warnings and above.
        Warning = "Warning",
        /// Informational messages and above.
        #[default]
        Info = "Info",
        /// Debug messages and above.
        Debug = "Debug",
        /// Everything.
        Trace = "Trace",
        /// Nothing.
        Off = "Off",
    }
}

/// Configuration of the logger (`PUT /logger`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logger {
    /// Log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LoggerLevel>,
    /// Named pipe or file receiving the human readable log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Whether to print the level (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Whether to print the file and line of the log's origin (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Module path to filter messages by, e.g. `api_server::request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Configuration of the metrics system (`PUT /metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Named pipe or file receiving the JSON metrics.
    pub metrics_path: String,
}

/// An entropy (virtio-rng) device (`PUT /entropy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntropyDevice {
    /// Rate limiter of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// The serial console (`PUT /serial`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SerialDevice {
    /// Host file or named pipe receiving the serial output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    /// Bandwidth limit of the output; excess bytes are dropped (and counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<TokenBucket>,
}

/// An error answer of the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Error {
    /// Description of the error condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_message: Option<String>,
}

/// Configuration of all VM resources (`GET /vm/config`). After a snapshot
/// restore, `boot-source`, `machine-config.smt` and
/// `machine-config.cpu_template` are empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    /// Balloon device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    /// All block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drives: Option<Vec<Drive>>,
    /// Boot source.
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    /// Custom CPU configuration.
    #[serde(
        rename = "cpu-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_config: Option<CpuConfig>,
    /// Logger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// Machine configuration.
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfiguration>,
    /// Metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Hotpluggable memory.
    #[serde(
        rename = "memory-hotplug",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_hotplug: Option<MemoryHotplugConfig>,
    /// MMDS configuration.
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<MmdsConfig>,
    /// All network devices.
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_interfaces: Option<Vec<NetworkInterface>>,
    /// All pmem devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmem: Option<Vec<Pmem>>,
    /// Vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    /// Entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDevice>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn logger_shape() {
        let l = Logger {
            level: Some(LoggerLevel::Debug),
            log_path: Some("/run/fc.log".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"level": "Debug", "log_path": "/run/fc.log"})
        );
    }

    #[test]
    fn error_answer() {
        let e: Error = serde_json::from_str(r#"{"fault_message":"boom"}"#).unwrap();
        assert_eq!(e.fault_message.as_deref(), Some("boom"));
        assert_eq!(
            serde_json::from_str::<Error>("{}").unwrap(),
            Error::default()
        );
    }

    #[test]
    fn full_config_uses_dashed_keys() {
        let v = json!({
            "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
            "drives": [], "network-interfaces": [], "balloon": null
        });
        let c: FullVmConfiguration = serde_json::from_value(v).unwrap();
        assert_eq!(c.boot_source.unwrap().kernel_image_path, "/k");
        assert_eq!(c.machine_config.unwrap().vcpu_count, 1);
        assert_eq!(c.drives, Some(vec![]));
        assert_eq!(c.balloon, None);
    }
}
