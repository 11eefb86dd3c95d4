//! fcexec: runs jobs inside Firecracker microVMs and reports their results.
#![warn(missing_docs)]

pub mod config_drive;
pub mod guest_protocol;
pub mod request;
pub mod resources;
pub mod result;
pub mod spec;
pub mod validate;

pub use config_drive::Key;
pub use guest_protocol::{Event, FrameDecoder};
pub use request::{ExecutionRequest, Resources, StorageVolume};
pub use resources::{HostLimits, MachineSize};
pub use result::{ExecutionResult, ExecutionStatus, ListItem};
pub use spec::{EngineSpec, Mode, SpecConfig};
pub use validate::{validate, Drive, DriveRole, ValidatedRequest, ValidationError};
