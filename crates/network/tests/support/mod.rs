//! Helpers for the root-only network tests: a stand-in guest and a stand-in
//! outside world, both namespaces the test makes, and TCP probes run inside
//! namespaces. No traffic leaves the namespaces the tests create (and the
//! host's loopback).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fcexec_network::{
    links, netns, ExecutionNetwork, Network, NetworkConfig, NetworkRequest, PortMapping, Protocol,
};
use ipnet::Ipv4Net;

/// A TCP port mapping.
pub fn tcp(host: u16, guest: u16) -> PortMapping {
    PortMapping {
        host,
        guest,
        protocol: Protocol::Tcp,
    }
}

/// A request publishing one port and nothing else.
pub fn publish(port: PortMapping) -> NetworkRequest {
    NetworkRequest {
        ports: vec![port],
        ..Default::default()
    }
}

/// The sweep test sweeps with no grace period, so it could take another
/// test's create in progress for a dead one: tests hold this for reading,
/// the sweep test for writing.
pub static SWEEP_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The manager of test number `n`'s pool, after sweeping what an earlier,
/// failed run may have left in it.
pub async fn fresh(n: u8, egress: bool) -> Network {
    let network = Network::new(config(n, egress)).await.unwrap();
    let report = network.sweep(&[]).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    network
}

/// Whether the test can run here; records a skip when it cannot.
pub fn ready(test: &str) -> bool {
    testkit::init_logging();
    if !nix::unistd::geteuid().is_root() {
        testkit::skip(test, "network tests need root");
        return false;
    }
    let nft = fcexec_network::check()
        .into_iter()
        .find(|(name, _)| name == "nftables");
    if !matches!(nft, Some((_, Ok(_)))) {
        testkit::skip(test, "network tests need nft");
        return false;
    }
    true
}

/// A pool of 64 blocks of its own for test number `n` (outside the default pool).
pub fn config(n: u8, egress: bool) -> NetworkConfig {
    NetworkConfig {
        pool: Ipv4Net::new(Ipv4Addr::new(10, 214, n * 2, 0), 23).unwrap(),
        egress,
        dns_upstream: Some(Ipv4Addr::new(192, 0, 2, 53)),
        ..NetworkConfig::default()
    }
}

/// Replaces the execution's TAP (which has no VM behind it) by a veth named
/// `tap0` whose other end, `eth0`, sits in a new namespace standing in for the
/// guest, configured as the guest's kernel would be from `ip=`.
pub async fn attach_guest(net: &ExecutionNetwork) -> PathBuf {
    let guest = PathBuf::from(format!("/run/netns/fcexec-test-guest-{}", net.id));
    let _ = netns::remove(&guest);
    netns::create(&guest).await.unwrap();
    let inside = netns::netlink_in(&net.netns).await.unwrap();
    assert!(
        links::delete_link(&inside, &net.tap).await.unwrap(),
        "no TAP in {}",
        net.netns.display()
    );
    let fd = netns::NetnsFd::open(&guest).unwrap();
    let tap = links::create_veth(&inside, &net.tap, "test", "eth0", &fd)
        .await
        .unwrap();
    let gw = Ipv4Net::new(net.gateway, net.prefix_len).unwrap();
    links::address_and_up(&inside, tap, &net.tap, Some(gw))
        .await
        .unwrap();
    let g = netns::netlink_in(&guest).await.unwrap();
    let lo = links::link_index(&g, "lo").await.unwrap().unwrap();
    links::address_and_up(&g, lo, "lo", None).await.unwrap();
    let eth0 = links::link_index(&g, "eth0").await.unwrap().unwrap();
    let addr = Ipv4Net::new(net.guest_ip, net.prefix_len).unwrap();
    links::address_and_up(&g, eth0, "eth0", Some(addr))
        .await
        .unwrap();
    links::add_route(&g, Ipv4Net::default(), net.gateway)
        .await
        .unwrap();
    guest
}

/// An "outside" namespace joined to the host by a veth: host end `fxo<n>`
/// with 10.215.n.1/30, outside end 10.215.n.2/30, and no route back to any
/// pool (so only NAT can make a guest's packets answerable).
pub struct Outside {
    /// The namespace file.
    pub ns: PathBuf,
    /// The host end's address.
    pub host_addr: Ipv4Addr,
    /// The outside end's address.
    pub addr: Ipv4Addr,
    host_link: String,
}

impl Outside {
    pub async fn new(n: u8) -> Outside {
        let ns = PathBuf::from(format!("/run/netns/fcexec-test-outside-{n}"));
        let host_link = format!("fxo{n}");
        let host = host_handle();
        let _ = links::delete_link(&host, &host_link).await;
        let _ = netns::remove(&ns);
        netns::create(&ns).await.unwrap();
        let fd = netns::NetnsFd::open(&ns).unwrap();
        let idx = links::create_veth(&host, &host_link, "test", "eth0", &fd)
            .await
            .unwrap();
        let host_addr = Ipv4Addr::new(10, 215, n, 1);
        let addr = Ipv4Addr::new(10, 215, n, 2);
        links::address_and_up(
            &host,
            idx,
            &host_link,
            Some(Ipv4Net::new(host_addr, 30).unwrap()),
        )
        .await
        .unwrap();
        let h = netns::netlink_in(&ns).await.unwrap();
        let eth0 = links::link_index(&h, "eth0").await.unwrap().unwrap();
        links::address_and_up(&h, eth0, "eth0", Some(Ipv4Net::new(addr, 30).unwrap()))
            .await
            .unwrap();
        Outside {
            ns,
            host_addr,
            addr,
            host_link,
        }
    }

    pub async fn remove(self) {
        let _ = links::delete_link(&host_handle(), &self.host_link).await;
        let _ = netns::remove(&self.ns);
    }
}

/// A netlink handle on the host.
pub fn host_handle() -> rtnetlink::Handle {
    let (conn, handle, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    handle
}

/// A TCP listener bound inside namespace `ns` (or on the host when `None`).
pub async fn listen(ns: Option<&Path>, addr: SocketAddr) -> TcpListener {
    match ns {
        Some(ns) => netns::run_in(ns, move || Ok(TcpListener::bind(addr).unwrap()))
            .await
            .unwrap(),
        None => TcpListener::bind(addr).unwrap(),
    }
}

/// Accepts one connection within 3 s, sends `reply`, and returns the peer's address.
pub fn serve_once(
    listener: TcpListener,
    reply: &'static str,
) -> tokio::task::JoinHandle<Option<SocketAddr>> {
    tokio::task::spawn_blocking(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.write_all(reply.as_bytes());
                    return Some(peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    })
}

/// Connects from namespace `ns` (the host when `None`) to `to` and reads
/// what the server says; `Err` when the connection fails within 1.5 s.
pub async fn connect(ns: Option<&Path>, to: SocketAddr) -> Result<String, String> {
    let probe = move || -> Result<String, String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(1500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        Ok(text)
    };
    match ns {
        Some(ns) => netns::run_in(ns, move || Ok(probe())).await.unwrap(),
        None => tokio::task::spawn_blocking(probe).await.unwrap(),
    }
}

/// Everything of execution `id` still on the host: namespace file, host
/// link, routes into its block, rules with its comment.
pub async fn leftovers(network: &Network, net: &ExecutionNetwork) -> Vec<String> {
    let mut left = Vec::new();
    if net.netns.exists() {
        left.push(format!("namespace {}", net.netns.display()));
    }
    let host = host_handle();
    let tag = format!("fcx:{}", net.id);
    for l in links::list_links(&host).await.unwrap() {
        if l.alias.as_deref() == Some(tag.as_str()) {
            left.push(format!("link {}", l.name));
        }
    }
    let block = Ipv4Net::new(net.guest_ip, 29).unwrap().trunc();
    for r in links::routes(&host).await.unwrap() {
        if block.contains(&r.destination.network()) && r.destination.prefix_len() >= 29 {
            left.push(format!("route {}", r.destination));
        }
    }
    for r in fcexec_network::firewall::list().await.unwrap() {
        if r.comment.as_deref() == Some(tag.as_str()) {
            left.push(format!("rule {} {}", r.chain, r.handle));
        }
    }
    let _ = network;
    left
}

/// A UDP socket bound inside namespace `ns`, reading with a 1 s timeout.
pub async fn udp(ns: &Path, addr: SocketAddr) -> std::net::UdpSocket {
    netns::run_in(ns, move || {
        let s = std::net::UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        Ok(s)
    })
    .await
    .unwrap()
}

/// Waits up to 1 s for one datagram; returns its text and sender.
pub async fn recv(socket: std::net::UdpSocket) -> Option<(String, SocketAddr)> {
    tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).ok()?;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })
    .await
    .unwrap()
}
