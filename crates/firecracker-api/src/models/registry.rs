//! Maps spec definition names to the Rust models, for the contract test.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::*;

fn roundtrip<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    serde_json::from_value::<T>(value).and_then(|model| serde_json::to_value(&model))
}

macro_rules! registry {
    (
        definitions: [$($def:ident),+ $(,)?],
        enums: [$($key:literal => $enum:ty),+ $(,)?] $(,)?
    ) => {
        /// Names of the spec definitions that have a model.
        pub const DEFINITIONS: &[&str] = &[$(stringify!($def)),+];

        /// Deserializes `value` as the model of `definition` and serializes it
        /// back; `None` if no model has that name.
        pub fn roundtrip_json(
            definition: &str,
            value: Value,
        ) -> Option<Result<Value, serde_json::Error>> {
            $(if definition == stringify!($def) {
                return Some(roundtrip::<$def>(value));
            })+
            None
        }

        /// Keys of the string enums: `"Definition"` for an enum definition,
        /// `"Definition.property"` for an enum declared on a property.
        pub const ENUMS: &[&str] = &[$($key),+];

        /// The JSON values of every variant of the enum `key` (see [`ENUMS`]).
        pub fn enum_values(key: &str) -> Option<Result<Vec<Value>, serde_json::Error>> {
            $(if key == $key {
                return Some(<$enum>::ALL.iter().map(serde_json::to_value).collect());
            })+
            None
        }
    };
}

registry! {
    definitions: [
        Balloon, BalloonUpdate, BalloonStats, BalloonStartCmd, BalloonHintingStatus,
        BalloonStatsUpdate, BootSource, CpuTemplate, CpuConfig, CpuidLeafModifier,
        CpuidRegisterModifier, MsrModifier, ArmRegisterModifier, VcpuFeatures, Drive, Pmem,
        Error, FullVmConfiguration, InstanceActionInfo, InstanceInfo, Logger,
        MachineConfiguration, MemoryBackend, Metrics, MmdsConfig, MmdsContentsObject,
        NetworkInterface, PartialDrive, PartialNetworkInterface, PartialPmem, RateLimiter,
        SnapshotCreateParams, NetworkOverride, VsockOverride, SnapshotLoadParams, TokenBucket,
        Vm, EntropyDevice, SerialDevice, MemoryHotplugConfig, MemoryHotplugSizeUpdate,
        MemoryHotplugStatus, FirecrackerVersion, Vsock,
    ],
    enums: [
        "CpuTemplate" => CpuTemplate,
        "CpuidRegisterModifier.register" => CpuidRegisterModifierRegister,
        "Drive.cache_type" => DriveCacheType,
        "Drive.io_engine" => DriveIoEngine,
        "InstanceActionInfo.action_type" => InstanceActionType,
        "InstanceInfo.state" => InstanceInfoState,
        "Logger.level" => LoggerLevel,
        "MachineConfiguration.huge_pages" => MachineConfigurationHugePages,
        "MemoryBackend.backend_type" => MemoryBackendBackendType,
        "MmdsConfig.version" => MmdsConfigVersion,
        "SnapshotCreateParams.snapshot_type" => SnapshotCreateParamsSnapshotType,
        "Vm.state" => VmState,
    ],
}
