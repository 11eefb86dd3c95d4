//! Host checks for `fcexec doctor`: can this host network executions?

use std::os::fd::FromRawFd;

use crate::firewall::nft_program;

/// One check's name and outcome: `Ok(detail)` or `Err(what is wrong and the fix)`.
pub type CheckResult = (String, Result<String, String>);

/// Checks root, `/dev/net/tun`, netlink, nftables, `/run/netns` and IPv4
/// forwarding, without changing anything.
pub fn check() -> Vec<CheckResult> {
    vec![
        ("root".into(), root()),
        ("/dev/net/tun".into(), tun()),
        ("netlink".into(), netlink()),
        ("nftables".into(), nftables()),
        ("/run/netns".into(), netns_dir()),
        ("IPv4 forwarding".into(), forwarding()),
    ]
}

fn root() -> Result<String, String> {
    if nix::unistd::geteuid().is_root() {
        Ok("running as root".into())
    } else {
        Err("not root: networking needs CAP_NET_ADMIN and CAP_SYS_ADMIN; run as root".into())
    }
}

fn tun() -> Result<String, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(|_| "opens read-write".to_string())
        .map_err(|e| format!("cannot open /dev/net/tun ({e}); load the tun module: modprobe tun"))
}

fn netlink() -> Result<String, String> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot open a NETLINK_ROUTE socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is a fresh descriptor we own; OwnedFd closes it.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    Ok("NETLINK_ROUTE socket opens".into())
}

fn nftables() -> Result<String, String> {
    let program = nft_program();
    nftables::helper::get_current_ruleset_raw(Some(&program), ["list", "tables"])
        .map(|_| format!("{} lists tables", program.display()))
        .map_err(|e| format!("{} cannot list tables ({e}); install nftables (nft 1.0 or later) and load nf_tables", program.display()))
}

fn netns_dir() -> Result<String, String> {
    let dir = std::path::Path::new(crate::names::NETNS_DIR);
    if !dir.exists() {
        return Ok("absent; created on first use".into());
    }
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK)
        .map(|_| "writable".into())
        .map_err(|e| format!("{} is not writable ({e})", dir.display()))
}

fn forwarding() -> Result<String, String> {
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(v) if v.trim() == "1" => Ok("on".into()),
        Ok(_) => Ok(
            "off; fcexec turns it on (net.ipv4.ip_forward=1) when it creates the first network"
                .into(),
        ),
        Err(e) => Err(format!("cannot read /proc/sys/net/ipv4/ip_forward: {e}")),
    }
}
