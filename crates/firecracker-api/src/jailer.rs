//! Running Firecracker through the `jailer`: its options, the command line
//! they become, and the chroot they create.
//!
//! The jailer creates `<chroot_base>/<exec name>/<id>/root`, copies the
//! firecracker binary into it, creates `/dev/kvm` there, joins cgroups and an
//! optional network namespace, drops to the given uid/gid, chroots and execs
//! firecracker (same pid: we do not ask it to daemonize, so the VMM stays our
//! child and its stdout stays ours). Every path given to firecracker is then
//! inside the chroot; [`Jail::stage`] hard-links (or copies) host files in,
//! and [`crate::mounts::bind_file`] bind-mounts them without touching the
//! original.
//!
//! With [`JailerOptions::new_pid_ns`] the jailer clones firecracker into a
//! new PID namespace, writes its pid (as seen from our namespace) to
//! `<root>/<exec name>.pid` and exits 0: the VMM is then no longer our child.
//! [`crate::Vmm::spawn`] reads that file and follows the VMM through a pidfd.

use std::path::{Path, PathBuf};

/// How to run firecracker under the jailer.
#[derive(Debug, Clone)]
pub struct JailerOptions {
    /// The `jailer` binary.
    pub jailer: PathBuf,
    /// The directory under which the jailer creates chroots (`--chroot-base-dir`).
    pub chroot_base: PathBuf,
    /// User id the VMM runs as.
    pub uid: u32,
    /// Group id the VMM runs as.
    pub gid: u32,
    /// cgroup version (1 or 2).
    pub cgroup_version: u8,
    /// Optional network namespace to join (a path such as `/var/run/netns/x`).
    pub netns: Option<PathBuf>,
    /// The cgroup under which the jailer creates the VMM's (`--parent-cgroup`);
    /// `None`: the jailer's default (the exec file's name).
    pub parent_cgroup: Option<String>,
    /// `<file>=<value>` settings the jailer writes into the VMM's cgroup
    /// (one `--cgroup` each).
    pub cgroups: Vec<String>,
    /// Run firecracker in a new PID namespace (`--new-pid-ns`).
    pub new_pid_ns: bool,
}

/// The chroot of one jailed VMM.
#[derive(Debug, Clone)]
pub struct Jail {
    /// `<chroot_base>/<exec name>/<id>`: removed as a whole afterwards.
    instance_dir: PathBuf,
    /// `<instance_dir>/root`: the VMM's `/`.
    root: PathBuf,
    /// Owner of the staged files.
    uid: u32,
    /// Group of the staged files.
    gid: u32,
}

impl Jail {
    /// The chroot the jailer will create for `id` with `firecracker` as exec file.
    pub fn new(options: &JailerOptions, firecracker: &Path, id: &str) -> Jail {
        let exec_name = firecracker
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "firecracker".into());
        let instance_dir = options.chroot_base.join(exec_name).join(id);
        Jail {
            root: instance_dir.join("root"),
            instance_dir,
            uid: options.uid,
            gid: options.gid,
        }
    }

    /// The VMM's root directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<chroot_base>/<exec name>/<id>`, which cleanup removes.
    pub fn instance_dir(&self) -> &Path {
        &self.instance_dir
    }

    /// The host path of a path as the jailed VMM sees it.
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// `<root>/<exec name>.pid`: where the jailer writes the VMM's pid when
    /// it runs it in a new PID namespace.
    pub fn pid_file(&self, exec_name: &str) -> PathBuf {
        self.root.join(format!("{exec_name}.pid"))
    }

    /// Creates the chroot's root directory (and `run/`) ahead of the jailer,
    /// so that the API socket's directory can be watched from the start.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join("run"))?;
        chown(&self.root.join("run"), self.uid, self.gid)
    }

    /// Makes a host file visible inside the jail as `/<name>` (hard link, or a
    /// copy across file systems), owned by the jail's uid/gid. Returns the path
    /// as the VMM sees it.
    pub fn stage(&self, host: &Path, name: &str) -> std::io::Result<PathBuf> {
        let target = self.root.join(name);
        if target.exists() {
            std::fs::remove_file(&target)?;
        }
        if std::fs::hard_link(host, &target).is_err() {
            std::fs::copy(host, &target)?;
        }
        chown(&target, self.uid, self.gid)?;
        Ok(PathBuf::from("/").join(name))
    }

    /// The jailer's command line (without the `--` and firecracker's own arguments).
    pub fn args(&self, options: &JailerOptions, firecracker: &Path, id: &str) -> Vec<String> {
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--exec-file".to_string(),
            firecracker.display().to_string(),
            "--uid".to_string(),
            options.uid.to_string(),
            "--gid".to_string(),
            options.gid.to_string(),
            "--chroot-base-dir".to_string(),
            options.chroot_base.display().to_string(),
            "--cgroup-version".to_string(),
            options.cgroup_version.to_string(),
        ];
        if let Some(netns) = &options.netns {
            args.push("--netns".to_string());
            args.push(netns.display().to_string());
        }
        if let Some(parent) = &options.parent_cgroup {
            args.push("--parent-cgroup".to_string());
            args.push(parent.clone());
        }
        for cgroup in &options.cgroups {
            args.push("--cgroup".to_string());
            args.push(cgroup.clone());
        }
        if options.new_pid_ns {
            args.push("--new-pid-ns".to_string());
        }
        args
    }

    /// Removes the chroot (unmounting whatever is mounted inside it first, so
    /// that a bind-mounted file is never deleted through its mount point) and
    /// the cgroup the jailer made for `id` under its default parent.
    pub fn remove(&self, id: &str, exec_name: &str) -> std::io::Result<()> {
        crate::mounts::unmount_under(&self.instance_dir)?;
        for cgroup in [
            format!("/sys/fs/cgroup/{exec_name}/{id}"),
            format!("/sys/fs/cgroup/cpu/{exec_name}/{id}"),
        ] {
            // cgroup directories are removed with rmdir; absent is fine.
            let _ = std::fs::remove_dir(cgroup);
        }
        match std::fs::remove_dir_all(&self.instance_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> JailerOptions {
        JailerOptions {
            jailer: "/usr/bin/jailer".into(),
            chroot_base: "/srv/jailer".into(),
            uid: 123,
            gid: 456,
            cgroup_version: 2,
            netns: None,
            parent_cgroup: None,
            cgroups: vec![],
            new_pid_ns: false,
        }
    }

    #[test]
    fn paths_follow_the_jailer_layout() {
        let jail = Jail::new(&options(), Path::new("/usr/bin/firecracker"), "vm1");
        assert_eq!(jail.root(), Path::new("/srv/jailer/firecracker/vm1/root"));
        assert_eq!(
            jail.host_path(Path::new("/run/firecracker.socket")),
            Path::new("/srv/jailer/firecracker/vm1/root/run/firecracker.socket")
        );
    }

    #[test]
    fn args_carry_every_option() {
        let mut o = options();
        o.netns = Some("/var/run/netns/n1".into());
        o.parent_cgroup = Some("fcexec".into());
        o.cgroups = vec!["pids.max=64".into()];
        o.new_pid_ns = true;
        let jail = Jail::new(&o, Path::new("/usr/bin/firecracker"), "vm1");
        let args = jail
            .args(&o, Path::new("/usr/bin/firecracker"), "vm1")
            .join(" ");
        assert_eq!(
            args,
            "--id vm1 --exec-file /usr/bin/firecracker --uid 123 --gid 456 \
             --chroot-base-dir /srv/jailer --cgroup-version 2 --netns /var/run/netns/n1 \
             --parent-cgroup fcexec --cgroup pids.max=64 --new-pid-ns"
        );
    }
}
