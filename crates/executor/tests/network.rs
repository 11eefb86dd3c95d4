//! Networked executions against the real VMM, with the test guest's
//! virtio-net driver and TCP/IP stack (protocol 1 over the serial console:
//! its network operations do not run under protocol 2).
//!
//! Traffic stays on this machine: between the executions' namespaces, the
//! host, and an "outside" namespace each test makes (`common::outside`),
//! which stands in for the world beyond the host.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::outside::{unavailable, Outside};
use common::Harness;
use fcexec::{ExecutionRequest, Executor};
use serde_json::json;
use test_guest::Job;
use testkit::network::leftovers;

const POOL: &str = "10.213.0.0/16";

/// Returns from the calling test, counted as skipped, when it cannot run.
macro_rules! require_network {
    ($name:expr) => {{
        let h = Harness::new(testkit::require_vmm!());
        if let Some(reason) = unavailable() {
            testkit::skip($name, &reason);
            return;
        }
        h
    }};
}

/// Network tests share the host's pool and nftables table: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A protocol-1 request running `job`, with `extra` top-level fields.
fn request(h: &Harness, id: &str, job: &Job, params: serde_json::Value) -> ExecutionRequest {
    let mut all = json!({"agent": true, "agent_transport": "serial",
                         "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())});
    if let (Some(a), Some(p)) = (all.as_object_mut(), params.as_object()) {
        a.extend(p.clone());
    }
    h.request(id, all)
}

/// The guest address `ps` shows for `id`.
fn guest_ip(h: &Harness, ex: &Executor, id: &str) -> std::net::Ipv4Addr {
    let record = fcexec::inspect::record(ex.state_dir(), id).unwrap();
    let _ = h;
    record.network.expect("a network").guest_ip
}

#[tokio::test]
async fn the_guest_reads_its_mmds_message_through_mmds_v2() {
    let h = require_network!("the_guest_reads_its_mmds_message_through_mmds_v2");
    let _one = SERIAL.lock().await;
    let ex = h.executor("net-mmds").await;
    let job = Job::new().mmds("/greeting").exit(0);
    let r = request(
        &h,
        "m",
        &job,
        json!({"network": true, "mmds_message": "{\"greeting\": \"hello from mmds\"}"}),
    );
    let mut r = r;
    r.gateway_ip = "10.213.0.13".into();
    ex.start(&r).await.unwrap();
    let record = fcexec::inspect::record(ex.state_dir(), "m").unwrap();
    assert!(
        record.isolation.is_some(),
        "as root the networked VMM is jailed too: the jailer joins its namespace"
    );
    let net = record.network.unwrap();
    assert_eq!(
        (net.gateway.to_string(), net.guest_ip.to_string()),
        ("10.213.0.13".into(), "10.213.0.14".into())
    );
    let result = ex.wait("m").await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert_eq!(result.stdout, "hello from mmds");
    ex.remove("m", Duration::from_secs(10)).await.unwrap();

    // A gateway outside the pool, or not a gateway of it, is refused.
    for (gateway, says) in [
        ("192.0.2.1", "outside the network pool"),
        ("10.213.0.14", "cannot be a gateway"),
    ] {
        let mut r = request(&h, "g", &Job::new().exit(0), json!({}));
        r.gateway_ip = gateway.into();
        let err = ex.start(&r).await.unwrap_err().to_string();
        assert!(err.contains("gateway_ip") && err.contains(says), "{err}");
    }
    assert_eq!(leftovers(POOL), Vec::<String>::new());
}

#[tokio::test]
async fn published_tcp_and_udp_ports_reach_the_guest_from_outside() {
    let h = require_network!("published_tcp_and_udp_ports_reach_the_guest_from_outside");
    let _one = SERIAL.lock().await;
    let outside = Outside::create();
    let ex = h.executor("net-ports").await;
    let (tcp_port, udp_port) = (
        18000 + (std::process::id() % 1000) as u16,
        19000 + (std::process::id() % 1000) as u16,
    );
    let job = Job::new().tcp_echo(7, 1).udp_echo(7, 2).exit(0);
    let mut r = request(&h, "p", &job, json!({}));
    r.ports_to_bind = serde_json::from_value(json!([
        {"host_port": tcp_port, "executor_port": 7},
        {"host_port": udp_port, "executor_port": 7, "protocol": "udp"},
    ]))
    .unwrap();
    ex.start(&r).await.unwrap();
    common::wait_for_output(&ex, "p", &test_guest::listening_line(7)).await;
    let host = outside.host;
    let echoed = outside
        .spawn(move || {
            let mut s = TcpStream::connect_timeout(
                &SocketAddrV4::new(host, tcp_port).into(),
                Duration::from_secs(5),
            )
            .expect("connect to the published TCP port");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"ping over tcp").unwrap();
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).unwrap();
            buf.to_vec()
        })
        .join()
        .unwrap();
    assert_eq!(echoed, b"ping over tcp");
    // The UDP echo starts once the TCP connection is done.
    common::wait_for_output(
        &ex,
        "p",
        &format!(
            "{}{}",
            test_guest::listening_line(7),
            test_guest::listening_line(7)
        ),
    )
    .await;
    let echoed = outside
        .spawn(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 64];
            for _ in 0..20 {
                s.send_to(b"ping over udp", SocketAddrV4::new(host, udp_port))
                    .unwrap();
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    let answer = buf[..n].to_vec();
                    s.send_to(b"bye", SocketAddrV4::new(host, udp_port))
                        .unwrap();
                    return answer;
                }
            }
            Vec::new()
        })
        .join()
        .unwrap();
    assert_eq!(echoed, b"ping over udp");
    let result = ex.wait("p").await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");

    // A port published by a live execution is refused to the next one.
    let hold = Job::new().tcp_echo(7, 1).exit(0);
    let mut first = request(&h, "p1", &hold, json!({}));
    first.ports_to_bind = r.ports_to_bind[..1].to_vec();
    ex.start(&first).await.unwrap();
    let mut second = request(&h, "p2", &hold, json!({}));
    second.ports_to_bind = r.ports_to_bind[..1].to_vec();
    let err = ex.start(&second).await.unwrap_err().to_string();
    assert!(err.contains(&tcp_port.to_string()), "{err}");
    ex.cancel("p1").await.unwrap();
    let _ = ex.wait("p1").await;
    for id in ["p", "p1"] {
        ex.remove(id, Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(leftovers(POOL), Vec::<String>::new());
}

#[tokio::test]
async fn executions_cannot_reach_each_other_and_egress_is_per_execution() {
    let h = require_network!("executions_cannot_reach_each_other_and_egress_is_per_execution");
    let _one = SERIAL.lock().await;
    let outside = Outside::create();
    let server_addr = SocketAddrV4::new(outside.addr, 9000);
    let server = outside.spawn(move || {
        let listener = std::net::TcpListener::bind(server_addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut accepted = 0;
        while Instant::now() < give_up && accepted < 1 {
            if listener.accept().is_ok() {
                accepted += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        accepted
    });
    let ex = h.executor("net-iso").await;
    let a = Job::new().tcp_echo(7, 1).exit(0);
    ex.start(&request(&h, "a", &a, json!({"network": true})))
        .await
        .unwrap();
    common::wait_for_output(&ex, "a", &test_guest::listening_line(7)).await;
    let a_ip = guest_ip(&h, &ex, "a");
    let timeout = Duration::from_millis(1500);
    let b = Job::new()
        .connect(SocketAddrV4::new(a_ip, 7), timeout)
        .connect(server_addr, timeout)
        .exit(0);
    ex.start(&request(&h, "b", &b, json!({"network": true})))
        .await
        .unwrap();
    let b_result = ex.wait("b").await.unwrap();
    let c = Job::new().connect(server_addr, timeout).exit(0);
    ex.start(&request(
        &h,
        "c",
        &c,
        json!({"network": true, "egress": false}),
    ))
    .await
    .unwrap();
    let c_result = ex.wait("c").await.unwrap();
    let lines: Vec<&str> = b_result.stdout.lines().collect();
    assert!(lines[0].starts_with("failed"), "b reached a: {b_result:?}");
    assert_eq!(
        lines.get(1),
        Some(&"connected"),
        "b has egress: {b_result:?}"
    );
    assert!(
        c_result.stdout.starts_with("failed"),
        "c has no egress: {c_result:?}"
    );
    assert_eq!(server.join().unwrap(), 1, "the outside saw b only");
    ex.cancel("a").await.unwrap();
    let _ = ex.wait("a").await;
    for id in ["a", "b", "c"] {
        ex.remove(id, Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(leftovers(POOL), Vec::<String>::new());
}

#[tokio::test]
async fn fifty_networked_executions_leave_nothing_behind() {
    let h = require_network!("fifty_networked_executions_leave_nothing_behind");
    let _one = SERIAL.lock().await;
    let ex = std::sync::Arc::new(h.executor("net-fifty").await);
    let started = Instant::now();
    let mut starts = Vec::new();
    for i in 0..50 {
        let (ex, r) = (
            ex.clone(),
            request(
                &h,
                &format!("n{i}"),
                &Job::new().out("up\n").hang(),
                json!({"network": true}),
            ),
        );
        starts.push(tokio::spawn(async move { ex.start(&r).await }));
    }
    for s in starts {
        s.await.unwrap().unwrap();
    }
    eprintln!(
        "50 networked executions started in {:.2?}",
        started.elapsed()
    );
    let live = leftovers(POOL);
    assert_eq!(
        live.iter().filter(|l| l.starts_with("namespace")).count(),
        50,
        "{live:?}"
    );
    let started = Instant::now();
    let cleaned = ex.cleanup().await;
    eprintln!(
        "cleanup of 50 networked executions: {:.2?}",
        started.elapsed()
    );
    cleaned.unwrap();
    assert_eq!(leftovers(POOL), Vec::<String>::new());
}
