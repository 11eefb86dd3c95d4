//! Typed serde models of Firecracker v1.16.1's HTTP API.
//!
//! Every definition of Firecracker's swagger spec has one Rust type here,
//! named exactly as the definition, with one field per JSON property
//! (required properties are plain fields, optional ones are `Option`s that are
//! left out of the JSON when `None`). String enums declared inline on a
//! property are named `<Definition><Property>` (except
//! [`InstanceActionType`] and [`VmState`]). Every path and method of the API
//! is a variant of [`Operation`].
//!
//! Unknown JSON fields are ignored when deserializing, so a newer Firecracker
//! adding response fields does not break parsing. `tests/contract.rs` checks
//! all of this against the spec.

/// Defines a string enum of the spec: one variant per JSON value, plus
/// `ALL` (every value, in spec order), `as_str` and `Display`.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $value)] $variant, )+
        }

        impl $name {
            /// Every value of this enum, in spec order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The exact JSON string of this value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod balloon;
mod cpu;
mod drives;
mod machine;
mod memory;
mod misc;
mod mmds;
mod network;
mod operations;
mod rate_limiter;
#[doc(hidden)]
pub mod registry;
mod snapshot;

pub use balloon::{
    Balloon, BalloonHintingStatus, BalloonStartCmd, BalloonStats, BalloonStatsUpdate, BalloonUpdate,
};
pub use cpu::{
    ArmRegisterModifier, CpuConfig, CpuTemplate, CpuidLeafModifier, CpuidRegisterModifier,
    CpuidRegisterModifierRegister, MsrModifier, VcpuFeatures,
};
pub use drives::{Drive, DriveCacheType, DriveIoEngine, PartialDrive, PartialPmem, Pmem};
pub use machine::{
    BootSource, FirecrackerVersion, InstanceActionInfo, InstanceActionType, InstanceInfo,
    InstanceInfoState, MachineConfiguration, MachineConfigurationHugePages, Vm, VmState,
};
pub use memory::{MemoryHotplugConfig, MemoryHotplugSizeUpdate, MemoryHotplugStatus};
pub use misc::{
    EntropyDevice, Error, FullVmConfiguration, Logger, LoggerLevel, Metrics, SerialDevice,
};
pub use mmds::{MmdsConfig, MmdsConfigVersion, MmdsContentsObject};
pub use network::{NetworkInterface, PartialNetworkInterface, Vsock};
pub use operations::{validate_id, HttpMethod, Operation, PathError, Phase, MAX_ID_LEN};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use snapshot::{
    MemoryBackend, MemoryBackendBackendType, NetworkOverride, SnapshotCreateParams,
    SnapshotCreateParamsSnapshotType, SnapshotLoadParams, VsockOverride,
};
