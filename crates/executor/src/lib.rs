//! fcexec runs jobs inside Firecracker microVMs and reports their results.
//!
//! ```no_run
//! use fcexec::{Executor, ExecutorConfig, ExecutionRequest};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::new("node-1", ExecutorConfig::default()).await?;
//! let request: ExecutionRequest = serde_json::from_str(r#"{
//!     "job_id": "job-1",
//!     "execution_id": "exec-1",
//!     "engine_spec": {"type": "firecracker", "params": {
//!         "kernel_image": "/var/lib/images/vmlinux",
//!         "root_file_system": "/var/lib/images/rootfs.ext4",
//!         "kernel_args": "console=ttyS0 reboot=k panic=1"}},
//!     "resources": {"cpu": {"cores": 1.5}, "ram": {"size": 268435456}}
//! }"#)?;
//! let result = executor.run(&request).await?;
//! println!("exit code {}: {}", result.exit_code, result.stdout);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Data flows one way, each arrow a function that can be tested alone:
//!
//! request ([`request`], [`spec`]) → validate ([`mod@validate`], [`resources`]) →
//! plan ([`plan`]) → launch ([`launch`]) → supervise (`supervisor`: serial
//! capture in `capture`, the guest protocol in [`guest_protocol`], process
//! exit) → result ([`outcome`], [`result`]) → cleanup.
//!
//! Ownership: the [`registry`] owns the map of executions and the budget;
//! the [`Executor`] alone spawns tasks, into a tracked set, one per
//! execution (`execution_task`: launch, then supervision), so one execution's
//! life, the [`lifecycle::Phase`] state machine, has one writer. Launch and
//! recovery return values. Everything lives in the [`state_dir`]; [`record`]
//! persists what recovery needs after a restart; [`jail`] runs each VMM
//! under the jailer (its own uid, chroot, PID namespace and cgroup); [`logs`] streams stored
//! output; [`ExecutorConfig`] sets the limits (output cap, timeout, memory
//! budget).
#![warn(missing_docs)]

mod agent_link;
mod capture;
pub mod config;
pub mod config_drive;
pub mod disk_limits;
pub mod error;
mod execution;
mod execution_task;
pub mod executor;
pub mod guest_job;
pub mod guest_protocol;
mod image_root;
pub mod initrd;
pub mod inspect;
pub mod jail;
pub mod launch;
pub mod lifecycle;
pub mod logs;
mod machine;
pub mod network;
pub mod outcome;
pub mod plan;
pub mod record;
mod recovery;
pub mod registry;
pub mod request;
pub mod resources;
pub mod result;
mod results;
pub mod spec;
pub mod state_dir;
mod supervisor;
mod tasks;
pub mod validate;
mod version_cache;

pub use config::ExecutorConfig;
pub use config_drive::Key;
pub use error::{CleanupError, ExecutorError, LaunchError};
pub use executor::Executor;
pub use firecracker_api::StopPolicy;
pub use guest_protocol::{Event, FrameDecoder};
pub use jail::{Isolation, JailSettings};
pub use launch::{LaunchHook, LaunchStep};
pub use lifecycle::Phase;
pub use logs::{LogChunk, LogOptions, LogStream, Logs};
pub use request::{ExecutionRequest, Resources, StorageVolume};
pub use resources::{HostLimits, MachineSize};
pub use result::{ExecutionResult, ExecutionStatus, ListItem};
pub use spec::{EngineSpec, Mode, SpecConfig};
pub use state_dir::StateDirError;
pub use validate::{validate, Drive, DriveRole, ValidatedRequest, ValidationError};
