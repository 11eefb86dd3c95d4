//! Typed Firecracker v1.16 API, an async client over its Unix socket, and VMM
//! process control. It knows nothing of jobs.
//!
//! Layout:
//! - [`models`]: serde types of every definition of the API specification,
//!   and [`models::Operation`], every path and method;
//! - [`client`]: the HTTP transport over the Unix socket; [`operations`] adds
//!   one method per operation to [`Client`];
//! - [`process`]: spawning `firecracker` (directly or through the [`jailer`]),
//!   readiness, stop escalation, reaping and socket cleanup; [`attach`]
//!   re-attaches to a VMM after a restart; [`exit`] says how a VMM ended;
//! - [`version`]: `firecracker --version` probing.
//!
//! ```no_run
//! use std::time::Duration;
//! use firecracker_api::{models, SpawnOptions, StopPolicy, Vmm};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut vmm = Vmm::spawn(SpawnOptions {
//!     firecracker: "firecracker".into(),
//!     id: "demo".into(),
//!     api_socket: Some("/run/fcexec/demo.sock".into()),
//!     config_file: None,
//!     metadata: None,
//!     serial_output: "/run/fcexec/demo.serial".into(),
//!     log_path: "/run/fcexec/demo.log".into(),
//!     extra_sockets: vec![],
//!     jailer: None,
//!     netns: None,
//! })
//! .await?;
//! vmm.wait_ready(Duration::from_secs(2)).await?;
//! let api = vmm.client().expect("spawned with an API socket");
//! api.put_guest_boot_source(&models::BootSource {
//!     kernel_image_path: "/path/vmlinux".into(),
//!     boot_args: Some("console=ttyS0".into()),
//!     initrd_path: None,
//! })
//! .await?;
//! api.instance_start().await?;
//! let exit = vmm.wait().await?; // the guest powered off
//! println!("firecracker {exit}");
//! vmm.stop(StopPolicy::default()).await?; // reaps and removes the socket
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod attach;
pub mod client;
pub mod exit;
pub mod jailer;
pub mod models;
pub mod mounts;
pub mod operations;
pub mod process;
pub mod version;
pub mod watch;

pub use client::{ApiError, Client};
pub use exit::VmmExit;
pub use jailer::{Jail, JailerOptions};
pub use process::{AttachOptions, SpawnOptions, StopPolicy, StopStep, Vmm, VmmError};
pub use version::{Version, VersionError};
