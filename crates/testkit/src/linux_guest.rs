//! What tests of fcexec's Linux guest agent need: the static agent binary
//! and a small busybox root file system as a real ext4 image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The static `fcexec-agent` (x86_64-unknown-linux-musl, release), built
/// once per test process with cargo when `FCEXEC_AGENT_BIN` names none.
pub fn agent_binary() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os("FCEXEC_AGENT_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    BUILT
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let target = "x86_64-unknown-linux-musl";
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(&workspace)
                .args([
                    "build",
                    "--release",
                    "--target",
                    target,
                    "-p",
                    "fcexec-guest-agent",
                ])
                .output()
                .map_err(|e| format!("cannot run cargo to build fcexec-agent: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building fcexec-agent for {target} failed (is the target installed? \
                     rustup target add {target}):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            Ok(target_dir.join(target).join("release/fcexec-agent"))
        })
        .clone()
}

/// Builds a busybox root file system image (ext4, `size_mib`) at `image`
/// with `mkfs.ext4 -d`: `/bin/busybox` and its applets, `/etc/passwd` and
/// `/etc/group` with root and `user` (1000:1000), and the usual empty
/// directories. Needs a static busybox (`busybox-static`) and e2fsprogs.
pub fn busybox_rootfs(image: &Path, size_mib: u32) -> Result<(), String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or("busybox is not installed (apt-get install busybox-static)")?;
    let tree = image.with_extension("tree");
    let io = |e: std::io::Error| format!("cannot build the rootfs tree {}: {e}", tree.display());
    for dir in [
        "bin",
        "sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "home/user",
        "mnt",
    ] {
        std::fs::create_dir_all(tree.join(dir)).map_err(io)?;
    }
    std::fs::copy(busybox, tree.join("bin/busybox")).map_err(io)?;
    let applets = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run busybox --list: {e}"))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let link = tree.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io)?;
        }
    }
    std::fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .map_err(io)?;
    std::fs::write(tree.join("etc/group"), "root:x:0:\nuser:x:1000:\n").map_err(io)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(|e| format!("cannot run mkfs.ext4 (apt-get install e2fsprogs): {e}"))?;
    let _ = std::fs::remove_dir_all(&tree);
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
