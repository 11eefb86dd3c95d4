//! UidPool against lock directories in tempdirs.

use super::*;

/// A range that no host file mentions (checked by `new`).
const FIRST: u32 = 2_000_000_000;

fn pool(dir: &Path, count: u32) -> UidPool {
    UidPool::new(FIRST, count, dir.to_path_buf()).unwrap()
}

#[test]
fn allocate_gives_distinct_uids_and_release_frees_them() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 3);
    let a = pool.allocate("a").unwrap();
    let b = pool.allocate("b").unwrap();
    let c = pool.allocate("c").unwrap();
    let mut uids = vec![a.uid(), b.uid(), c.uid()];
    uids.sort();
    assert_eq!(uids, [FIRST, FIRST + 1, FIRST + 2]);
    assert_eq!(a.gid(), a.uid());
    let err = pool.allocate("d").unwrap_err();
    assert!(matches!(err, UidError::Exhausted { count: 3, .. }), "{err}");
    assert!(err.to_string().contains("UidPool::sweep"), "{err}");
    pool.release(&b).unwrap();
    pool.release(&b).unwrap(); // idempotent
    assert_eq!(pool.allocate("d").unwrap().uid(), b.uid());
}

#[test]
fn an_execution_holds_one_uid() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 10);
    let a = pool.allocate("a").unwrap();
    let err = pool.allocate("a").unwrap_err();
    assert!(
        matches!(err, UidError::AlreadyLeased { uid, .. } if uid == a.uid()),
        "{err}"
    );
    assert_eq!(pool.lease_of("a").unwrap(), Some(a));
    assert_eq!(pool.lease_of("zz").unwrap(), None);
}

#[test]
fn two_pools_on_one_lock_dir_never_share_a_uid() {
    let dir = tempfile::tempdir().unwrap();
    let count = 200;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let pool = UidPool::new(FIRST, count, path).unwrap();
                (0..50)
                    .map(|i| pool.allocate(&format!("t{t}-{i}")).unwrap().uid())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a uid was handed out twice");
    assert_eq!(n, 200);
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".lease")), "{names:?}");
}

#[test]
fn adopt_takes_back_own_or_free_uids_only() {
    let dir = tempfile::tempdir().unwrap();
    let before = pool(dir.path(), 10);
    let a = before.allocate("a").unwrap();
    // The executor restarts: a new pool over the same directory.
    let after = pool(dir.path(), 10);
    assert_eq!(after.adopt("a", a.uid()).unwrap(), a);
    let err = after.adopt("b", a.uid()).unwrap_err();
    assert!(
        matches!(&err, UidError::HeldByOther { holder, .. } if holder == "a"),
        "{err}"
    );
    let free = if a.uid() == FIRST { FIRST + 1 } else { FIRST };
    assert_eq!(after.adopt("b", free).unwrap().uid(), free);
    assert!(matches!(
        after.adopt("c", FIRST + 10),
        Err(UidError::OutOfRange { .. })
    ));
    let err = after
        .release(&UidLease {
            uid: a.uid(),
            execution_id: "b".into(),
        })
        .unwrap_err();
    assert!(matches!(err, UidError::HeldByOther { .. }), "{err}");
}

#[test]
fn sweep_releases_leases_of_gone_executions() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 10);
    for id in ["live", "gone1", "gone2"] {
        pool.allocate(id).unwrap();
    }
    let released = pool.sweep(|id| id == "live").unwrap();
    let mut ids: Vec<&str> = released.iter().map(|l| l.execution_id()).collect();
    ids.sort();
    assert_eq!(ids, ["gone1", "gone2"]);
    let left: Vec<String> = pool
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| l.execution_id().to_string())
        .collect();
    assert_eq!(left, ["live"]);
}

#[test]
fn a_corrupt_lease_is_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 1);
    std::fs::write(dir.path().join(format!("{FIRST}.lease")), "garbage").unwrap();
    assert!(matches!(
        pool.allocate("a"),
        Err(UidError::Exhausted { .. })
    ));
}

#[test]
fn invalid_ranges_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let new = |first, count| UidPool::new(first, count, dir.path().to_path_buf());
    assert!(matches!(new(FIRST, 0), Err(UidError::InvalidRange { .. })));
    assert!(matches!(new(0, 10), Err(UidError::InvalidRange { .. })));
    assert!(matches!(
        new(65000, 1000),
        Err(UidError::InvalidRange { .. })
    ));
    assert!(matches!(
        new(u32::MAX - 5, 6),
        Err(UidError::InvalidRange { .. })
    ));
    assert!(new(u32::MAX - 6, 6).is_ok());
}

#[test]
fn the_default_range_clears_the_host_and_the_conventions() {
    // On this host: nothing in /etc/passwd, /etc/group, /etc/subuid or /etc/subgid.
    let dir = tempfile::tempdir().unwrap();
    UidPool::new(
        DEFAULT_FIRST_UID,
        DEFAULT_UID_COUNT,
        dir.path().to_path_buf(),
    )
    .unwrap();
    // Above every subordinate range useradd hands out (SUB_UID_MAX 600100000)
    // and systemd-nspawn's container ranges (up to 1879048191), below 2^31.
    const { assert!(DEFAULT_FIRST_UID > 1_879_048_191) };
    const { assert!(DEFAULT_FIRST_UID as u64 + DEFAULT_UID_COUNT as u64 <= 1 << 31) };
}

#[test]
fn overlaps_are_found_in_every_kind_of_file() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nodd:x:5:900005::/:/bin/sh\n";
    assert_eq!(
        find_overlap("/etc/passwd", passwd, 900_000, 65536),
        Some(("odd".into(), 900_005, 900_006))
    );
    assert_eq!(find_overlap("/etc/passwd", passwd, 2000, 10), None);
    let group = "root:x:0:\nvms:x:900010:alice\n";
    assert_eq!(
        find_overlap("/etc/group", group, 900_000, 65536),
        Some(("vms".into(), 900_010, 900_011))
    );
    // The 13th user's subordinate block from useradd covers 900000.
    let subuid = "alice:100000:65536\nuser13:886432:65536\n";
    assert_eq!(
        find_overlap("/etc/subuid", subuid, 900_000, 65536),
        Some(("user13".into(), 886_432, 951_968))
    );
    assert_eq!(
        find_overlap("/etc/subuid", subuid, DEFAULT_FIRST_UID, DEFAULT_UID_COUNT),
        None
    );
}
