//! Black-box tests of traffic through execution networks: egress NAT,
//! isolation, published ports, DNS at the gateway (root only; each test skips
//! with one line otherwise). Every test uses a pool of its own under
//! 10.214.0.0/16 and sends traffic only between namespaces it made and over
//! the host's loopback.

mod support;

use std::net::{Ipv4Addr, SocketAddr};

use fcexec_network::{links, netns, Network, NetworkRequest, PortMapping, Protocol};
use ipnet::Ipv4Net;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn egress_is_natted_when_on_and_dropped_when_off() {
    if !ready("egress_is_natted_when_on_and_dropped_when_off") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let outside = Outside::new(5).await;
    let on = fresh(5, true).await;
    let off = fresh(6, false).await;
    let net_on = on
        .create("egress-on", &NetworkRequest::default())
        .await
        .unwrap();
    let net_off = off
        .create("egress-off", &NetworkRequest::default())
        .await
        .unwrap();
    let guest_on = attach_guest(&net_on).await;
    let guest_off = attach_guest(&net_off).await;

    let server = SocketAddr::from((outside.addr, 7000));
    let listener = listen(Some(&outside.ns), server).await;
    let accepted = serve_once(listener, "outside");
    assert_eq!(
        connect(Some(&guest_on), server).await.as_deref(),
        Ok("outside")
    );
    let peer = accepted
        .await
        .unwrap()
        .expect("the outside saw a connection");
    assert_eq!(
        peer.ip(),
        outside.host_addr,
        "the guest's address is masqueraded"
    );

    let listener = listen(Some(&outside.ns), server).await;
    let accepted = serve_once(listener, "outside");
    assert!(
        connect(Some(&guest_off), server).await.is_err(),
        "egress off must drop"
    );
    assert!(accepted.await.unwrap().is_none());

    on.remove(&net_on).await.unwrap();
    off.remove(&net_off).await.unwrap();
    let _ = netns::remove(&guest_on);
    let _ = netns::remove(&guest_off);
    outside.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn egress_allow_list_limits_destinations() {
    if !ready("egress_allow_list_limits_destinations") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let outside = Outside::new(7).await;
    let mut cfg = config(7, true);
    cfg.egress_allow = vec![Ipv4Net::new(Ipv4Addr::new(10, 215, 99, 0), 24).unwrap()];
    let network = Network::new(cfg).await.unwrap();
    network.sweep(&[]).await.unwrap();
    let net = network
        .create("allow-1", &NetworkRequest::default())
        .await
        .unwrap();
    let guest = attach_guest(&net).await;
    let server = SocketAddr::from((outside.addr, 7001));
    let listener = listen(Some(&outside.ns), server).await;
    let accepted = serve_once(listener, "outside");
    assert!(
        connect(Some(&guest), server).await.is_err(),
        "a destination outside the allow list"
    );
    assert!(accepted.await.unwrap().is_none());
    network.remove(&net).await.unwrap();
    let _ = netns::remove(&guest);

    let mut cfg = config(7, true);
    cfg.egress_allow = vec![Ipv4Net::new(outside.addr, 32).unwrap()];
    let network = Network::new(cfg).await.unwrap(); // replaces the pool's rules
    let net = network
        .create("allow-2", &NetworkRequest::default())
        .await
        .unwrap();
    let guest = attach_guest(&net).await;
    let listener = listen(Some(&outside.ns), server).await;
    let accepted = serve_once(listener, "outside");
    assert_eq!(
        connect(Some(&guest), server).await.as_deref(),
        Ok("outside")
    );
    assert!(accepted.await.unwrap().is_some());
    network.remove(&net).await.unwrap();
    let _ = netns::remove(&guest);
    outside.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executions_reach_neither_each_other_nor_the_host() {
    if !ready("executions_reach_neither_each_other_nor_the_host") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let network = fresh(8, true).await;
    let a = network
        .create("iso-a", &NetworkRequest::default())
        .await
        .unwrap();
    let b = network
        .create("iso-b", &NetworkRequest::default())
        .await
        .unwrap();
    let guest_a = attach_guest(&a).await;
    let guest_b = attach_guest(&b).await;

    // Control: the host reaches guest b.
    let at_b = SocketAddr::from((b.guest_ip, 7002));
    let accepted = serve_once(listen(Some(&guest_b), at_b).await, "b");
    assert_eq!(connect(None, at_b).await.as_deref(), Ok("b"));
    assert!(accepted.await.unwrap().is_some());

    // Guest a cannot reach guest b.
    let accepted = serve_once(listen(Some(&guest_b), at_b).await, "b");
    assert!(
        connect(Some(&guest_a), at_b).await.is_err(),
        "execution a reached execution b"
    );
    assert!(accepted.await.unwrap().is_none());

    // Guest a cannot reach the host's end of its own veth.
    let host_end = SocketAddr::from((Ipv4Addr::from(u32::from(a.gateway) - 4), 7003));
    let accepted = serve_once(listen(None, host_end).await, "host");
    assert!(
        connect(Some(&guest_a), host_end).await.is_err(),
        "execution a reached the host"
    );
    assert!(accepted.await.unwrap().is_none());

    // Guest a reaches its gateway.
    let gw = SocketAddr::from((a.gateway, 7004));
    let accepted = serve_once(listen(Some(&a.netns), gw).await, "gateway");
    assert_eq!(connect(Some(&guest_a), gw).await.as_deref(), Ok("gateway"));
    assert!(accepted.await.unwrap().is_some());

    network.remove(&a).await.unwrap();
    network.remove(&b).await.unwrap();
    let _ = netns::remove(&guest_a);
    let _ = netns::remove(&guest_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_tcp_port_dnats_to_the_execution() {
    if !ready("published_tcp_port_dnats_to_the_execution") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let outside = Outside::new(9).await;
    let network = fresh(9, true).await;
    let net = network
        .create("publish-1", &publish(tcp(41009, 8000)))
        .await
        .unwrap();
    let guest = attach_guest(&net).await;
    let in_guest = SocketAddr::from((net.guest_ip, 8000));

    // From another machine (the outside namespace) to the host's address.
    let accepted = serve_once(listen(Some(&guest), in_guest).await, "guest");
    let published = SocketAddr::from((outside.host_addr, 41009));
    assert_eq!(
        connect(Some(&outside.ns), published).await.as_deref(),
        Ok("guest")
    );
    assert_eq!(
        accepted.await.unwrap().map(|p| p.ip()),
        Some(outside.addr.into())
    );

    // From the host itself, over loopback.
    let accepted = serve_once(listen(Some(&guest), in_guest).await, "guest");
    assert_eq!(
        connect(None, SocketAddr::from((Ipv4Addr::LOCALHOST, 41009)))
            .await
            .as_deref(),
        Ok("guest")
    );
    assert!(accepted.await.unwrap().is_some());

    network.remove(&net).await.unwrap();
    // Unpublished: nothing answers any more.
    assert!(connect(Some(&outside.ns), published).await.is_err());
    let _ = netns::remove(&guest);
    outside.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_sent_to_the_gateway_reaches_the_upstream() {
    if !ready("dns_sent_to_the_gateway_reaches_the_upstream") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let outside = Outside::new(10).await;
    let mut cfg = config(10, true);
    cfg.dns_upstream = Some(outside.addr);
    let network = Network::new(cfg).await.unwrap();
    network.sweep(&[]).await.unwrap();
    let net = network
        .create("dns-1", &NetworkRequest::default())
        .await
        .unwrap();
    assert_eq!(net.dns, net.gateway);
    let guest = attach_guest(&net).await;
    let accepted = serve_once(
        listen(Some(&outside.ns), SocketAddr::from((outside.addr, 53))).await,
        "resolver",
    );
    let dns = SocketAddr::from((net.dns, 53));
    assert_eq!(connect(Some(&guest), dns).await.as_deref(), Ok("resolver"));
    assert!(accepted.await.unwrap().is_some());
    network.remove(&net).await.unwrap();
    let _ = netns::remove(&guest);
    outside.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spoofed_source_addresses_are_dropped() {
    if !ready("spoofed_source_addresses_are_dropped") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let outside = Outside::new(14).await;
    let network = fresh(14, true).await;
    let net = network
        .create("spoof-1", &NetworkRequest::default())
        .await
        .unwrap();
    let guest = attach_guest(&net).await;
    // The guest also claims the address of the next block's guest.
    let other = Ipv4Addr::from(u32::from(net.guest_ip) + 8);
    let g = netns::netlink_in(&guest).await.unwrap();
    let eth0 = links::link_index(&g, "eth0").await.unwrap().unwrap();
    let extra = Ipv4Net::new(other, 32).unwrap();
    links::address_and_up(&g, eth0, "eth0", Some(extra))
        .await
        .unwrap();

    let server = SocketAddr::from((outside.addr, 7005));
    let honest = udp(&guest, SocketAddr::from((net.guest_ip, 0))).await;
    let inbox = udp(&outside.ns, server).await;
    honest.send_to(b"honest", server).unwrap();
    let got = recv(inbox).await.expect("the honest datagram arrives");
    assert_eq!(got.0, "honest");
    assert_eq!(got.1.ip(), outside.host_addr);

    let liar = udp(&guest, SocketAddr::from((other, 0))).await;
    let inbox = udp(&outside.ns, server).await;
    liar.send_to(b"spoofed", server).unwrap();
    assert_eq!(recv(inbox).await, None, "a spoofed source got through");

    network.remove(&net).await.unwrap();
    let _ = netns::remove(&guest);
    outside.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_udp_port_dnats_to_the_execution() {
    if !ready("published_udp_port_dnats_to_the_execution") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let outside = Outside::new(15).await;
    let network = fresh(15, true).await;
    let mapping = PortMapping {
        host: 41015,
        guest: 5353,
        protocol: Protocol::Udp,
    };
    let request = NetworkRequest {
        ports: vec![mapping],
        ..Default::default()
    };
    let net = network.create("udp-1", &request).await.unwrap();
    let guest = attach_guest(&net).await;

    let inbox = udp(&guest, SocketAddr::from((net.guest_ip, 5353))).await;
    let sender = udp(&outside.ns, SocketAddr::from((outside.addr, 0))).await;
    sender
        .send_to(b"query", SocketAddr::from((outside.host_addr, 41015)))
        .unwrap();
    let got = recv(inbox).await.expect("the datagram reaches the guest");
    assert_eq!(
        got,
        (
            "query".to_string(),
            SocketAddr::from((outside.addr, sender.local_addr().unwrap().port()))
        )
    );

    network.remove(&net).await.unwrap();
    let _ = netns::remove(&guest);
    outside.remove().await;
}
