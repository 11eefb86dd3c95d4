//! Persistent TAP devices, made with the TUN driver's ioctls on
//! `/dev/net/tun` by a thread inside the execution's namespace.
//!
//! The device is persistent so it outlives the descriptor that made it, and
//! Firecracker opens it later by name (with `IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR`, the flags used here). An owner uid lets a jailed VMM that runs
//! as that uid attach to it.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::NetworkError;

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the persistent TAP `name` in the calling thread's namespace,
/// owned by `owner` when given.
pub(crate) fn create(name: &str, owner: Option<u32>) -> Result<(), NetworkError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(NetworkError::InvalidConfig(format!(
            "TAP name {name:?} must have 1 to 15 bytes"
        )));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| NetworkError::io("open /dev/net/tun (is the tun module loaded?)", e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    let fd = tun.as_raw_fd();
    // SAFETY: `req` is a properly sized, initialised ifreq that outlives the call.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(NetworkError::io(
            format!("create TAP {name} (TUNSETIFF)"),
            std::io::Error::last_os_error(),
        ));
    }
    if let Some(uid) = owner {
        // SAFETY: TUNSETOWNER takes the uid as an integer argument.
        if unsafe { libc::ioctl(fd, libc::TUNSETOWNER, uid as libc::c_ulong) } < 0 {
            return Err(NetworkError::io(
                format!("set owner of TAP {name} to uid {uid}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: TUNSETPERSIST takes a boolean integer argument.
    if unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(NetworkError::io(
            format!("make TAP {name} persistent"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Lets `uid` attach to execution `net`'s TAP (a jailed VMM that runs as
/// that uid, given it after the network was made): the persistent device is
/// opened again by name and its owner set.
pub async fn give_to(net: &crate::ExecutionNetwork, uid: u32) -> Result<(), NetworkError> {
    let tap = net.tap.clone();
    crate::netns::run_in(&net.netns, move || create(&tap, Some(uid))).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<super::IfReq>(), 40);
    }
}
