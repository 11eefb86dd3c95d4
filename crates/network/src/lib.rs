//! Per-execution networking for Firecracker VMMs: a network namespace per
//! execution with a TAP device for the VMM and a veth pair to the host,
//! addresses from a pool, NAT to the outside, published ports, isolation
//! between executions, and removal of all of it — on request, after a failed
//! create, and by a sweep at executor start.
//!
//! ```no_run
//! use fcexec_network::{Network, NetworkConfig, NetworkRequest, PortMapping, Protocol};
//!
//! # async fn demo() -> Result<(), fcexec_network::NetworkError> {
//! let network = Network::new(NetworkConfig::default()).await?;
//! network.sweep(&[]).await?; // objects of executions this executor no longer has
//! let request = NetworkRequest {
//!     ports: vec![PortMapping { host: 8080, guest: 80, protocol: Protocol::Tcp }],
//!     ..Default::default()
//! };
//! let net = network.create("exec-1", &request).await?;
//! // Run the VMM in `net.netns` with a network interface on `net.tap`
//! // (guest MAC `net.guest_mac`), and add this to the kernel command line:
//! let ip_arg = net.kernel_ip_arg(); // "ip=10.213.0.6::10.213.0.5:255.255.255.252::eth0:off:10.213.0.5"
//! # let _ = ip_arg;
//! network.remove(&net).await?;
//! # Ok(()) }
//! ```
//!
//! netlink-packet-route logs a warning (through `log`) on every link
//! listing of a kernel newer than it knows; a subscriber should filter it,
//! as fcexec's CLI does: `netlink_packet_route=error`.
//!
//! # Layout
//!
//! - [`types`]: configuration, requests, the record of one execution's network.
//! - [`names`]: execution ids, and the names of every object made for one.
//! - [`pool`]: the pool cut into /29 blocks; who holds which block and port.
//! - [`netns`]: named namespaces, and running code (or netlink) inside one.
//! - `tap`: persistent TAP devices (TUN ioctls).
//! - [`links`]: veth, addresses and routes through rtnetlink.
//! - [`firewall`]: nftables rules as nft JSON through the `nftables` crate.
//! - `manager`: [`Network`]: create, remove, adopt.
//! - `sweep`: [`Network::sweep`].
//! - `check`: [`check()`] for `fcexec doctor`.
//!
//! # Topology
//!
//! ```text
//!  host                         namespace fcx-<id>                guest (VM)
//!  fcx<hex> B+1/30 ── veth ──  veth0 B+2/30
//!  route B+4/30 via B+2         tap0  B+5/30 (gateway) ── TAP ──  eth0 B+6/30
//!                               default via B+1                   default via B+5
//! ```
//!
//! Firewall: see [`firewall`]. Executions reach neither each other nor the
//! host's addresses (only published ports, through DNAT, and their gateway);
//! with egress on they reach the outside through masquerading, limited to
//! `egress_allow` when it is set.

#![warn(missing_docs)]

mod check;
mod error;
pub mod firewall;
pub mod links;
mod manager;
pub mod names;
pub mod netns;
pub mod pool;
mod sweep;
pub mod tap;
pub mod types;

pub use check::{check, CheckResult};
pub use error::NetworkError;
pub use manager::Network;
pub use sweep::{SweepReport, SWEEP_GRACE};
pub use types::{ExecutionNetwork, NetworkConfig, NetworkRequest, PortMapping, Protocol};
