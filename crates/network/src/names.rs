//! How network objects are named after an execution, and which execution ids
//! may name them.
//!
//! | object | name |
//! |---|---|
//! | namespace file | `/run/netns/fcx-<id>` (where `ip netns` looks) |
//! | host veth | `fcx<hex>`, `<hex>` the block's first address divided by 8 (unique on the host whatever the pool), alias `fcx:<id>` |
//! | namespace veth | `veth0` |
//! | TAP device | `tap0` |
//! | nftables rules | comment `fcx:<id>` |

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::NetworkError;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of every fcexec namespace file, host link and rule comment.
pub const PREFIX: &str = "fcx";
/// The veth end inside an execution's namespace.
pub const NS_VETH: &str = "veth0";
/// The TAP device inside an execution's namespace, handed to Firecracker.
pub const TAP: &str = "tap0";
/// The longest execution id accepted (a rule comment holds at most 128 bytes).
pub const MAX_ID_LEN: usize = 100;

/// Checks that `id` can name a namespace file and a rule comment.
pub fn validate_id(id: &str) -> Result<(), NetworkError> {
    let bad = |reason| {
        Err(NetworkError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("it is longer than 100 bytes");
    }
    if id.starts_with('.') {
        return bad("it starts with '.'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// The namespace file of execution `id`.
pub fn netns_path(id: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(format!("{PREFIX}-{id}"))
}

/// The execution id a namespace file name belongs to, if it is fcexec's.
pub fn id_of_netns(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix("fcx-")
        .filter(|id| validate_id(id).is_ok())
}

/// The host-side veth of the block starting at `base` (at most 11 bytes).
pub fn host_veth(base: Ipv4Addr) -> String {
    format!("{PREFIX}{:x}", u32::from(base) >> 3)
}

/// The first address of the block a host link name belongs to, if the name
/// is fcexec's.
pub fn block_of_host_veth(name: &str) -> Option<Ipv4Addr> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let n = u32::from_str_radix(digits, 16).ok()?;
    n.checked_mul(8).map(Ipv4Addr::from).filter(|_| n < 1 << 29)
}

/// The tag (rule comment, link alias) carried by execution `id`'s objects.
pub fn tag(id: &str) -> String {
    format!("{PREFIX}:{id}")
}

/// The execution id a tag names, if it is fcexec's.
pub fn id_of_tag(tag: &str) -> Option<&str> {
    tag.strip_prefix("fcx:")
        .filter(|id| validate_id(id).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_name_objects_are_refused() {
        for bad in ["", ".hidden", "a/b", "..", "a b", "é", &"x".repeat(101)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["exec-1", "a.b_c", &"x".repeat(100)] {
            validate_id(good).unwrap();
        }
    }

    #[test]
    fn names_round_trip() {
        let base = Ipv4Addr::new(10, 213, 0, 24);
        assert_eq!(host_veth(base), "fcx15aa003");
        assert!(host_veth(Ipv4Addr::new(255, 255, 255, 248)).len() <= 15);
        assert_eq!(block_of_host_veth("fcx15aa003"), Some(base));
        assert_eq!(block_of_host_veth("fcx"), None);
        assert_eq!(block_of_host_veth("fcxg"), None);
        assert_eq!(block_of_host_veth("fcx-e1"), None);
        assert_eq!(block_of_host_veth("fcx1ffffffff"), None);
        assert_eq!(id_of_tag(&tag("job-1")), Some("job-1"));
        assert_eq!(id_of_tag("fcx-pool:x"), None);
        let path = netns_path("e1");
        assert_eq!(path.to_str(), Some("/run/netns/fcx-e1"));
        assert_eq!(id_of_netns("fcx-e1"), Some("e1"));
        assert_eq!(id_of_netns("other"), None);
    }
}
