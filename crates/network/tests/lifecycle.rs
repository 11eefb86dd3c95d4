//! Black-box tests of the objects execution networks are made of: created,
//! refused, removed, swept (root only; each test skips with one line
//! otherwise). Every test uses a pool of its own under 10.214.0.0/16.

mod support;

use std::net::Ipv4Addr;

use fcexec_network::{links, netns, Network, NetworkError, NetworkRequest, PortMapping, Protocol};
use ipnet::Ipv4Net;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_makes_every_object_and_remove_leaves_nothing() {
    if !ready("create_makes_every_object_and_remove_leaves_nothing") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let network = fresh(1, true).await;
    let request = NetworkRequest {
        ports: vec![
            tcp(41001, 80),
            PortMapping {
                host: 41001,
                guest: 53,
                protocol: Protocol::Udp,
            },
        ],
        ..Default::default()
    };
    let net = network.create("objects-1", &request).await.unwrap();

    assert_eq!(net.guest_ip.octets()[..2], [10, 214]);
    assert_eq!(u32::from(net.gateway) + 1, u32::from(net.guest_ip));
    assert_eq!(net.dns, net.gateway);
    assert!(net.kernel_ip_arg().starts_with(&format!(
        "ip={}::{}:255.255.255.252::eth0:off",
        net.guest_ip, net.gateway
    )));
    assert!(net.netns.exists());

    // Host side: the veth with its alias and address, the route to the TAP link.
    let host = host_handle();
    let link = links::list_links(&host)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == net.host_veth)
        .expect("host veth");
    assert_eq!(link.alias.as_deref(), Some("fcx:objects-1"));
    let host_addr = Ipv4Addr::from(u32::from(net.gateway) - 4);
    assert_eq!(
        links::addresses(&host, link.index).await.unwrap(),
        vec![Ipv4Net::new(host_addr, 30).unwrap()]
    );
    let tap_net = Ipv4Net::new(net.gateway, 30).unwrap().trunc();
    assert!(links::routes(&host)
        .await
        .unwrap()
        .iter()
        .any(|r| r.destination == tap_net && r.oif == Some(link.index)));

    // Namespace side: veth0, tap0 (the gateway), lo, the default route.
    let inside = netns::netlink_in(&net.netns).await.unwrap();
    let veth0 = links::link_index(&inside, "veth0")
        .await
        .unwrap()
        .expect("veth0");
    assert_eq!(
        links::addresses(&inside, veth0).await.unwrap(),
        vec![Ipv4Net::new(Ipv4Addr::from(u32::from(host_addr) + 1), 30).unwrap()]
    );
    let tap = links::link_index(&inside, &net.tap)
        .await
        .unwrap()
        .expect("tap0");
    assert_eq!(
        links::addresses(&inside, tap).await.unwrap(),
        vec![Ipv4Net::new(net.gateway, 30).unwrap()]
    );
    let default = links::routes(&inside)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.destination.prefix_len() == 0)
        .expect("default route");
    assert_eq!(default.gateway, Some(host_addr));
    let forwarding = netns::run_in(&net.netns, || {
        Ok(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
    })
    .await
    .unwrap();
    assert_eq!(forwarding.trim(), "1");

    // Rules: a DNAT per port in prerouting and output.
    let rules: Vec<_> = fcexec_network::firewall::list()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.comment.as_deref() == Some("fcx:objects-1"))
        .collect();
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert!(rules.iter().all(|r| r.dnat == Some(net.guest_ip)));

    network.remove(&net).await.unwrap();
    assert_eq!(leftovers(&network, &net).await, Vec::<String>::new());
    network.remove(&net).await.unwrap(); // idempotent
                                         // The block and the ports are free again.
    let again = network.create("objects-2", &request).await.unwrap();
    network.remove(&again).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicts_are_refused_naming_the_port_and_leave_nothing() {
    if !ready("conflicts_are_refused_naming_the_port_and_leave_nothing") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let network = fresh(2, true).await;
    let a = network
        .create("conflict-a", &publish(tcp(41002, 80)))
        .await
        .unwrap();

    let err = network
        .create("conflict-b", &publish(tcp(41002, 81)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::PortInUse { port: 41002, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("41002/tcp") && err.to_string().contains("conflict-a"),
        "{err}"
    );
    assert!(!std::path::Path::new("/run/netns/fcx-conflict-b").exists());

    // A port a host process holds is refused too.
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = network
        .create("conflict-c", &publish(tcp(port, 80)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("{port}/tcp")), "{err}");

    // gateway_ip: honoured, validated against the pool.
    let gw = Ipv4Addr::new(10, 214, 4, 13);
    let d = network
        .create(
            "conflict-d",
            &NetworkRequest {
                gateway: Some(gw),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (d.gateway, d.dns, d.guest_ip),
        (gw, gw, Ipv4Addr::new(10, 214, 4, 14))
    );
    let err = network
        .create(
            "conflict-e",
            &NetworkRequest {
                gateway: Some(gw),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::GatewayInUse { .. }), "{err}");
    let err = network
        .create(
            "conflict-e",
            &NetworkRequest {
                gateway: Some(Ipv4Addr::new(10, 214, 4, 14)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::GatewayNotUsable { .. }),
        "{err}"
    );
    let err = network
        .create(
            "conflict-e",
            &NetworkRequest {
                gateway: Some(Ipv4Addr::new(192, 168, 0, 1)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::GatewayOutsidePool { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("10.214.4.5"), "{err}");
    assert!(!std::path::Path::new("/run/netns/fcx-conflict-e").exists());

    network.remove(&a).await.unwrap();
    network.remove(&d).await.unwrap();
    assert!(leftovers(&network, &a).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_networks_are_distinct_and_leave_nothing() {
    if !ready("fifty_concurrent_networks_are_distinct_and_leave_nothing") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let network = fresh(3, true).await;
    let started = std::time::Instant::now();
    let creates = (0..50).map(|i| {
        let network = network.clone();
        tokio::spawn(async move {
            let request = publish(tcp(42000 + i, 80));
            network.create(&format!("many-{i}"), &request).await
        })
    });
    let nets: Vec<_> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    eprintln!("50 creates: {:?}", started.elapsed());
    let mut ips: Vec<_> = nets.iter().map(|n| n.guest_ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50);
    let mut veths: Vec<_> = nets.iter().map(|n| n.host_veth.clone()).collect();
    veths.sort();
    veths.dedup();
    assert_eq!(veths.len(), 50);

    let started = std::time::Instant::now();
    let removes = nets.iter().cloned().map(|n| {
        let network = network.clone();
        tokio::spawn(async move { network.remove(&n).await })
    });
    for r in futures_util::future::join_all(removes).await {
        r.unwrap().unwrap();
    }
    eprintln!("50 removes: {:?}", started.elapsed());
    for n in &nets {
        assert_eq!(leftovers(&network, n).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_removes_unknown_executions_and_keeps_the_others() {
    if !ready("sweep_removes_unknown_executions_and_keeps_the_others") {
        return;
    }
    let _lock = SWEEP_LOCK.write().await;
    let before_crash = fresh(4, true).await;
    let keep = before_crash
        .create("sweep-keep", &publish(tcp(41004, 80)))
        .await
        .unwrap();
    let lost = before_crash
        .create("sweep-lost", &publish(tcp(41005, 80)))
        .await
        .unwrap();
    drop(before_crash); // the executor "crashes": its table is gone, its objects stay
                        // A create that died right after making the namespace.
    netns::create(std::path::Path::new("/run/netns/fcx-sweep-half"))
        .await
        .unwrap();

    let network = Network::new(config(4, true)).await.unwrap();
    // Found objects keep their blocks and ports until swept or adopted.
    let err = network
        .create("sweep-new", &publish(tcp(41005, 80)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::PortInUse { port: 41005, .. }),
        "{err}"
    );
    let fresh = network
        .create("sweep-new", &NetworkRequest::default())
        .await
        .unwrap();
    assert!(fresh.block != keep.block && fresh.block != lost.block);

    let keep_list = ["sweep-keep".to_string()];
    let report = network.sweep(&keep_list).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    // The lost execution goes whole (its namespace too, although deleting its
    // host veth empties the namespace); the half-made namespace has no
    // address and is younger than the grace period: it might be a create in
    // progress, so it stays.
    assert_eq!(report.namespaces, ["sweep-lost"], "{report:?}");
    assert_eq!(
        report.links,
        std::slice::from_ref(&lost.host_veth),
        "{report:?}"
    );
    assert_eq!(report.rules, 2, "{report:?}");
    assert!(std::path::Path::new("/run/netns/fcx-sweep-half").exists());
    let report = network
        .sweep_older_than(&keep_list, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.namespaces, ["sweep-half"], "{report:?}");
    assert_eq!(leftovers(&network, &lost).await, Vec::<String>::new());
    assert!(!std::path::Path::new("/run/netns/fcx-sweep-half").exists());
    // What is kept, and what this manager made, is untouched.
    assert!(keep.netns.exists() && fresh.netns.exists());
    let kept = leftovers(&network, &keep).await;
    assert_eq!(
        kept.len(),
        1 + 1 + 2 + 2,
        "namespace, link, 2 routes (the veth's and the TAP's /30), 2 rules: {kept:?}"
    );

    // The lost execution's port is free now; the kept one is adopted and removed.
    let reuse = network
        .create("sweep-reuse", &publish(tcp(41005, 80)))
        .await
        .unwrap();
    network.adopt(&keep).unwrap();
    assert!(
        network.sweep(&[]).await.unwrap().is_empty(),
        "adopted and live executions survive a sweep with an empty keep list"
    );
    for n in [&keep, &fresh, &reuse] {
        network.remove(n).await.unwrap();
        assert_eq!(leftovers(&network, n).await, Vec::<String>::new());
    }
}

#[test]
fn check_reports_each_item() {
    if !ready("check_reports_each_item") {
        return;
    }
    let results = fcexec_network::check();
    let names: Vec<_> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "root",
            "/dev/net/tun",
            "netlink",
            "nftables",
            "/run/netns",
            "IPv4 forwarding"
        ]
    );
    for (name, result) in &results {
        assert!(result.is_ok(), "{name}: {result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_that_fails_half_way_leaves_nothing() {
    if !ready("a_create_that_fails_half_way_leaves_nothing") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let network = fresh(11, true).await;
    // Take the host veth name of the block gateway 10.214.22.5 picks, so the
    // create fails after making the namespace.
    let gateway = Ipv4Addr::new(10, 214, 22, 5);
    let blocker_ns = std::path::PathBuf::from("/run/netns/fcexec-test-blocker");
    let _ = netns::remove(&blocker_ns);
    netns::create(&blocker_ns).await.unwrap();
    let host = host_handle();
    let blocker = fcexec_network::names::host_veth(Ipv4Addr::new(10, 214, 22, 0));
    let _ = links::delete_link(&host, &blocker).await;
    let fd = netns::NetnsFd::open(&blocker_ns).unwrap();
    links::create_veth(&host, &blocker, "test", "peer", &fd)
        .await
        .unwrap();

    let request = NetworkRequest {
        gateway: Some(gateway),
        ports: vec![tcp(41011, 80)],
        ..Default::default()
    };
    let err = network.create("half-1", &request).await.unwrap_err();
    assert!(err.to_string().contains(&blocker), "{err}");
    assert!(!std::path::Path::new("/run/netns/fcx-half-1").exists());
    assert!(
        links::link_index(&host, &blocker).await.unwrap().is_some(),
        "another's link survives"
    );
    let rules = fcexec_network::firewall::list().await.unwrap();
    assert!(!rules
        .iter()
        .any(|r| r.comment.as_deref() == Some("fcx:half-1")));

    // The block and the port were given back.
    links::delete_link(&host, &blocker).await.unwrap();
    netns::remove(&blocker_ns).unwrap();
    let net = network.create("half-2", &request).await.unwrap();
    assert_eq!(net.gateway, gateway);
    network.remove(&net).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_port_published_by_another_pool_is_refused() {
    if !ready("a_port_published_by_another_pool_is_refused") {
        return;
    }
    let _lock = SWEEP_LOCK.read().await;
    let first = fresh(12, true).await;
    let second = fresh(13, true).await;
    let a = first
        .create("pools-a", &publish(tcp(41012, 80)))
        .await
        .unwrap();
    let err = second
        .create("pools-b", &publish(tcp(41012, 80)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::PortInUse { port: 41012, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("pools-a"), "{err}");
    first.remove(&a).await.unwrap();
    let b = second
        .create("pools-b", &publish(tcp(41012, 80)))
        .await
        .unwrap();
    second.remove(&b).await.unwrap();
}
