//! Network interfaces (`/network-interfaces/{iface_id}`) and vsock (`/vsock`).

use serde::{Deserialize, Serialize};

use super::RateLimiter;

/// A guest network interface backed by a host TAP device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Guest MAC address, e.g. `"06:00:AC:10:00:02"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// Host TAP device name.
    pub host_dev_name: String,
    /// Interface id; must equal the `{iface_id}` of the path.
    pub iface_id: String,
    /// MTU advertised with VIRTIO_NET_F_MTU (68 to 65535); not advertised if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Receive rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Post-boot update of a network interface's rate limiters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialNetworkInterface {
    /// Interface id; must equal the `{iface_id}` of the path.
    pub iface_id: String,
    /// New receive rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New transmit rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// A vsock device backed by Unix sockets on the host. Firecracker listens on
/// `uds_path` for host-initiated connections (`CONNECT <port>\n`); for
/// guest-initiated ones it connects to `<uds_path>_<port>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vsock {
    /// Guest CID (at least 3).
    pub guest_cid: u32,
    /// Host Unix socket proxying the vsock connections.
    pub uds_path: String,
    /// Deprecated device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn network_interface_shape() {
        let n = NetworkInterface {
            guest_mac: Some("06:00:AC:10:00:02".into()),
            host_dev_name: "tap0".into(),
            iface_id: "eth0".into(),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"guest_mac": "06:00:AC:10:00:02", "host_dev_name": "tap0", "iface_id": "eth0"})
        );
    }

    #[test]
    fn vsock_shape() {
        let v: Vsock =
            serde_json::from_value(json!({"guest_cid": 3, "uds_path": "/v.sock"})).unwrap();
        assert_eq!(v.guest_cid, 3);
        assert_eq!(v.vsock_id, None);
    }
}
