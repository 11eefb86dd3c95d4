//! The real workload: the job spec of the config drive, run in the user's
//! rootfs. [`GuestWorkload::prepare`] mounts the rootfs (drive 0, ext4) at
//! the root directory, then inside it `/proc`, `/sys`, `/dev`, `/run` and
//! the volumes; resolves the user; writes the provision scripts to
//! `/run/fcexec/<name>` (on the tmpfs, as root, mode 0700); and returns
//! the launches. [`GuestWorkload::finish`] kills every process left (only
//! as PID 1), syncs and unmounts in reverse order, so the output volumes'
//! images are consistent before the end is reported.
//!
//! When the spec's `network` has a `dns` server, the job gets it as its
//! `/etc/resolv.conf` (`nameserver <dns>`), the way container runtimes do
//! it, without writing to the rootfs:
//!
//! - a regular file there is covered by a read-only bind mount of
//!   [`RESOLV_CONF`] (on the `/run` tmpfs), also on a read-only rootfs;
//! - a symlink (to `../run/systemd/resolve/stub-resolv.conf`, say) is
//!   followed inside the rootfs, and when it leads onto the `/run` tmpfs the
//!   file is written there; a link elsewhere is left;
//! - when there is none, and `/etc` is a directory on a read-write rootfs,
//!   an empty file is created as the mount point and removed once the bind
//!   mount is unmounted at the end (on a read-only rootfs it is left);
//! - anything else (a directory, no `/run` in a read-only rootfs) is left.
//!
//! What is left is said in one line on the console; the job runs anyway.
//! This happens right after `/run` is mounted, so a volume mounted over
//! `/etc` hides it.
//!
//! Provision scripts run as root, as `/bin/sh /run/fcexec/<name>` in `/`,
//! with the job's environment. Their output is not part of the job's: it
//! is captured and shown only in the fail reason of a script that fails.

use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::JobSpec;
use crate::devices::describe;
use crate::job::{Credentials, Launch, Output, DEFAULT_PATH};
use crate::mounts::{dir_in_root, populate_dev, resolve_in_root, Fs, Mounts};
use crate::supervise::{Script, Steps, Workload};
use crate::{sys, user};

/// Where the provision scripts are written, inside the rootfs.
pub const SCRIPT_DIR: &str = "/run/fcexec";
/// Where the job's `/etc/resolv.conf` is written, inside the rootfs (on
/// the `/run` tmpfs; not in [`SCRIPT_DIR`], where a script could be named
/// `resolv.conf`).
pub const RESOLV_CONF: &str = "/run/fcexec-net/resolv.conf";
/// [`RESOLV_CONF`] relative to `/run`.
const RESOLV_CONF_IN_RUN: &str = "fcexec-net/resolv.conf";

/// The job spec, run in the rootfs (see the module docs).
#[derive(Debug)]
pub struct GuestWorkload {
    root: PathBuf,
    drives: Vec<PathBuf>,
    config_index: usize,
    spec: Result<JobSpec, String>,
    mounts: Mounts,
    pid1: bool,
}

impl GuestWorkload {
    /// The workload of `spec` (or its error, reported as the failure) with
    /// the rootfs mounted at `root`; `drives` in drive order, the config
    /// drive at `config_index`. `pid1`: kill every process at the end.
    pub fn new(
        root: PathBuf,
        drives: Vec<PathBuf>,
        config_index: usize,
        spec: Result<JobSpec, String>,
        pid1: bool,
    ) -> GuestWorkload {
        GuestWorkload {
            root,
            drives,
            config_index,
            spec,
            mounts: Mounts::new(),
            pid1,
        }
    }

    fn mount_all(&mut self, spec: &JobSpec) -> Result<(), String> {
        let root = self.root.clone();
        if self.config_index == 0 {
            return Err(
                "the VM has no root file system: its first drive is the config drive".into(),
            );
        }
        let device = &self.drives[0];
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let mut flags = MsFlags::empty();
        if spec.root_read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let what = format!(
            "the root file system, {} as ext4, {}",
            describe(0, device),
            rw(spec.root_read_only)
        );
        let fs = Fs {
            source: device,
            fstype: "ext4",
            flags,
            data: None,
        };
        let shown = root.display().to_string();
        self.mounts
            .mount(fs, &root, &what, &shown)
            .map_err(|e| e.to_string())?;
        let plain = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        for (path, fs) in [
            ("/proc", Fs::virtual_fs("proc", plain, None)),
            (
                "/sys",
                Fs::virtual_fs("sysfs", plain | MsFlags::MS_RDONLY, None),
            ),
        ] {
            let point = dir_in_root(&root, path, path).map_err(|e| e.to_string())?;
            self.mounts
                .mount(fs, &point, &format!("a {}", fs.fstype), path)
                .map_err(|e| e.to_string())?;
        }
        populate_dev(&mut self.mounts, &root).map_err(|e| e.to_string())?;
        let run = Fs::virtual_fs(
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        );
        let run = match dir_in_root(&root, "/run", "/run") {
            Ok(point) => {
                self.mounts
                    .mount(run, &point, "a tmpfs", "/run")
                    .map_err(|e| e.to_string())?;
                Some(point)
            }
            // A read-only rootfs without /run: only the scripts need it.
            Err(e) if !spec.provision_scripts.is_empty() => {
                return Err(format!("{e} (the provision scripts are written there)"))
            }
            Err(_) => None,
        };
        if let Some(dns) = spec.network.as_ref().and_then(|n| n.dns) {
            self.give_dns(dns, run.as_deref(), spec.root_read_only)?;
        }
        for volume in &spec.volumes {
            let volumes = 1..self.config_index;
            if !volumes.contains(&volume.drive) {
                return Err(format!(
                    "volume drive {} does not exist: the VM's volume drives are {} (0 is the root \
                     file system, {} the config drive)",
                    volume.drive,
                    match (volumes.start, volumes.end - 1) {
                        (a, b) if a > b => "none".to_string(),
                        (a, b) if a == b => format!("drive {a}"),
                        (a, b) => format!("drives {a} to {b}"),
                    },
                    self.config_index
                ));
            }
            let device = &self.drives[volume.drive];
            let what = format!(
                "volume {} as ext4, {}",
                describe(volume.drive, device),
                rw(volume.read_only)
            );
            let point = dir_in_root(&root, &volume.target, &what).map_err(|e| e.to_string())?;
            if point == root {
                return Err(format!(
                    "the target {} of volume {} is the rootfs's / itself",
                    volume.target,
                    describe(volume.drive, device)
                ));
            }
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if volume.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            let fs = Fs {
                source: device,
                fstype: "ext4",
                flags,
                data: None,
            };
            self.mounts
                .mount(fs, &point, &what, &volume.target)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Gives the job `dns` as its `/etc/resolv.conf` without writing to the
    /// rootfs (see the module docs); `run` is where the agent mounted the
    /// rootfs's `/run` tmpfs, if it did. What cannot be done is said on the
    /// console and left; only a failing write or mount fails the job.
    fn give_dns(
        &mut self,
        dns: Ipv4Addr,
        run: Option<&Path>,
        read_only: bool,
    ) -> Result<(), String> {
        let root = self.root.clone();
        let leave = |why: &str| {
            sys::console(&format!(
                "the job's DNS server {dns} is not set: {why}; /etc/resolv.conf is left as it is"
            ));
            Ok(())
        };
        let Some(run) = run else {
            return leave("the rootfs has no /run to mount a tmpfs on");
        };
        let text = format!("nameserver {dns}\n");
        let shown = |path: &Path| {
            let inside = path.strip_prefix(&root).unwrap_or(path);
            Path::new("/").join(inside).display().to_string()
        };
        let etc = match resolve_in_root(&root, "/etc") {
            Ok(etc) => etc,
            Err(e) => return leave(&format!("cannot resolve /etc in the rootfs: {e}")),
        };
        let conf = etc.join("resolv.conf");
        let meta = match std::fs::symlink_metadata(&conf) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return leave(&format!("cannot look at it: {e}")),
        };
        let source = run.join(RESOLV_CONF_IN_RUN);
        let write_source = || write_public(&source, RESOLV_CONF, &text);
        let created = match meta {
            Some(meta) if meta.file_type().is_symlink() => {
                // Written where the link leads, when that is on the tmpfs.
                let target = match resolve_in_root(&root, "/etc/resolv.conf") {
                    Ok(target) => target,
                    Err(e) => return leave(&format!("cannot follow its symlink: {e}")),
                };
                if !target.starts_with(run) || target == run {
                    return leave(&format!(
                        "it is a symlink to {}, which is not on the /run tmpfs the agent mounted",
                        shown(&target)
                    ));
                }
                return write_public(&target, &shown(&target), &text);
            }
            Some(meta) if meta.is_file() => {
                write_source()?;
                false
            }
            Some(_) => return leave("it is not a regular file"),
            None if read_only => {
                return leave("it does not exist and the rootfs is read-only");
            }
            None if !std::fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) => {
                return leave("it does not exist and /etc is not a directory");
            }
            None => {
                write_source()?;
                // An empty mount point, removed once it is unmounted.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&conf)
                    .map_err(|e| format!("cannot create /etc/resolv.conf as a mount point: {e}"))?;
                true
            }
        };
        self.mounts
            .bind_read_only(
                &source,
                &conf,
                created,
                &format!("{RESOLV_CONF} (nameserver {dns})"),
                "/etc/resolv.conf",
            )
            .map_err(|e| e.to_string())
    }

    fn write_scripts(
        &self,
        spec: &JobSpec,
        env: &[(String, String)],
    ) -> Result<Vec<Script>, String> {
        if spec.provision_scripts.is_empty() {
            return Ok(Vec::new());
        }
        let dir = dir_in_root(&self.root, SCRIPT_DIR, "the provision scripts")
            .map_err(|e| e.to_string())?;
        let failed = |path: &Path, e: std::io::Error| {
            format!(
                "cannot write the provision scripts to {}: {e}",
                path.display()
            )
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(&dir, e))?;
        let mut scripts = Vec::new();
        for script in &spec.provision_scripts {
            let file = dir.join(&script.name);
            std::fs::write(&file, &script.script).map_err(|e| failed(&file, e))?;
            scripts.push(Script {
                name: script.name.clone(),
                launch: Launch {
                    argv: vec!["/bin/sh".into(), format!("{SCRIPT_DIR}/{}", script.name)],
                    env: env.to_vec(),
                    working_dir: "/".into(),
                    root: Some(self.root.clone()),
                    user: Some(Credentials::root()),
                    output: Output::Combined,
                },
            });
        }
        Ok(scripts)
    }
}

/// Writes `text` to `file` (`shown` as the job sees it), readable by all,
/// creating its directories.
fn write_public(file: &Path, shown: &str, text: &str) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("cannot write {shown} in the rootfs: {e}");
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(file, text).map_err(failed)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).map_err(failed)
}

fn rw(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

impl Workload for GuestWorkload {
    fn prepare(&mut self) -> Result<Steps, String> {
        let spec = match &self.spec {
            Ok(spec) => spec.clone(),
            Err(e) => return Err(format!("bad config drive: {e}")),
        };
        self.mount_all(&spec)?;
        let user = match &spec.user {
            Some(name) => user::resolve(&self.root, name)?,
            None => Credentials::root(),
        };
        let mut env = spec.env.clone();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let scripts = self.write_scripts(&spec, &env)?;
        Ok(Steps {
            scripts,
            job: Launch {
                argv: spec.command.clone(),
                env,
                working_dir: spec.working_dir.clone().unwrap_or_else(|| "/".into()),
                root: Some(self.root.clone()),
                user: Some(user),
                output: Output::Split,
            },
        })
    }

    fn finish(&mut self) {
        if self.pid1 {
            kill_everything(Duration::from_secs(2));
        }
        for warning in self.mounts.unmount_all() {
            sys::console(&warning);
        }
    }
}

/// As PID 1: SIGKILL to every other process, then reap them, for at most
/// `limit`.
fn kill_everything(limit: Duration) {
    if nix::unistd::getpid().as_raw() != 1 {
        return;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let give_up = Instant::now() + limit;
    while Instant::now() < give_up {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into `raw`.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        match pid {
            p if p > 0 => continue,
            0 => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
    sys::console("some processes did not die within 2 s of SIGKILL");
}
