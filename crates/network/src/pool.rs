//! The address pool: how it is cut into per-execution blocks, and the table
//! of which execution holds which block and which published host ports.
//!
//! Each execution gets one /29 block `B` of the pool:
//!
//! | address | where | role |
//! |---|---|---|
//! | `B+1/30` | host, `fcx<index>` | host end of the veth |
//! | `B+2/30` | namespace, `veth0` | namespace end of the veth |
//! | `B+5/30` | namespace, `tap0` | the guest's gateway (and default DNS) |
//! | `B+6/30` | guest, `eth0` | the guest |
//!
//! The table is pure data: it is changed under the manager's lock and never
//! touches the system.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{NetworkError, PortMapping, Protocol};

/// Addresses in one block.
pub const BLOCK_SIZE: u32 = 8;
/// Prefix length of a block.
pub const BLOCK_PREFIX: u8 = 29;
/// Prefix length of the veth link and of the TAP link.
pub const LINK_PREFIX: u8 = 30;

/// One execution's block of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Position of the block in the pool (0 for the first).
    pub index: u32,
    /// First address of the block.
    pub base: Ipv4Addr,
}

impl Block {
    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + offset)
    }
    /// The host end of the veth pair.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.at(1)
    }
    /// The namespace end of the veth pair.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.at(2)
    }
    /// The TAP address in the namespace: the guest's gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.at(5)
    }
    /// The guest's address.
    pub fn guest(&self) -> Ipv4Addr {
        self.at(6)
    }
    /// The /30 behind the TAP (gateway and guest), routed from the host.
    pub fn tap_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.at(4), LINK_PREFIX).unwrap_or_default()
    }
    /// The whole /29.
    pub fn net(&self) -> Ipv4Net {
        Ipv4Net::new(self.base, BLOCK_PREFIX).unwrap_or_default()
    }
}

/// The configured pool, cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    net: Ipv4Net,
}

impl Pool {
    /// Checks that `net` can be cut into blocks and names at most 2^21 of them.
    pub fn new(net: Ipv4Net) -> Result<Pool, NetworkError> {
        if net.prefix_len() > BLOCK_PREFIX || net.prefix_len() < 8 {
            return Err(NetworkError::InvalidConfig(format!(
                "pool {net} must have a prefix length between /8 and /{BLOCK_PREFIX} (one /{BLOCK_PREFIX} per execution), such as 10.213.0.0/16"
            )));
        }
        Ok(Pool { net: net.trunc() })
    }

    /// The pool as a network.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// How many blocks (so executions) the pool holds.
    pub fn blocks(&self) -> u32 {
        1 << (BLOCK_PREFIX - self.net.prefix_len())
    }

    /// Block number `index`, if the pool has it.
    pub fn block(&self, index: u32) -> Option<Block> {
        (index < self.blocks()).then(|| Block {
            index,
            base: Ipv4Addr::from(u32::from(self.net.network()) + index * BLOCK_SIZE),
        })
    }

    /// The block an address of the pool falls in.
    pub fn block_of(&self, addr: Ipv4Addr) -> Option<Block> {
        if !self.net.contains(&addr) {
            return None;
        }
        self.block((u32::from(addr) - u32::from(self.net.network())) / BLOCK_SIZE)
    }

    /// The block whose gateway is `gateway`, or why there is none.
    pub fn block_of_gateway(&self, gateway: Ipv4Addr) -> Result<Block, NetworkError> {
        let first = self.block(0).map(|b| b.gateway()).unwrap_or(gateway);
        let block = self
            .block_of(gateway)
            .ok_or(NetworkError::GatewayOutsidePool {
                gateway,
                pool: self.net,
                example: first,
            })?;
        if block.gateway() != gateway {
            return Err(NetworkError::GatewayNotUsable {
                gateway,
                pool: self.net,
                example: block.gateway(),
            });
        }
        Ok(block)
    }
}

/// Who holds which block and which published ports.
#[derive(Debug)]
pub(crate) struct Allocations {
    pool: Pool,
    /// Block index to execution id.
    blocks: BTreeMap<u32, String>,
    /// Execution id to block index.
    ids: HashMap<String, u32>,
    /// Published host port to execution id.
    ports: HashMap<(Protocol, u16), String>,
    /// Executions this manager created or adopted (the others were found on
    /// the host at start and are fair game for the sweep).
    live: HashSet<String>,
    /// Where the search for a free block starts: blocks are handed out round
    /// robin so a freed block (and its conntrack entries) rests before reuse.
    next: u32,
}

impl Allocations {
    /// An empty table over `pool`.
    pub fn new(pool: Pool) -> Allocations {
        Allocations {
            pool,
            blocks: BTreeMap::new(),
            ids: HashMap::new(),
            ports: HashMap::new(),
            live: HashSet::new(),
            next: 0,
        }
    }

    /// Whether execution `id` holds a block.
    pub fn holds(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Whether execution `id` was created or adopted by this manager.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.contains(id)
    }

    /// The executions this manager created or adopted.
    pub fn live_ids(&self) -> impl Iterator<Item = &str> {
        self.live.iter().map(String::as_str)
    }

    /// The execution holding block `index`, if any.
    pub fn owner(&self, index: u32) -> Option<&str> {
        self.blocks.get(&index).map(String::as_str)
    }

    /// Reserves a block (the one of `gateway` when given) and the ports of
    /// `ports` for `id`; nothing changes on error.
    pub fn reserve(
        &mut self,
        id: &str,
        gateway: Option<Ipv4Addr>,
        ports: &[PortMapping],
    ) -> Result<Block, NetworkError> {
        if self.holds(id) {
            return Err(NetworkError::AlreadyExists(id.to_string()));
        }
        self.check_ports(id, ports)?;
        let block = match gateway {
            Some(gw) => {
                let block = self.pool.block_of_gateway(gw)?;
                if let Some(owner) = self.blocks.get(&block.index) {
                    return Err(NetworkError::GatewayInUse {
                        gateway: gw,
                        owner: owner.clone(),
                    });
                }
                block
            }
            None => self.free_block()?,
        };
        if gateway.is_none() {
            self.next = (block.index + 1) % self.pool.blocks();
        }
        self.insert(id, block.index, ports);
        self.live.insert(id.to_string());
        Ok(block)
    }

    /// Records that `id` holds block `index` and `ports` (an execution found
    /// after a restart); fails if another execution holds any of them. `live`
    /// says whether this manager now owns it (adopted) or only found it.
    pub fn claim(
        &mut self,
        id: &str,
        index: u32,
        ports: &[PortMapping],
        live: bool,
    ) -> Result<Block, NetworkError> {
        let adopt = |reason: String| NetworkError::Adopt {
            id: id.to_string(),
            reason,
        };
        let block = self
            .pool
            .block(index)
            .ok_or_else(|| adopt(format!("block {index} is outside pool {}", self.pool.net())))?;
        match self.blocks.get(&index) {
            Some(owner) if owner != id => {
                return Err(adopt(format!(
                    "its block {} is held by execution {owner}",
                    block.net()
                )))
            }
            _ => {}
        }
        if let Some(&held) = self.ids.get(id) {
            if held != index {
                return Err(adopt(format!("it already holds block {held}")));
            }
        }
        self.check_ports(id, ports)?;
        self.insert(id, index, ports);
        if live {
            self.live.insert(id.to_string());
        }
        Ok(block)
    }

    /// Frees everything `id` holds.
    pub fn release(&mut self, id: &str) {
        if let Some(index) = self.ids.remove(id) {
            self.blocks.remove(&index);
        }
        self.live.remove(id);
        self.ports.retain(|_, owner| owner != id);
    }

    fn insert(&mut self, id: &str, index: u32, ports: &[PortMapping]) {
        self.blocks.insert(index, id.to_string());
        self.ids.insert(id.to_string(), index);
        for p in ports {
            self.ports.insert((p.protocol, p.host), id.to_string());
        }
    }

    fn check_ports(&self, id: &str, ports: &[PortMapping]) -> Result<(), NetworkError> {
        for (i, p) in ports.iter().enumerate() {
            if p.host == 0 || p.guest == 0 {
                return Err(NetworkError::InvalidPort {
                    host: p.host,
                    guest: p.guest,
                    protocol: p.protocol,
                });
            }
            if ports[..i]
                .iter()
                .any(|q| q.host == p.host && q.protocol == p.protocol)
            {
                return Err(NetworkError::PortInUse {
                    port: p.host,
                    protocol: p.protocol,
                    owner: "another mapping of this request".to_string(),
                });
            }
            match self.ports.get(&(p.protocol, p.host)) {
                Some(owner) if owner != id => {
                    return Err(NetworkError::PortInUse {
                        port: p.host,
                        protocol: p.protocol,
                        owner: format!("execution {owner}"),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn free_block(&self) -> Result<Block, NetworkError> {
        let n = self.pool.blocks();
        (0..n)
            .map(|i| (self.next + i) % n)
            .find(|i| !self.blocks.contains_key(i))
            .and_then(|i| self.pool.block(i))
            .ok_or(NetworkError::PoolExhausted {
                pool: self.pool.net(),
                blocks: n,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap()).unwrap()
    }

    fn tcp(host: u16, guest: u16) -> PortMapping {
        PortMapping {
            host,
            guest,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn block_addresses() {
        let b = pool("10.213.0.0/16").block(3).unwrap();
        assert_eq!(b.base, Ipv4Addr::new(10, 213, 0, 24));
        assert_eq!(b.host_addr(), Ipv4Addr::new(10, 213, 0, 25));
        assert_eq!(b.ns_addr(), Ipv4Addr::new(10, 213, 0, 26));
        assert_eq!(b.gateway(), Ipv4Addr::new(10, 213, 0, 29));
        assert_eq!(b.guest(), Ipv4Addr::new(10, 213, 0, 30));
        assert_eq!(b.tap_net().to_string(), "10.213.0.28/30");
        assert_eq!(pool("10.213.0.0/16").blocks(), 8192);
        assert!(pool("10.213.0.0/16").block(8192).is_none());
    }

    #[test]
    fn pools_that_cannot_be_cut_are_refused() {
        for bad in ["10.0.0.0/30", "10.0.0.0/32", "10.0.0.0/7"] {
            assert!(Pool::new(bad.parse().unwrap()).is_err(), "{bad}");
        }
        assert_eq!(pool("10.213.0.9/24").net().to_string(), "10.213.0.0/24");
    }

    #[test]
    fn allocation_never_collides_and_exhausts_cleanly() {
        let mut a = Allocations::new(pool("10.1.0.0/26")); // 8 blocks
        let mut seen = HashSet::new();
        for i in 0..8 {
            let b = a.reserve(&format!("e{i}"), None, &[]).unwrap();
            assert!(seen.insert(b.index), "block {} handed out twice", b.index);
        }
        let err = a.reserve("e8", None, &[]).unwrap_err();
        assert!(
            matches!(err, NetworkError::PoolExhausted { blocks: 8, .. }),
            "{err}"
        );
        a.release("e3");
        let b = a.reserve("e8", None, &[]).unwrap();
        assert_eq!(b.index, 3);
        assert!(matches!(
            a.reserve("e8", None, &[]),
            Err(NetworkError::AlreadyExists(_))
        ));
    }

    #[test]
    fn freed_blocks_rest_before_reuse() {
        let mut a = Allocations::new(pool("10.1.0.0/24"));
        let first = a.reserve("a", None, &[]).unwrap();
        a.release("a");
        let second = a.reserve("b", None, &[]).unwrap();
        assert_ne!(first.index, second.index);
    }

    #[test]
    fn gateway_must_be_a_blocks_tap_address() {
        let p = pool("10.213.0.0/16");
        assert_eq!(
            p.block_of_gateway(Ipv4Addr::new(10, 213, 0, 13))
                .unwrap()
                .index,
            1
        );
        let err = p
            .block_of_gateway(Ipv4Addr::new(10, 213, 0, 14))
            .unwrap_err();
        assert!(matches!(err, NetworkError::GatewayNotUsable { .. }));
        assert!(err.to_string().contains("10.213.0.13"), "{err}");
        let err = p
            .block_of_gateway(Ipv4Addr::new(192, 168, 1, 1))
            .unwrap_err();
        assert!(matches!(err, NetworkError::GatewayOutsidePool { .. }));
        assert!(err.to_string().contains("10.213.0.5"), "{err}");
    }

    #[test]
    fn requested_gateway_picks_its_block_once() {
        let mut a = Allocations::new(pool("10.213.0.0/16"));
        let gw = Ipv4Addr::new(10, 213, 1, 5);
        assert_eq!(a.reserve("a", Some(gw), &[]).unwrap().gateway(), gw);
        let err = a.reserve("b", Some(gw), &[]).unwrap_err();
        assert!(
            matches!(err, NetworkError::GatewayInUse { ref owner, .. } if owner == "a"),
            "{err}"
        );
        // An automatic allocation does not take it either.
        for i in 0..40 {
            assert_ne!(
                a.reserve(&format!("x{i}"), None, &[]).unwrap().gateway(),
                gw
            );
        }
    }

    #[test]
    fn published_port_conflicts_name_the_port() {
        let mut a = Allocations::new(pool("10.213.0.0/16"));
        a.reserve("a", None, &[tcp(8080, 80)]).unwrap();
        let err = a.reserve("b", None, &[tcp(8080, 81)]).unwrap_err();
        assert!(matches!(err, NetworkError::PortInUse { port: 8080, .. }));
        assert!(err.to_string().contains("8080/tcp"), "{err}");
        assert!(err.to_string().contains("execution a"), "{err}");
        assert!(!a.holds("b"), "a refused request must reserve nothing");
        // Same port, other protocol: fine.
        let udp = PortMapping {
            host: 8080,
            guest: 53,
            protocol: Protocol::Udp,
        };
        a.reserve("c", None, &[udp]).unwrap();
        // Twice in one request.
        let err = a
            .reserve("d", None, &[tcp(9000, 1), tcp(9000, 2)])
            .unwrap_err();
        assert!(
            matches!(err, NetworkError::PortInUse { port: 9000, .. }),
            "{err}"
        );
        assert!(matches!(
            a.reserve("e", None, &[tcp(0, 1)]),
            Err(NetworkError::InvalidPort { .. })
        ));
        a.release("a");
        a.reserve("b", None, &[tcp(8080, 81)]).unwrap();
    }

    #[test]
    fn claim_marks_blocks_and_ports_used() {
        let mut a = Allocations::new(pool("10.213.0.0/16"));
        a.claim("old", 0, &[tcp(7000, 7)], false).unwrap();
        assert!(!a.is_live("old"));
        a.claim("old", 0, &[tcp(7000, 7)], true).unwrap(); // idempotent
        assert!(a.is_live("old"));
        assert_ne!(a.reserve("new", None, &[]).unwrap().index, 0);
        assert!(a.reserve("n2", None, &[tcp(7000, 1)]).is_err());
        assert!(a.claim("other", 0, &[], true).is_err());
        assert!(a.claim("far", 9999, &[], true).is_err());
    }
}
