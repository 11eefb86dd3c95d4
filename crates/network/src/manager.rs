//! [`Network`]: the per-executor manager. It holds the allocation table and
//! builds or tears down one execution's objects, all or nothing.
//!
//! Creation, in order (each step undone by [`Network::remove`]'s teardown):
//!
//! 1. reserve a block and the published ports (refusing conflicts);
//! 2. turn on the host's IPv4 forwarding if it is off;
//! 3. create the namespace `/run/netns/fcx-<id>`;
//! 4. create the veth pair `fcx<hex>` (host, alias `fcx:<id>`) / `veth0`
//!    (namespace), address and raise the host end;
//! 5. inside the namespace: the persistent TAP `tap0`, IPv4 forwarding, the
//!    namespace's nftables table, addresses on `veth0` and `tap0`, `lo` up,
//!    a default route via the host end;
//! 6. on the host: a route to the TAP's /30 via the namespace end, and the
//!    DNAT rules of the published ports.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use crate::firewall::{self, PoolPolicy};
use crate::names::{self, NS_VETH, TAP};
use crate::netns::{self, NetnsFd};
use crate::pool::{Allocations, Block, Pool, LINK_PREFIX};
use crate::{
    links, tap, ExecutionNetwork, NetworkConfig, NetworkError, NetworkRequest, PortMapping,
    Protocol,
};

/// The network manager of one executor: cheap to clone, all clones share
/// one allocation table.
#[derive(Clone, Debug)]
pub struct Network {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The validated configuration.
    pub(crate) config: NetworkConfig,
    /// The pool, cut into blocks.
    pub(crate) pool: Pool,
    /// Resolver behind the gateways, if any.
    pub(crate) dns_upstream: Option<Ipv4Addr>,
    /// Which execution holds which block and port.
    pub(crate) alloc: Mutex<Allocations>,
    /// Netlink in the host namespace.
    pub(crate) host: rtnetlink::Handle,
}

impl Network {
    /// Validates `config`, checks that the host can do it (root, `/dev/net/tun`,
    /// netlink, nftables), installs the pool's firewall rules, and records
    /// the blocks and ports that existing executions of this pool hold (they
    /// stay taken until [`adopt`](Network::adopt)ed, removed or swept).
    pub async fn new(config: NetworkConfig) -> Result<Network, NetworkError> {
        let pool = validate(&config)?;
        if !nix::unistd::geteuid().is_root() {
            return Err(NetworkError::InvalidConfig("execution networking needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run fcexec as root or without networking".into()));
        }
        std::fs::metadata("/dev/net/tun").map_err(|e| {
            NetworkError::io("find /dev/net/tun (load the tun module: modprobe tun)", e)
        })?;
        let dns_upstream = config.dns_upstream.or_else(resolv_conf_nameserver);
        if config.dns.is_none() && dns_upstream.is_none() {
            warn!("no IPv4 nameserver outside loopback in /etc/resolv.conf: gateways will not answer DNS; set dns or dns_upstream");
        }
        let host = netns::netlink_host()?;
        let policy = PoolPolicy {
            pool: pool.net(),
            egress: config.egress,
            egress_allow: config.egress_allow.clone(),
            dns_upstream,
        };
        firewall::install_pool(&policy).await?;
        let network = Network {
            inner: Arc::new(Inner {
                config,
                pool,
                dns_upstream,
                alloc: Mutex::new(Allocations::new(pool)),
                host,
            }),
        };
        network.claim_existing().await?;
        info!(pool = %pool.net(), egress = network.inner.config.egress, "execution networking ready");
        Ok(network)
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetworkConfig {
        &self.inner.config
    }

    pub(crate) fn alloc(&self) -> MutexGuard<'_, Allocations> {
        self.inner.alloc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates execution `id`'s network: all of it, or (on error) nothing.
    /// A host port already published, or in use by a host process, is refused
    /// naming the port.
    pub async fn create(
        &self,
        id: &str,
        request: &NetworkRequest,
    ) -> Result<ExecutionNetwork, NetworkError> {
        names::validate_id(id)?;
        let egress = match (request.egress, self.inner.config.egress) {
            (Some(true), false) => {
                return Err(NetworkError::InvalidConfig(format!(
                    "execution {id:?} asks for egress, which is off for this executor's pool; \
                     leave egress out or turn it on in the executor's network configuration"
                )))
            }
            (asked, pool) => asked.unwrap_or(pool),
        };
        let block = self.alloc().reserve(id, request.gateway, &request.ports)?;
        if let Err(e) = ports_free_on_host(id, &request.ports).await {
            self.alloc().release(id);
            return Err(e);
        }
        let net = ExecutionNetwork {
            egress,
            ..self.record(id, block, &request.ports)
        };
        if net.netns.exists() {
            self.alloc().release(id);
            return Err(NetworkError::io(
                format!("create namespace file {}", net.netns.display()),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it exists: a leftover of an earlier run? `sweep` removes it",
                ),
            ));
        }
        match self.build(&net, block, request.tap_owner).await {
            Ok(()) => {
                info!(execution = id, guest = %net.guest_ip, netns = %net.netns.display(), "created execution network");
                Ok(net)
            }
            Err(e) => {
                warn!(execution = id, error = %e, "creating the execution network failed; removing what was made");
                if let Err(undo) = self.teardown(&net).await {
                    warn!(execution = id, error = %undo, "could not remove all of a half-made network; sweep will");
                } else {
                    self.alloc().release(id);
                }
                Err(e)
            }
        }
    }

    /// Removes execution `net.id`'s network and frees its block and ports.
    /// Removing what is already gone is not an error.
    pub async fn remove(&self, net: &ExecutionNetwork) -> Result<(), NetworkError> {
        self.teardown(net).await?;
        self.alloc().release(&net.id);
        info!(execution = %net.id, "removed execution network");
        Ok(())
    }

    /// Marks `net`'s block and ports as used by it again (after an executor
    /// restart), so new executions do not collide with it and the sweep keeps it.
    pub fn adopt(&self, net: &ExecutionNetwork) -> Result<(), NetworkError> {
        names::validate_id(&net.id)?;
        let bad = |reason: String| NetworkError::Adopt {
            id: net.id.clone(),
            reason,
        };
        let block = self.inner.pool.block_of(net.guest_ip).ok_or_else(|| {
            bad(format!(
                "guest address {} is outside pool {}",
                net.guest_ip,
                self.inner.pool.net()
            ))
        })?;
        if block.index != net.block || block.guest() != net.guest_ip {
            return Err(bad(format!(
                "guest address {} is not that of block {}",
                net.guest_ip, net.block
            )));
        }
        self.alloc().claim(&net.id, block.index, &net.ports, true)?;
        debug!(execution = %net.id, "adopted execution network");
        Ok(())
    }

    fn record(&self, id: &str, block: Block, ports: &[PortMapping]) -> ExecutionNetwork {
        ExecutionNetwork {
            id: id.to_string(),
            netns: names::netns_path(id),
            tap: TAP.to_string(),
            guest_mac: ExecutionNetwork::mac_for(block.guest()),
            guest_ip: block.guest(),
            gateway: block.gateway(),
            prefix_len: ExecutionNetwork::PREFIX,
            dns: self.inner.config.dns.unwrap_or(block.gateway()),
            host_veth: names::host_veth(block.base),
            ports: ports.to_vec(),
            egress: self.inner.config.egress,
            block: block.index,
        }
    }

    async fn build(
        &self,
        net: &ExecutionNetwork,
        block: Block,
        tap_owner: Option<u32>,
    ) -> Result<(), NetworkError> {
        let host = &self.inner.host;
        netns::enable_host_forwarding()?;
        netns::create(&net.netns).await?;
        let ns = NetnsFd::open(&net.netns)?;
        let host_index =
            links::create_veth(host, &net.host_veth, &names::tag(&net.id), NS_VETH, &ns).await?;
        netns::write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.host_veth),
            "1",
        )?;
        links::address_and_up(
            host,
            host_index,
            &net.host_veth,
            Some(net30(block.host_addr())),
        )
        .await?;

        let upstream = if self.inner.config.dns.is_none() {
            self.inner.dns_upstream
        } else {
            None
        };
        let ns_rules = firewall::namespace_commands(&block, upstream, net.egress);
        netns::run_in(&net.netns, move || {
            tap::create(TAP, tap_owner)?;
            netns::write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
            firewall::apply_blocking(ns_rules, "install the namespace's rules")
        })
        .await?;

        let inside = netns::netlink_in(&net.netns).await?;
        for (name, addr) in [
            ("lo", None),
            (NS_VETH, Some(net30(block.ns_addr()))),
            (TAP, Some(net30(block.gateway()))),
        ] {
            let index = links::link_index(&inside, name).await?.ok_or_else(|| {
                NetworkError::io(
                    format!("find {name} in {}", net.netns.display()),
                    std::io::Error::other("missing"),
                )
            })?;
            links::address_and_up(&inside, index, name, addr).await?;
        }
        links::add_route(&inside, Ipv4Net::default(), block.host_addr()).await?;
        links::add_route(host, block.tap_net(), block.ns_addr()).await?;
        firewall::publish(&net.id, net.guest_ip, &net.ports).await
    }

    /// Removes every object of `net`, going on past failures; returns the first.
    pub(crate) async fn teardown(&self, net: &ExecutionNetwork) -> Result<(), NetworkError> {
        let host = &self.inner.host;
        let tag = names::tag(&net.id);
        let mut first: Option<NetworkError> = None;
        let mut note = |r: Result<(), NetworkError>| {
            if let Err(e) = r {
                warn!(execution = %net.id, error = %e, "removing part of an execution network failed");
                first.get_or_insert(e);
            }
        };
        // Host rules exist only for published ports (the namespace's own
        // table goes with the namespace): without ports, no `nft` run.
        if !net.ports.is_empty() {
            let rule_tag = tag.clone();
            note(
                firewall::delete_where(move |r| r.comment.as_deref() == Some(rule_tag.as_str()))
                    .await
                    .map(|_| ()),
            );
        }
        // The host veth, unless another execution holds that name now.
        let ours = match links::list_links(host).await {
            Ok(all) => all
                .iter()
                .any(|l| l.name == net.host_veth && l.alias.as_deref().map_or(true, |a| a == tag)),
            Err(e) => {
                note(Err(e));
                false
            }
        };
        if ours {
            note(links::delete_link(host, &net.host_veth).await.map(|_| ()));
        }
        if let Some(block) = self.inner.pool.block(net.block) {
            match links::routes(host).await {
                Ok(routes) => {
                    for r in routes.iter().filter(|r| r.destination == block.tap_net()) {
                        if r.gateway == Some(block.ns_addr()) {
                            note(links::delete_route(host, r).await);
                        }
                    }
                }
                Err(e) => note(Err(e)),
            }
        }
        note(netns::remove(&net.netns).map(|_| ()));
        first.map_or(Ok(()), Err)
    }

    /// Records blocks and ports held by executions of this pool that already
    /// exist on the host (found by their host veth and DNAT rules).
    async fn claim_existing(&self) -> Result<(), NetworkError> {
        let pool = self.inner.pool;
        let mut found: HashMap<String, (u32, Vec<PortMapping>)> = HashMap::new();
        for link in links::list_links(&self.inner.host).await? {
            let (Some(base), Some(id)) = (
                names::block_of_host_veth(&link.name),
                link.alias.as_deref().and_then(names::id_of_tag),
            ) else {
                continue;
            };
            let Some(index) = pool.block_of(base).map(|b| b.index) else {
                continue;
            };
            let addrs = links::addresses(&self.inner.host, link.index).await?;
            if addrs
                .iter()
                .any(|a| pool.block_of(a.addr()).map(|b| b.index) == Some(index))
            {
                found.entry(id.to_string()).or_insert((index, Vec::new()));
            }
        }
        for rule in firewall::list().await? {
            let (Some(id), Some(addr), Some((protocol, port))) = (
                rule.comment.as_deref().and_then(names::id_of_tag),
                rule.dnat,
                rule.dport,
            ) else {
                continue;
            };
            let Some(block) = pool.block_of(addr) else {
                continue;
            };
            if rule.chain != "prerouting" {
                continue;
            }
            let entry = found
                .entry(id.to_string())
                .or_insert((block.index, Vec::new()));
            // The guest port is not needed to hold the host port.
            entry.1.push(PortMapping {
                host: port,
                guest: port,
                protocol,
            });
        }
        let mut alloc = self.alloc();
        for (id, (index, ports)) in found {
            match alloc.claim(&id, index, &ports, false) {
                Ok(_) => {
                    info!(execution = %id, block = index, "found an existing execution network; it stays until adopted, removed or swept")
                }
                Err(e) => {
                    warn!(execution = %id, error = %e, "existing execution network conflicts with another")
                }
            }
        }
        Ok(())
    }
}

/// Checks a configuration and cuts its pool.
fn validate(config: &NetworkConfig) -> Result<Pool, NetworkError> {
    let pool = Pool::new(config.pool)?;
    let invalid = |m: String| Err(NetworkError::InvalidConfig(m));
    if !config.egress && !config.egress_allow.is_empty() {
        return invalid("egress_allow is set but egress is off, so nothing would be allowed; turn egress on or empty egress_allow".into());
    }
    if let Some(net) = config
        .egress_allow
        .iter()
        .find(|n| n.contains(&pool.net()) || pool.net().contains(*n))
    {
        return invalid(format!("egress_allow entry {net} overlaps the pool {}: executions may not reach each other; allow only outside addresses", pool.net()));
    }
    if let Some(dns) = config.dns.filter(|d| pool.net().contains(d)) {
        return invalid(format!(
            "dns {dns} lies in the pool {}; leave dns unset to use each guest's gateway",
            pool.net()
        ));
    }
    Ok(pool)
}

/// A /30 address for `addr`.
fn net30(addr: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(addr, LINK_PREFIX).unwrap_or_default()
}

/// Refuses a host port that an execution of another pool (another executor)
/// publishes, or that a process on the host uses (DNAT would silently take
/// its traffic).
async fn ports_free_on_host(id: &str, ports: &[PortMapping]) -> Result<(), NetworkError> {
    if ports.is_empty() {
        return Ok(());
    }
    for rule in firewall::list().await? {
        let Some(owner) = rule.comment.as_deref().and_then(names::id_of_tag) else {
            continue;
        };
        if let Some(p) = ports
            .iter()
            .find(|p| rule.dport == Some((p.protocol, p.host)) && owner != id)
        {
            return Err(NetworkError::PortInUse {
                port: p.host,
                protocol: p.protocol,
                owner: format!("execution {owner}"),
            });
        }
    }
    for p in ports {
        let addr = (Ipv4Addr::UNSPECIFIED, p.host);
        let taken = match p.protocol {
            Protocol::Tcp => TcpListener::bind(addr).err(),
            Protocol::Udp => UdpSocket::bind(addr).err(),
        };
        if let Some(e) = taken {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(NetworkError::PortInUse {
                    port: p.host,
                    protocol: p.protocol,
                    owner: "a process on the host".into(),
                });
            }
        }
    }
    Ok(())
}

/// The first IPv4 nameserver of `/etc/resolv.conf` that is not on loopback.
fn resolv_conf_nameserver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    parse_nameserver(&text)
}

fn parse_nameserver(text: &str) -> Option<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .find(|a| !a.is_loopback() && !a.is_unspecified())
}

#[cfg(test)]
mod tests {
    use crate::NetworkConfig;

    #[test]
    fn configurations_that_break_isolation_are_refused() {
        let base = NetworkConfig::default();
        super::validate(&base).unwrap();
        let cases = [
            (
                NetworkConfig {
                    egress: false,
                    egress_allow: vec!["1.1.1.0/24".parse().unwrap()],
                    ..base.clone()
                },
                "egress is off",
            ),
            (
                NetworkConfig {
                    egress_allow: vec!["10.0.0.0/8".parse().unwrap()],
                    ..base.clone()
                },
                "overlaps the pool",
            ),
            (
                NetworkConfig {
                    egress_allow: vec!["10.213.4.0/24".parse().unwrap()],
                    ..base.clone()
                },
                "overlaps the pool",
            ),
            (
                NetworkConfig {
                    dns: Some("10.213.0.5".parse().unwrap()),
                    ..base.clone()
                },
                "lies in the pool",
            ),
            (
                NetworkConfig {
                    pool: "10.213.0.0/30".parse().unwrap(),
                    ..base.clone()
                },
                "/29",
            ),
        ];
        for (config, message) in cases {
            let err = super::validate(&config).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn resolver_skips_loopback() {
        let text = "# x\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\n";
        assert_eq!(
            super::parse_nameserver(text),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(super::parse_nameserver("nameserver 127.0.0.1"), None);
    }
}
