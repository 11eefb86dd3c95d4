//! fcexec's Linux guest agent: PID 1 of the initrd that fcexec builds. It
//! reads the job from the config drive, mounts the user's rootfs and
//! volumes, runs the provision scripts and then the job chrooted into the
//! rootfs, streams the job's stdout and stderr to the host over guest
//! protocol 2 on vsock (protocol 1 on the serial console without vsock),
//! reaps every orphan, obeys cancel, reports the exit status, unmounts, and
//! powers the VM off. The protocol is `docs/guest-protocol.md`.
//!
//! Reading a config drive image (the host writes it; see [`config`]):
//!
//! ```
//! use fcexec_guest_agent::config::AgentConfig;
//!
//! let mut image = b"FCXCFG1\nkey=000102030405060708090a0b0c0d0e0f\nproto=2\n\
//!                   vsock_port=1024\nheartbeat_ms=1000\nspec=57\n".to_vec();
//! image.resize(512, 0); // the text sector, NUL-padded
//! image.extend_from_slice(br#"{"command": ["/bin/sh", "-c", "echo hi"], "user": "1000"}"#);
//!
//! let config = AgentConfig::parse(&image)?;
//! assert_eq!(config.header.proto, 2);
//! assert_eq!(config.header.key[15], 0x0f);
//! assert_eq!(config.spec.command, ["/bin/sh", "-c", "echo hi"]);
//! assert_eq!(config.spec.user.as_deref(), Some("1000"));
//!
//! // A bad spec names the field and the value.
//! let err = fcexec_guest_agent::config::JobSpec::parse(br#"{"command": "ls"}"#).unwrap_err();
//! assert_eq!(err.to_string(), r#"bad job spec field `command`: expected an array, got "ls""#);
//! # Ok::<(), fcexec_guest_agent::config::ConfigError>(())
//! ```
//!
//! # Layout
//!
//! [`run`] is the whole agent; everything the guest does is in it, and the
//! only things a test swaps ([`Env`]) are how the drives are found
//! ([`devices`]), how the host is reached ([`transport`]), and what powering
//! off means ([`Power`]):
//!
//! early mounts ([`mounts::early`]) → config drive ([`config`]) → channel
//! ([`session`] for protocol 2, `serial` for protocol 1) → the loop
//! ([`supervise`]: the workload of [`guest`] — mounts, user ([`user`]),
//! scripts, job ([`job`]) — and the children ([`reaper`])) → end reported →
//! finish (unmount) → `done` → power off.
//!
//! Before the config drive's key is known nothing can be reported: such a
//! failure (no config drive, a bad header) is written to the console and
//! the VM powers off. Every later failure (a bad spec, a mount, a missing
//! command, even a panic) is a `fail` with the reason.
//!
//! The library never writes to stdout. Diagnostic lines go to stderr (the
//! console in the guest), prefixed `fcexec-agent:`.
#![deny(missing_docs)]

pub mod channel;
pub mod config;
pub mod devices;
pub mod guest;
pub mod job;
pub mod mounts;
pub mod reaper;
mod serial;
pub mod session;
pub mod supervise;
mod sys;
#[cfg(test)]
#[path = "../tests/support/host.rs"]
mod test_host;
pub mod transport;
pub mod user;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use config::{
    AgentConfig, ConfigError, Header, Ipv4Cidr, JobSpec, NetworkSpec, ProvisionScript, VolumeSpec,
};
pub use devices::{Devices, FixedDevices, SysfsDevices};
pub use session::{End, Session};
pub use supervise::Report;
pub use transport::{Conn, Transport, UnixTransport, VsockTransport};

/// How a panic is reported, at most this long after the fact.
const PANIC_REPORT_LIMIT: Duration = Duration::from_secs(10);

/// What powering the VM off means.
pub trait Power {
    /// Powers off. In the guest this does not return; in tests it does.
    fn power_off(&self);
}

/// The guest's power: sync, then reboot, which makes Firecracker exit
/// (the kernel command line has `reboot=k`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestPower;

impl Power for GuestPower {
    fn power_off(&self) {
        nix::unistd::sync();
        if let Some(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT).err() {
            sys::console(&format!("cannot reboot: {e}"));
        }
    }
}

/// The tests' power: nothing; [`run`] returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPower;

impl Power for NoPower {
    fn power_off(&self) {}
}

/// Everything [`run`] needs from outside: the seams.
pub struct Env {
    /// How the drives are found.
    pub devices: Box<dyn Devices>,
    /// How the host is reached.
    pub transport: Box<dyn Transport>,
    /// How the VM powers off.
    pub power: Box<dyn Power>,
    /// Where the rootfs is mounted (`/rootfs` in the guest).
    pub root_dir: PathBuf,
    /// Mount /proc, /sys, /dev, ... on the initramfs first (the guest).
    pub mount_early: bool,
}

impl Env {
    /// The guest's environment: virtio drives from sysfs, vsock, reboot,
    /// the rootfs at `/rootfs`, early mounts.
    pub fn guest() -> Env {
        Env {
            devices: Box::new(SysfsDevices::default()),
            transport: Box::new(VsockTransport::default()),
            power: Box::new(GuestPower),
            root_dir: PathBuf::from("/rootfs"),
            mount_early: true,
        }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("root_dir", &self.root_dir)
            .field("mount_early", &self.mount_early)
            .finish_non_exhaustive()
    }
}

/// How a run of the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The end went to the host.
    Reported(Report),
    /// Nothing could be reported (no config drive, or no key): the reason
    /// went to the console.
    Unreported(String),
}

/// The agent (see the crate docs): runs the job of the config drive found
/// among `env.devices` and reports it over `env.transport`, then calls
/// `env.power`. Never panics.
pub fn run(env: Env) -> Outcome {
    let started = Instant::now();
    if env.mount_early {
        for warning in mounts::early() {
            sys::console(&warning);
        }
    }
    let drives = match env.devices.drives() {
        Ok(drives) => drives,
        Err(e) => return unreported(&env, format!("cannot list the block devices: {e}")),
    };
    let (config_index, loaded) = match config::find(&drives) {
        Ok(found) => found,
        Err(e) => return unreported(&env, e.to_string()),
    };
    let header = loaded.header;
    let mut channel = if header.proto == 2 {
        let session = Session::new(
            header.key,
            header.vsock_port,
            header.heartbeat_ms,
            session::DEFAULT_RETAIN,
            started,
        );
        channel::Channel::v2(header.key, session)
    } else {
        match env.transport.console() {
            Ok(console) => channel::Channel::v1(header.key, console),
            Err(e) => return unreported(&env, format!("protocol 1 needs a console: {e}")),
        }
    };
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    let spec = loaded.spec.map_err(|e| e.to_string());
    let options = supervise::Options {
        stop_grace: spec.as_ref().ok().and_then(|s| s.cancel_grace_ms).map_or(
            supervise::Options::default().stop_grace,
            Duration::from_millis,
        ),
        ..supervise::Options::default()
    };
    sys::console(&format!(
        "protocol {}, {} drives, the config drive is drive {config_index}",
        channel.version(),
        drives.len()
    ));
    let mut workload =
        guest::GuestWorkload::new(env.root_dir.clone(), drives, config_index, spec, pid1);
    let mut reaper = reaper::Reaper::new(pid1);
    let transport = &*env.transport;
    let served = catch_unwind(AssertUnwindSafe(|| {
        supervise::serve(
            &mut channel,
            transport,
            &mut workload,
            &mut reaper,
            &options,
        )
    }));
    let report = match served {
        Ok(report) => report,
        Err(panic) => {
            let reason = format!("the agent panicked: {}", panic_text(&*panic));
            sys::console(&reason);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                use supervise::Workload;
                workload.finish()
            }));
            let end = End::Fail(reason);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                supervise::report_only(&mut channel, transport, &end, PANIC_REPORT_LIMIT)
            }));
            Report {
                end,
                acknowledged: false,
            }
        }
    };
    sys::console(&format!(
        "reported {:?}{}; powering off",
        report.end,
        if report.acknowledged {
            ""
        } else {
            " (not acknowledged)"
        }
    ));
    drop(channel);
    drop(reaper);
    env.power.power_off();
    Outcome::Reported(report)
}

fn unreported(env: &Env, reason: String) -> Outcome {
    sys::console(&format!("{reason}; nothing can be reported, powering off"));
    env.power.power_off();
    Outcome::Unreported(reason)
}

/// The message of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}
