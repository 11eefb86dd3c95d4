//! The values callers hand in and get back: configuration, requests, and the
//! record of one execution's network (serialisable, so an executor can keep it
//! across its own restart and [`adopt`](crate::Network::adopt) it).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::pool::LINK_PREFIX;

/// How an executor's executions are networked. Missing fields take their
/// defaults when decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The addresses executions get, one /29 each (default 10.213.0.0/16:
    /// 8192 executions). Each executor process needs a pool of its own.
    pub pool: Ipv4Net,
    /// Whether executions may reach the outside (NAT through the host's
    /// default route). Default: on.
    pub egress: bool,
    /// When egress is on and this is not empty, the only destinations
    /// executions may reach.
    pub egress_allow: Vec<Ipv4Net>,
    /// The DNS server guests are told to use. Default: their gateway, which
    /// forwards to `dns_upstream`.
    pub dns: Option<Ipv4Addr>,
    /// Where DNS sent to a gateway goes. Default: the first non-loopback
    /// IPv4 `nameserver` of the host's `/etc/resolv.conf`; without one, the
    /// gateway does not answer DNS.
    pub dns_upstream: Option<Ipv4Addr>,
    /// The sweep removes only objects of executions whose ids start with
    /// this (default: empty, every id): an executor passes the prefix it
    /// gives its executions' ids, so that it never sweeps the networks of
    /// another executor sharing the pool.
    #[serde(default)]
    pub sweep_scope: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            pool: Ipv4Net::new(Ipv4Addr::new(10, 213, 0, 0), 16).unwrap_or_default(),
            egress: true,
            egress_allow: Vec::new(),
            dns: None,
            dns_upstream: None,
            sweep_scope: String::new(),
        }
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name nftables and users know it by.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

/// A host port published to a guest port (`ports_to_bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// Port on every address of the host.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
    /// Protocol (default tcp).
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

/// What one execution asks of the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// Ports to publish.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The gateway (and DNS) address the guest is given (`gateway_ip`); it
    /// picks the block, so it must be the gateway of a block of the pool.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The uid allowed to attach to the TAP (a jailed VMM's); default root only.
    #[serde(default)]
    pub tap_owner: Option<u32>,
    /// Whether this execution may reach the outside; `None`: the pool's
    /// setting. Only `false` can differ from a pool whose egress is off.
    #[serde(default)]
    pub egress: Option<bool>,
}

/// One execution's network, as created: everything needed to configure the
/// VMM and the guest, and to remove it all later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionNetwork {
    /// The execution id.
    pub id: String,
    /// The namespace file; the VMM must run in this namespace (the jailer's
    /// `--netns`, or [`ExecutionNetwork::open_netns`] in `pre_exec`).
    pub netns: PathBuf,
    /// The TAP device in the namespace (Firecracker's `host_dev_name`).
    pub tap: String,
    /// The MAC address to give the guest's interface (`guest_mac`).
    pub guest_mac: String,
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// The guest's gateway (the TAP's address).
    pub gateway: Ipv4Addr,
    /// Prefix length of the guest's link.
    pub prefix_len: u8,
    /// The guest's DNS server.
    pub dns: Ipv4Addr,
    /// The host end of the veth pair.
    pub host_veth: String,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Whether the execution may reach the outside.
    pub egress: bool,
    /// The pool block the execution holds.
    pub block: u32,
}

impl ExecutionNetwork {
    /// The guest's netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Net::new(self.guest_ip, self.prefix_len)
            .map(|n| n.netmask())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The Linux kernel's `ip=` argument that configures `eth0` with the
    /// guest's address, gateway and DNS:
    /// `ip=<guest>::<gateway>:<netmask>::eth0:off:<dns>`.
    pub fn kernel_ip_arg(&self) -> String {
        format!(
            "ip={}::{}:{}::eth0:off:{}",
            self.guest_ip,
            self.gateway,
            self.netmask(),
            self.dns
        )
    }

    /// Opens the namespace, to enter it in `Command::pre_exec` (see
    /// [`NetnsFd::enter`](crate::netns::NetnsFd::enter)).
    pub fn open_netns(&self) -> Result<crate::netns::NetnsFd, crate::NetworkError> {
        crate::netns::NetnsFd::open(&self.netns)
    }

    /// A locally administered MAC derived from the guest's address.
    pub(crate) fn mac_for(ip: Ipv4Addr) -> String {
        let [a, b, c, d] = ip.octets();
        format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    }

    /// The prefix length guests get.
    pub(crate) const PREFIX: u8 = LINK_PREFIX;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExecutionNetwork {
        ExecutionNetwork {
            id: "e1".into(),
            netns: "/run/netns/fcx-e1".into(),
            tap: "tap0".into(),
            guest_mac: ExecutionNetwork::mac_for(Ipv4Addr::new(10, 213, 0, 6)),
            guest_ip: Ipv4Addr::new(10, 213, 0, 6),
            gateway: Ipv4Addr::new(10, 213, 0, 5),
            prefix_len: 30,
            dns: Ipv4Addr::new(10, 213, 0, 5),
            host_veth: "fcx0".into(),
            ports: vec![],
            egress: true,
            block: 0,
        }
    }

    #[test]
    fn kernel_ip_argument() {
        assert_eq!(
            sample().kernel_ip_arg(),
            "ip=10.213.0.6::10.213.0.5:255.255.255.252::eth0:off:10.213.0.5"
        );
        assert_eq!(sample().guest_mac, "06:00:0a:d5:00:06");
    }

    #[test]
    fn records_round_trip_through_json() {
        let net = sample();
        let text = serde_json::to_string(&net).unwrap();
        assert_eq!(
            serde_json::from_str::<ExecutionNetwork>(&text).unwrap(),
            net
        );
    }

    #[test]
    fn config_decodes_with_defaults() {
        let c: NetworkConfig = serde_json::from_str(r#"{"egress": false}"#).unwrap();
        assert_eq!(c.pool.to_string(), "10.213.0.0/16");
        assert!(!c.egress);
        assert!(serde_json::from_str::<NetworkConfig>(r#"{"egres": false}"#).is_err());
    }

    #[test]
    fn port_mappings_decode_with_tcp_by_default() {
        let p: PortMapping = serde_json::from_str(r#"{"host": 8080, "guest": 80}"#).unwrap();
        assert_eq!(p.protocol, Protocol::Tcp);
        let p: PortMapping =
            serde_json::from_str(r#"{"host": 53, "guest": 53, "protocol": "udp"}"#).unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        assert!(
            serde_json::from_str::<PortMapping>(r#"{"host": 1, "guest": 1, "proto": "udp"}"#)
                .is_err()
        );
    }
}
