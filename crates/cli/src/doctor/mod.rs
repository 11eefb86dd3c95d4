//! `fcexec doctor`: checks what fcexec needs on this host and says how to
//! fix what is missing.
//!
//! One line per check, `ok   <what>` or `FAIL <problem>; fix: <how>`:
//!
//! 1. firecracker: found through `FIRECRACKER_BIN` or `PATH`, executable, and
//!    a supported version (`firecracker --version`);
//! 2. jailer: the same through `JAILER_BIN`;
//! 3. `/dev/kvm`: exists, is a character device, opens read-write;
//! 4. the state directory: `<root>` and `<root>/<executor id>` exist as
//!    directories owned by this user with mode 0700, or can be created; the
//!    socket paths fit (with jailing on, also a jailed VMM's, whose jail id
//!    is shortened to fit but not below 17 characters).
//!
//! 5. network (root, `/dev/net/tun`, netlink, nftables, `/run/netns`, IPv4
//!    forwarding): `ok` lines, or warnings when missing, since only
//!    executions with a network need them.
//!
//! Warnings, which do not fail the doctor, go to standard error as `warn
//! <problem>; fix: <how>`:
//!
//! 5. request paths: the executor's [`fcexec::validate::PathPolicy`] allows
//!    every host directory (the CLI's always does; a node embedding fcexec
//!    should restrict it, see the README's "Restricting request paths");
//! 6. isolation: jailed mode off. As root it is on unless `--no-jail`
//!    (`FCEXEC_NO_JAIL`) turns it off, which warns; as another user VMMs
//!    run unjailed (the jailer needs root), said on its own `ok` line;
//! 7. with jailing on, what slows jailed launches on this host ([`tuning`]):
//!    a runtime directory on a disk file system, cgroups without
//!    `favordynmods`.
//!
//! With `--kernel PATH`, the kernel is looked into too ([`kernel`]):
//! it must be an x86_64 ELF Linux kernel; what it shows of the features
//! fcexec's guest agent needs is reported, a feature not seen as a warning.
//!
//! Nothing is changed on the host. Exits 1 when any check fails.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use firecracker_api::version::{self, FIRST_UNSUPPORTED, MIN_SUPPORTED};
use nix::unistd::{access, geteuid, AccessFlags};

mod kernel;
mod tuning;

use crate::args::{DoctorArgs, Global};
use crate::context::Context;
use crate::exit::Exit;

/// How to install Firecracker.
const INSTALL: &str = "install the v1.16.1 release from \
    https://github.com/firecracker-microvm/firecracker/releases and put firecracker and jailer \
    on PATH, or set FIRECRACKER_BIN / JAILER_BIN";

/// The longest execution id `fcexec run` generates (`run-<13 digits>-<7 digits>`).
const TYPICAL_ID_LEN: usize = 25;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Passed: what was found.
    Ok(String),
    /// Failed: what is wrong, and how to fix it.
    Fail {
        /// The problem.
        problem: String,
        /// The fix.
        fix: String,
    },
    /// Works, but is risky: what, and how to fix it. Not a failure.
    Warn {
        /// The risk.
        problem: String,
        /// The fix.
        fix: String,
    },
}

impl Check {
    fn fail(problem: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::Fail {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Ok(what) => write!(f, "ok   {what}"),
            Check::Fail { problem, fix } => write!(f, "FAIL {problem}; fix: {fix}"),
            Check::Warn { problem, fix } => write!(f, "warn {problem}; fix: {fix}"),
        }
    }
}

/// Runs `fcexec doctor`.
pub async fn run(global: &Global, args: &DoctorArgs) -> anyhow::Result<Exit> {
    let config = match Context::new(global) {
        Ok(ctx) => ctx.config(),
        Err(_) => fcexec::ExecutorConfig::default(),
    };
    let mut checks = vec![
        binary("firecracker", "FIRECRACKER_BIN").await,
        binary("jailer", "JAILER_BIN").await,
        kvm(Path::new("/dev/kvm")),
        state_dir(global),
        data_dir(global),
        jailing(&config.jail, geteuid().is_root()),
    ];
    checks.extend(network());
    if config.jail.enabled && geteuid().is_root() {
        if let Some(problem) = jail_socket_room(&runtime_root(global).join(&global.executor)) {
            checks.push(problem);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        checks.extend(tuning::checks(&runtime_root(global), &mountinfo));
    }
    if let Some(kernel) = &args.kernel {
        checks.extend(kernel::check(kernel));
    }
    for check in checks.iter().filter(|c| !matches!(c, Check::Warn { .. })) {
        println!("{check}");
    }
    for check in checks.iter().filter(|c| matches!(c, Check::Warn { .. })) {
        eprintln!("{check}");
    }
    if let Some(warning) = path_policy(&config.path_policy) {
        eprintln!("{warning}");
    }
    let failed = checks
        .iter()
        .filter(|c| matches!(c, Check::Fail { .. }))
        .count();
    Ok(if failed == 0 {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// Whether this host can network executions ([`fcexec_network::check`]):
/// what is missing is a warning, since only networked executions need it.
fn network() -> Vec<Check> {
    fcexec_network::check()
        .into_iter()
        .map(|(what, outcome)| match outcome {
            Ok(detail) => Check::Ok(format!("network: {what}: {detail}")),
            Err(problem) => Check::Warn {
                problem: format!("network: {what}: {problem}"),
                fix: "needed only by executions with a network (ports_to_bind, gateway_ip, \
                      fcexec run --publish or --network)"
                    .into(),
            },
        })
        .collect()
}

/// A warning while `policy` allows request paths from every directory.
fn path_policy(policy: &fcexec::validate::PathPolicy) -> Option<Check> {
    policy.allows_everything().then(|| Check::Warn {
        problem: "request paths: kernels, root file systems and volumes may come from any host \
                  directory (the executor's path policy allows everything)"
            .into(),
        fix: "where requests come from others, embed fcexec with \
              ExecutorConfig::path_policy listing the image and volume directories (README: \
              Restricting request paths)"
            .into(),
    })
}

/// Whether VMMs are jailed (see the module doc, item 6).
fn jailing(settings: &fcexec::JailSettings, root: bool) -> Check {
    match (settings.enabled, root) {
        (true, _) => Check::Ok(format!(
            "isolation: jailed mode on: every VMM under the jailer with its own uid (from {} \
             uids at {}), chroot, PID namespace, seccomp and cgroup limits (under {:?})",
            settings.uid_count, settings.first_uid, settings.cgroup_parent
        )),
        (false, true) => Check::Warn {
            problem: "isolation: jailed mode is off (--no-jail or FCEXEC_NO_JAIL): VMMs run as \
                      root, unchrooted, without cgroup limits"
                .into(),
            fix: "drop --no-jail / FCEXEC_NO_JAIL".into(),
        },
        (false, false) => Check::Ok(
            "isolation: not root, so VMMs run unjailed as this user (no jailer, no per-execution \
             uid, chroot or cgroup limits); run fcexec as root for jailed mode"
                .into(),
        ),
    }
}

/// Checks a Firecracker binary: present, executable, a supported version.
async fn binary(name: &str, var: &str) -> Check {
    let path = match find(name, var) {
        Ok(path) => path,
        Err(problem) => return Check::fail(format!("{name}: {problem}"), INSTALL),
    };
    match version::probe(&path).await {
        Ok(v) if v.is_supported() => Check::Ok(format!("{name} {v} at {}", path.display())),
        Ok(v) => Check::fail(
            format!(
                "{name} {v} at {} is not supported (fcexec supports {MIN_SUPPORTED} up to, not \
                 including, {FIRST_UNSUPPORTED})",
                path.display()
            ),
            INSTALL,
        ),
        Err(e) => Check::fail(format!("{name} at {}: {e}", path.display()), INSTALL),
    }
}

/// Finds `name` through the variable `var`, else on `PATH`.
fn find(name: &str, var: &str) -> Result<PathBuf, String> {
    if let Some(given) = std::env::var_os(var) {
        let path = PathBuf::from(&given);
        return match std::fs::metadata(&path) {
            Err(e) => Err(format!("{var}={} does not exist ({e})", path.display())),
            Ok(m) if !m.is_file() => Err(format!("{var}={} is not a file", path.display())),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Err(format!("{var}={} is not executable", path.display()))
            }
            Ok(_) => Ok(path),
        };
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("no executable {name} on PATH and {var} is not set"))
}

/// Checks that `/dev/kvm` exists and opens read-write.
fn kvm(path: &Path) -> Check {
    let load = "load KVM: sudo modprobe kvm_intel (Intel) or sudo modprobe kvm_amd (AMD), and \
                enable virtualization (VT-x / AMD-V) in the firmware, or nested virtualization \
                on a cloud VM";
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Check::fail(format!("{}: {e}", path.display()), load),
    };
    if !meta.file_type().is_char_device() {
        return Check::fail(
            format!("{} is not a character device", path.display()),
            load,
        );
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Check::Ok(format!("{} is readable and writable", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::fail(
            format!(
                "{} is not readable and writable by uid {}",
                path.display(),
                geteuid()
            ),
            "sudo usermod -aG kvm $USER, then log in again (or, until the next boot: \
             sudo setfacl -m u:$USER:rw /dev/kvm)",
        ),
        Err(e) => Check::fail(format!("cannot open {}: {e}", path.display()), load),
    }
}

/// The state (runtime) directory's root as the other commands resolve it,
/// or `/run/fcexec` when it cannot be resolved.
fn runtime_root(global: &Global) -> PathBuf {
    match &global.state_dir {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
        None => fcexec::state_dir::default_root().unwrap_or_else(|_| "/run/fcexec".into()),
    }
}

/// Checks the state directory and this executor's directory in it.
fn state_dir(global: &Global) -> Check {
    let root = match &global.state_dir {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
        None => match fcexec::state_dir::default_root() {
            Ok(root) => root,
            Err(e) => {
                return Check::fail(
                    format!("state directory: {e}"),
                    "pass --state-dir DIR or set FCEXEC_STATE_DIR",
                )
            }
        },
    };
    if let Err(e) = fcexec::state_dir::check_id("--executor", &global.executor) {
        return Check::fail(
            format!("state directory: {e}"),
            "pass a valid --executor ID",
        );
    }
    let dir = root.join(&global.executor);
    for path in [&root, &dir] {
        if let Some(problem) = directory_problem(path, "state directory", "--state-dir") {
            return problem;
        }
    }
    // <dir>/<id>/api.sock must fit in a Unix socket address.
    let longest = dir.as_os_str().len() + 1 + TYPICAL_ID_LEN + "/api.sock".len();
    let max = firecracker_api::process::MAX_SOCKET_PATH;
    if longest > max {
        return Check::fail(
            format!(
                "state directory {} is too long: socket paths in it would be {longest} bytes, \
                 more than the {max} a Unix socket allows",
                dir.display()
            ),
            "use a shorter --state-dir",
        );
    }
    let state = if dir.exists() {
        match fcexec::inspect::lock_holder(&dir) {
            Some(pid) => format!("exists, in use by pid {pid}"),
            None => "exists".to_string(),
        }
    } else {
        "will be created with mode 0700".to_string()
    };
    Check::Ok(format!("state directory {} ({state})", dir.display()))
}

/// A failure when even the shortest jail id (a hash and the executor's
/// suffix, 17 characters) makes a jailed VMM's API socket path under `dir`
/// longer than a Unix socket allows: no jailed execution could start.
fn jail_socket_room(dir: &Path) -> Option<Check> {
    let socket = dir
        .join(".jail/firecracker")
        .join("x".repeat(17))
        .join("root")
        .join(firecracker_api::process::JAILED_SOCKET.trim_start_matches('/'));
    let (len, max) = (
        socket.as_os_str().len(),
        firecracker_api::process::MAX_SOCKET_PATH,
    );
    (len > max).then(|| {
        Check::fail(
            format!(
                "state directory {} is too long for jailed VMMs: their API sockets would be \
                 at least {len} bytes, more than the {max} a Unix socket allows",
                dir.display()
            ),
            format!(
                "use a --state-dir at least {} characters shorter, or --no-jail",
                len - max
            ),
        )
    })
}

/// Checks the data directory (records and output), resolved as the other
/// commands resolve it.
fn data_dir(global: &Global) -> Check {
    let root = match (&global.data_dir, &global.state_dir) {
        (Some(dir), _) | (None, Some(dir)) => {
            std::path::absolute(dir).unwrap_or_else(|_| dir.clone())
        }
        (None, None) => match fcexec::state_dir::default_data_root() {
            Ok(root) => root,
            Err(e) => {
                return Check::fail(
                    format!("data directory: {e}"),
                    "pass --data-dir DIR or set FCEXEC_DATA_DIR",
                )
            }
        },
    };
    let dir = root.join(&global.executor);
    for path in [&root, &dir] {
        if let Some(problem) = directory_problem(path, "data directory", "--data-dir") {
            return problem;
        }
    }
    let state = if dir.exists() {
        "exists"
    } else {
        "will be created with mode 0700"
    };
    Check::Ok(format!("data directory {} ({state})", dir.display()))
}

/// What is wrong with `path` as a state directory, if anything: an existing
/// one must be a directory of this user with mode 0700; a missing one needs a
/// writable parent.
fn directory_problem(path: &Path, what: &str, flag: &str) -> Option<Check> {
    let shown = path.display();
    let me = geteuid();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Some(Check::fail(
            format!("{what} {shown} is not a directory"),
            format!("remove it or pass another {flag}"),
        )),
        Ok(meta) if meta.uid() != me.as_raw() => Some(Check::fail(
            format!(
                "{what} {shown} is owned by uid {}, not uid {me}",
                meta.uid()
            ),
            format!("sudo chown {me} {shown}, or pass a {flag} of your own"),
        )),
        Ok(meta) if meta.permissions().mode() & 0o777 != 0o700 => Some(Check::fail(
            format!(
                "{what} {shown} has mode {:o}, not 700",
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 700 {shown}"),
        )),
        Ok(_) => None,
        Err(_) => {
            let parent = path.ancestors().skip(1).find(|p| p.exists())?;
            let writable = access(parent, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
            (!writable).then(|| {
                Check::fail(
                    format!(
                        "{what} {shown} cannot be created: {} is not writable by uid {me}",
                        parent.display()
                    ),
                    format!(
                        "run as root, pass a {flag} you can write, or create it: \
                         sudo install -d -m 700 -o {me} {shown}"
                    ),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jailed_mode_off_as_root_warns_and_unjailed_as_a_user_is_said_plainly() {
        let on = fcexec::JailSettings {
            enabled: true,
            ..fcexec::JailSettings::default()
        };
        let off = fcexec::JailSettings {
            enabled: false,
            ..on.clone()
        };
        assert!(jailing(&on, true).to_string().contains("jailed mode on"));
        assert!(matches!(jailing(&off, true), Check::Warn { .. }));
        let user = jailing(&off, false);
        assert!(matches!(user, Check::Ok(_)), "{user}");
        assert!(user.to_string().contains("unjailed"), "{user}");
    }

    #[test]
    fn a_state_directory_too_long_for_any_jail_fails() {
        assert_eq!(jail_socket_room(Path::new("/run/fcexec/cli")), None);
        let long = Path::new("/var/lib/a-service-with-a-long-name/state/fcexec/executors/node-1");
        let problem = jail_socket_room(long).map(|c| c.to_string());
        assert!(
            problem.as_deref().is_some_and(|p| p.starts_with("FAIL ")
                && p.contains("too long for jailed VMMs")
                && p.contains("characters shorter")),
            "{problem:?}"
        );
    }

    #[test]
    fn lines_start_with_ok_or_fail() {
        assert_eq!(Check::Ok("x".into()).to_string(), "ok   x");
        assert_eq!(Check::fail("y", "z").to_string(), "FAIL y; fix: z");
    }

    #[test]
    fn an_unrestricted_path_policy_is_a_warning() {
        use fcexec::validate::PathPolicy;
        let warning = path_policy(&PathPolicy::default()).expect("a warning");
        let line = warning.to_string();
        assert!(line.starts_with("warn request paths: "), "{line}");
        assert!(line.contains("; fix: "), "{line}");
        assert!(line.contains("ExecutorConfig::path_policy"), "{line}");
        assert_eq!(path_policy(&PathPolicy::only(["/srv/images"])), None);
    }

    #[test]
    fn directories_must_be_private_and_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        assert_eq!(
            directory_problem(&dir, "state directory", "--state-dir"),
            None,
            "creatable"
        );
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let Some(Check::Fail { fix, .. }) =
            directory_problem(&dir, "state directory", "--state-dir")
        else {
            panic!("mode 755 passed");
        };
        assert_eq!(fix, format!("chmod 700 {}", dir.display()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            directory_problem(&dir, "state directory", "--state-dir"),
            None
        );
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            directory_problem(&file, "state directory", "--state-dir"),
            Some(Check::Fail { .. })
        ));
    }

    #[test]
    fn a_missing_kvm_says_how_to_load_it() {
        let check = kvm(Path::new("/nonexistent/kvm"));
        assert!(check.to_string().contains("modprobe kvm_intel"), "{check}");
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let check = kvm(tmp.path());
        assert!(
            check.to_string().contains("not a character device"),
            "{check}"
        );
        assert_eq!(
            kvm(Path::new("/dev/null")),
            Check::Ok("/dev/null is readable and writable".into())
        );
    }
}
