//! Throwaway network namespaces for network tests: `fcxtest-<pid>-<n>` with
//! a TAP device `tap0` (the guest's link, its address the guest's gateway)
//! and loopback up, made with the `ip` command and deleted on drop. Code run
//! through [`Netns::run`] runs in a thread inside the namespace, so sockets
//! it creates live there and traffic never leaves it.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use std::sync::atomic::{AtomicUsize, Ordering};
use testkit::network::{ip, spawn_in};

/// The host's side of the TAP: the guest's gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
/// The guest's address.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
/// The netmask of the /30 between them.
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 252);
/// The TAP device's name.
pub const TAP: &str = "tap0";
/// The guest's MAC address.
pub const GUEST_MAC: &str = "06:00:ac:1f:00:02";

extern "C" {
    fn geteuid() -> u32;
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Why the network tests cannot run here, if they cannot.
pub fn unavailable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        return Some("not root (network namespaces and TAP devices need root)");
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(ip, Ok(s) if s.success()) {
        return Some("the `ip` command (iproute2) is missing");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    None
}

/// A network namespace with `tap0` at [`GATEWAY`]/30; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace and its TAP device.
    pub fn create() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            name: format!("fcxtest-{}-{n}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name]);
        let gateway = format!("{GATEWAY}/30");
        for args in [
            &["tuntap", "add", "dev", TAP, "mode", "tap"][..],
            &["addr", "add", &gateway, "dev", TAP],
            &["link", "set", TAP, "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", ns.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        }
        ns
    }

    /// Runs `f` in a new thread inside the namespace and returns its value.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .expect("the thread in the namespace panicked")
    }

    /// Spawns `f` in a thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in(&format!("/run/netns/{}", self.name), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
