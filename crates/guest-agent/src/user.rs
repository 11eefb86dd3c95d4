//! The job's user: `uid[:gid]` or `name[:group]`, resolved against the
//! rootfs's own `/etc/passwd` and `/etc/group` (the user's image, not the
//! initrd's).
//!
//! The rules are Docker's: a numeric uid needs no passwd entry (its gid is
//! then 0 unless given); a name must have one; the supplementary groups are
//! those of `/etc/group` that list the user's name, plus the primary group.

use std::path::Path;

use crate::job::Credentials;
use crate::mounts::resolve_in_root;

/// One `/etc/passwd` or `/etc/group` entry, as far as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    id: u32,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` inside the rootfs at `root`; the error says what is
/// missing and where it was looked for.
pub fn resolve(root: &Path, spec: &str) -> Result<Credentials, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group == Some("") {
        return Err(format!("user {spec:?} is not uid[:gid] or name[:group]"));
    }
    let passwd = read_db(root, "/etc/passwd");
    let groups = read_db(root, "/etc/group");
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.id == uid).cloned().or(Some(Entry {
            name: String::new(),
            id: uid,
            gid: 0,
            members: Vec::new(),
        })),
        Err(_) => passwd.iter().find(|e| e.name == user).cloned(),
    };
    let Some(entry) = entry else {
        return Err(format!(
            "user `{user}` is not in the rootfs's /etc/passwd; give a uid or add the user to the image"
        ));
    };
    let gid = match group {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups.iter().find(|e| e.name == g) {
                Some(e) => e.id,
                None => {
                    return Err(format!(
                        "group `{g}` is not in the rootfs's /etc/group; give a gid or add the group to the image"
                    ))
                }
            },
        },
    };
    let mut supplementary = vec![gid];
    if !entry.name.is_empty() {
        for g in &groups {
            if g.members.contains(&entry.name) && !supplementary.contains(&g.id) {
                supplementary.push(g.id);
            }
        }
    }
    Ok(Credentials {
        uid: entry.id,
        gid,
        groups: supplementary,
    })
}

/// Reads a passwd-style file of the rootfs: `name:x:id:fourth:...`, where
/// the fourth field is the gid (passwd) or the members (group); both
/// readings are kept and the caller uses the one its file has. A missing
/// or unreadable file is empty; malformed lines are skipped.
fn read_db(root: &Path, path: &str) -> Vec<Entry> {
    let Ok(text) = resolve_in_root(root, path).and_then(std::fs::read) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 || line.starts_with('#') {
                return None;
            }
            let id = fields.get(2)?.parse().ok()?;
            let fourth = fields.get(3).copied().unwrap_or_default();
            Some(Entry {
                name: fields[0].to_string(),
                id,
                gid: fourth.parse().unwrap_or(0),
                members: fourth
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:100::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nusers:x:100:alice\nalice:x:1000:\nwheel:x:10:alice,bob\n",
        )
        .unwrap();
        dir
    }

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn names_and_numbers_resolve() {
        let root = rootfs();
        let r = |spec| resolve(root.path(), spec);
        assert_eq!(r("alice"), Ok(creds(1000, 1000, &[1000, 100, 10])));
        assert_eq!(r("1000"), Ok(creds(1000, 1000, &[1000, 100, 10])));
        assert_eq!(r("1000:1000"), Ok(creds(1000, 1000, &[1000, 100, 10])));
        assert_eq!(r("bob:wheel"), Ok(creds(1001, 10, &[10])));
        assert_eq!(r("4242"), Ok(creds(4242, 0, &[0])));
        assert_eq!(r("4242:77"), Ok(creds(4242, 77, &[77])));
        assert_eq!(r("root"), Ok(creds(0, 0, &[0])));
    }

    #[test]
    fn unknown_names_are_errors() {
        let root = rootfs();
        let err = resolve(root.path(), "carol").unwrap_err();
        assert!(
            err.starts_with("user `carol` is not in the rootfs's /etc/passwd"),
            "{err}"
        );
        let err = resolve(root.path(), "alice:nogroup").unwrap_err();
        assert!(
            err.starts_with("group `nogroup` is not in the rootfs's /etc/group"),
            "{err}"
        );
        assert!(resolve(root.path(), ":1").is_err());
        assert!(resolve(root.path(), "1:").is_err());
        // No passwd at all: numbers still work.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(empty.path(), "7:8"), Ok(creds(7, 8, &[8])));
    }
}
