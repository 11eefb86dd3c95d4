//! Network test fixtures: the `ip` command for a test's own namespaces and
//! links, and what of fcexec's execution networking is on this host, for
//! tests that check that nothing is left behind.

use std::process::Command;

/// What of fcexec's networking is on this host: namespaces `fcx-*`, host
/// links `fcx<digits>`, routes into `pool`, and nftables rules commented
/// `fcx:`; each as a line.
pub fn leftovers(pool: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("fcx-") {
                found.push(format!("namespace {name}"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name
                .strip_prefix("fcx")
                .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_hexdigit()))
            {
                found.push(format!("link {name}"));
            }
        }
    }
    let routes = Command::new("ip")
        .args(["route", "show", "root", pool])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&routes.stdout).lines() {
        found.push(format!("route {line}"));
    }
    let rules = Command::new("nft")
        .args(["-a", "list", "ruleset"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&rules.stdout).lines() {
        if line.contains("\"fcx:") {
            found.push(format!("rule {}", line.trim()));
        }
    }
    found
}

/// Runs `ip` with `args` (a test's own fixture: fcexec itself never runs
/// `ip`); panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` in a new thread that first joins the network namespace at
/// `path` (`/run/netns/<name>`), so the sockets it makes live there; panics
/// when the namespace cannot be entered.
pub fn spawn_in<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    use std::os::fd::AsRawFd;
    let path = path.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace descriptor; only this thread moves.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
