//! Undoing a jail: from the record alone (after the VMM ended, after a
//! failed launch, after a restart), and the start-up sweep of what a crash
//! left behind.

use std::path::Path;
use std::sync::OnceLock;

use fcexec_isolation::{Cgroup, CgroupHost, UidPool, DEFAULT_REMOVE_GRACE};

use super::{Isolation, Jailer};

/// Removes everything `iso` describes: the mounts inside the jail, the jail
/// directory, the private copies, the cgroup (killing what is left in it)
/// and the uid lease. Every step is tried; failures are logged. Blocking.
pub fn release(iso: &Isolation) {
    let id = &iso.jail_id;
    remove_jail_dir(&iso.instance_dir, iso.mounts);
    if let Err(e) = remove_dir(&iso.copies) {
        tracing::warn!(jail_id = %id, dir = %iso.copies.display(), error = %e, "cannot remove the jail's private copies");
    }
    let removed = cgroup_host()
        .and_then(|host| Cgroup::open(&host, &iso.cgroup_parent, id))
        .and_then(|cgroup| cgroup.remove(DEFAULT_REMOVE_GRACE));
    if let Err(e) = removed {
        tracing::warn!(jail_id = %id, error = %e, "cannot remove the jail's cgroup");
    }
    let (first, count) = iso.uid_range;
    let released = UidPool::new(first, count, iso.uid_lock_dir.clone()).and_then(|pool| match pool
        .lease_of(
        id,
    )? {
        Some(lease) => pool.release(&lease),
        None => Ok(()),
    });
    if let Err(e) = released {
        tracing::warn!(jail_id = %id, uid = iso.uid, error = %e, "cannot release the jail's uid");
    }
    tracing::debug!(jail_id = %id, "jail released");
}

/// The host's cgroup hierarchy, detected once per process (releases run
/// for every execution; the hierarchy does not change under a running
/// executor).
fn cgroup_host() -> Result<CgroupHost, fcexec_isolation::CgroupError> {
    static HOST: OnceLock<CgroupHost> = OnceLock::new();
    if let Some(host) = HOST.get() {
        return Ok(host.clone());
    }
    let host = CgroupHost::detect()?;
    Ok(HOST.get_or_init(|| host).clone())
}

/// Unmounts everything under a jail's instance directory (when `mounts`:
/// something may be mounted there), then deletes it.
fn remove_jail_dir(dir: &Path, mounts: bool) {
    let unmounted = match mounts {
        true => firecracker_api::mounts::unmount_under(dir),
        false => Ok(()),
    };
    if let Err(e) = unmounted {
        // Deleting through a mount point would reach the user's file.
        tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount inside a jail; leaving it");
        return;
    }
    if let Err(e) = remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a jail");
    }
    // `<base>/<exec name>` and `<base>` go with the last jail (only when
    // empty: a jail being prepared meanwhile keeps them, see `prepare`).
    let exec_dir = dir.parent();
    for empty in [exec_dir, exec_dir.and_then(Path::parent)]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_dir(empty);
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The start-up sweep (see [`Jailer::sweep`]).
pub fn sweep_jails(jailer: &Jailer, live: &[String]) {
    let keep = |id: &str| !jailer.owns(id) || live.iter().any(|l| l == id);
    // Jail directories: `<base>/<exec name>/<jail id>`.
    let exec_dir = jailer.base.join(
        jailer
            .firecracker
            .file_name()
            .unwrap_or_else(|| "firecracker".as_ref()),
    );
    if let Ok(entries) = std::fs::read_dir(&exec_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep(&name) {
                tracing::info!(jail_id = %name, "removing a jail left by an earlier run");
                remove_jail_dir(&entry.path(), true);
            }
        }
    }
    // cgroups under the parent: ours and not live.
    let parent = &jailer.settings.cgroup_parent;
    let mut present: Vec<String> = Vec::new();
    if let Ok(probe) = Cgroup::open(&jailer.cgroups, parent, "probe") {
        for dir in probe.paths() {
            let Some(parent_dir) = dir.parent() else {
                continue;
            };
            for entry in std::fs::read_dir(parent_dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    present.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    present.sort();
    present.dedup();
    // Only this executor's, one by one: a keep-list sweep of the shared
    // parent would also take cgroups other executors make meanwhile.
    for id in present.iter().filter(|id| !keep(id)) {
        let removed = Cgroup::open(&jailer.cgroups, parent, id)
            .and_then(|cgroup| cgroup.remove(DEFAULT_REMOVE_GRACE));
        match removed {
            Ok(()) => tracing::info!(cgroup = %id, "removed a cgroup left by an earlier run"),
            Err(e) => {
                tracing::warn!(cgroup = %id, error = %e, "cannot remove a cgroup left by an earlier run")
            }
        }
    }
    if let Err(e) = jailer.uids.sweep(keep) {
        tracing::warn!(error = %e, "cannot sweep uid leases");
    }
}
