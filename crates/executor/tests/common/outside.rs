//! "The outside" for network tests: a network namespace the test makes,
//! joined to the host by a veth pair (`fcxt<n>` on the host at
//! 10.250.<n>.1/30, `eth0` inside at 10.250.<n>.2/30), made with the `ip`
//! command and deleted on drop. Traffic to and from it stays on this
//! machine: it stands in for the world beyond the host, which tests never
//! reach. Code given to [`Outside::spawn`] runs in a thread inside it.
//! `testkit::network::leftovers` lists what of fcexec's networking remains.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use std::sync::atomic::{AtomicU8, Ordering};
use testkit::network::{ip, spawn_in};

static NEXT: AtomicU8 = AtomicU8::new(0);

/// Why network tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (network namespaces, TAP devices and nftables need root)".into());
    }
    for tool in ["ip", "nft"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "the `{tool}` command is missing (iproute2, nftables)"
            ));
        }
    }
    None
}

/// The test's outside namespace; deleted on drop.
pub struct Outside {
    pub name: String,
    host_link: String,
    /// The host's address on the link (where published ports are reached).
    pub host: Ipv4Addr,
    /// The outside namespace's address.
    pub addr: Ipv4Addr,
}

impl Outside {
    /// Makes the namespace and its link to the host.
    pub fn create() -> Outside {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() % 200) as u8 + n;
        let o = Outside {
            name: format!("fcxtest-out-{}-{n}", std::process::id()),
            host_link: format!("fcxt{}{n}", std::process::id() % 10000),
            host: Ipv4Addr::new(10, 250, tag, 1),
            addr: Ipv4Addr::new(10, 250, tag, 2),
        };
        let (host, addr) = (format!("{}/30", o.host), format!("{}/30", o.addr));
        ip(&["netns", "add", &o.name]);
        ip(&[
            "link",
            "add",
            &o.host_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &o.name,
        ]);
        ip(&["addr", "add", &host, "dev", &o.host_link]);
        ip(&["link", "set", &o.host_link, "up"]);
        for args in [
            &["addr", "add", addr.as_str(), "dev", "eth0"][..],
            &["link", "set", "eth0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", o.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        }
        o
    }

    /// Runs `f` in a new thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in(&format!("/run/netns/{}", self.name), f)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for args in [
            &["link", "del", self.host_link.as_str()][..],
            &["netns", "del", self.name.as_str()],
        ] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}
