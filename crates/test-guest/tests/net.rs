//! The test guest's network under the real Firecracker: each test makes its
//! own network namespace with a TAP device (`common::netns`), runs the VMM
//! in it with MMDS version 2 on the interface, and talks to the guest from
//! threads inside that namespace only. Tests skip without Firecracker or
//! `/dev/kvm` (`testkit`), and with one line when not root. The `spin` test
//! needs no network.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::netns::{self, Netns, GATEWAY, GUEST, GUEST_MAC, NETMASK, TAP};
use common::{spawn, NetSpec, Vm, VmSpec, KEY};
use test_guest::Job;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Returns early (a skip) when the network tests cannot run here.
macro_rules! require_net {
    () => {{
        let vmm = testkit::require_vmm!();
        if let Some(reason) = netns::unavailable() {
            println!("skipped: {reason}");
            return;
        }
        vmm
    }};
}

/// The boot arguments of a networked guest running `job` (agent mode when
/// `agent`, else plain mode).
fn boot_args(job: &Job, agent: bool) -> String {
    let ip = test_guest::ip_kernel_arg(GUEST, GATEWAY, NETMASK);
    let key = if agent {
        format!("fcx.key={KEY} ")
    } else {
        String::new()
    };
    format!("{key}{ip} {}", job.to_kernel_arg())
}

fn net_spec(ns: &Netns, metadata: Option<&str>) -> NetSpec {
    NetSpec {
        netns: ns.name.clone(),
        tap: TAP.into(),
        guest_mac: GUEST_MAC.into(),
        metadata: metadata.map(str::to_owned),
    }
}

fn start(vmm: &testkit::Vmm, ns: &Netns, job: &Job, agent: bool, metadata: Option<&str>) -> Vm {
    let spec = VmSpec::new(boot_args(job, agent)).with_net(net_spec(ns, metadata));
    spawn(vmm, &spec)
}

const METADATA: &str = r#"{"latest":{"meta-data":{"greeting":"hello from mmds","id":"i-42"}}}"#;

#[test]
fn mmds_value_is_printed() {
    let vmm = require_net!();
    let ns = Netns::create();
    let job = Job::new()
        .mmds("/latest/meta-data/greeting")
        .out("|")
        .mmds("latest/meta-data/id");
    let out = start(&vmm, &ns, &job, true, Some(METADATA)).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.exit_code(), Some(0), "{:?}\n{}", d.frames, out.log);
    assert_eq!(d.stream("out"), b"hello from mmds|i-42");
    let frames: Vec<_> = d.frames.iter().filter(|f| f.kind == "out").collect();
    println!(
        "mmds fetch (first, with ARP and stack setup): until the first out frame {:?} after spawn",
        frames[0].at
    );
}

#[test]
fn mmds_missing_path_fails_naming_the_status() {
    let vmm = require_net!();
    let ns = Netns::create();
    let job = Job::new()
        .mmds("/latest/meta-data/nothing")
        .out("not reached");
    let out = start(&vmm, &ns, &job, true, Some(METADATA)).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "fail"], "{:?}", d.frames);
    let reason = String::from_utf8_lossy(&d.frames[1].payload).into_owned();
    assert!(
        reason.contains("mmds") && reason.contains("404"),
        "{reason}"
    );
}

#[test]
fn mmds_fetch_time() {
    let vmm = require_net!();
    let ns = Netns::create();
    // Plain mode: each line reaches the host when written.
    let job = Job::new()
        .mmds("/latest/meta-data/id")
        .out("\n")
        .mmds("/latest/meta-data/id")
        .out("\n")
        .mmds("/latest/meta-data/id")
        .out("\n");
    let out = start(&vmm, &ns, &job, false, Some(METADATA)).wait(TIMEOUT);
    assert!(out.status.success(), "{}", out.log);
    let lines: Vec<_> = out
        .lines
        .iter()
        .filter(|l| l.bytes.starts_with(b"i-42"))
        .collect();
    assert_eq!(lines.len(), 3, "{:?}", out.stdout());
    println!(
        "mmds: first value at {:?} after spawn, then {:?} and {:?} per fetch (token + GET)",
        lines[0].at,
        lines[1].at - lines[0].at,
        lines[2].at - lines[1].at
    );
}

#[test]
fn tcp_echo_echoes_each_connection() {
    let vmm = require_net!();
    let ns = Netns::create();
    let job = Job::new().tcp_echo(7000, 2).out("done\n");
    let vm = start(&vmm, &ns, &job, false, None);
    assert!(
        vm.wait_for_line(test_guest::listening_line(7000).trim_end(), TIMEOUT),
        "the guest never listened; log:\n{}",
        vm.log_text()
    );
    let (rtts, bulk_ok, bulk_time) = ns.run(|| {
        let addr = SocketAddrV4::new(GUEST, 7000);
        // First connection: small round trips.
        let mut stream = connect_retrying(addr);
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rtts = Vec::new();
        for i in 0..20u8 {
            let msg = [b'a' + i; 16];
            let t = Instant::now();
            stream.write_all(&msg).unwrap();
            let mut back = [0u8; 16];
            stream.read_exact(&mut back).unwrap();
            rtts.push(t.elapsed());
            assert_eq!(back, msg);
        }
        drop(stream);
        // Second connection: 100 KiB, echoed byte for byte.
        let mut stream = connect_retrying(addr);
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let data: Vec<u8> = (0..100 * 1024u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut reader = stream.try_clone().unwrap();
        let expected = data.len();
        let t = Instant::now();
        let receiving = std::thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        });
        stream.write_all(&data).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let got = receiving.join().unwrap().unwrap();
        (rtts, got.len() == expected && got == data, t.elapsed())
    });
    let out = vm.wait(TIMEOUT);
    assert!(bulk_ok, "100 KiB not echoed intact");
    assert!(
        String::from_utf8_lossy(&out.guest_output()).contains("listening on 7000\ndone\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout())
    );
    println!(
        "tcp echo round trip (16 bytes): median {:?}, min {:?}; 100 KiB echoed in {bulk_time:?}",
        common::median(rtts.clone()),
        rtts.iter().min().unwrap()
    );
}

/// Connects, retrying while the guest's listener is not back yet.
fn connect_retrying(addr: SocketAddrV4) -> TcpStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

#[test]
fn udp_echo_returns_datagrams() {
    let vmm = require_net!();
    let ns = Netns::create();
    let job = Job::new().udp_echo(7001, 5).out("done\n");
    let vm = start(&vmm, &ns, &job, false, None);
    assert!(
        vm.wait_for_line("listening on 7001", TIMEOUT),
        "the guest never listened; log:\n{}",
        vm.log_text()
    );
    let rtts = ns.run(|| {
        let socket = UdpSocket::bind((GATEWAY, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut rtts = Vec::new();
        for i in 0..5u8 {
            let msg = vec![i; 100 + usize::from(i) * 200];
            let mut back = [0u8; 2048];
            // The first datagram may wait for the guest's ARP answer.
            let t = Instant::now();
            let n = loop {
                socket.send_to(&msg, (GUEST, 7001)).unwrap();
                match socket.recv_from(&mut back) {
                    Ok((n, from)) => {
                        assert_eq!(from, (GUEST, 7001).into());
                        break n;
                    }
                    Err(e) if t.elapsed() < TIMEOUT => {
                        let _ = e;
                    }
                    Err(e) => panic!("no echo: {e}"),
                }
            };
            rtts.push(t.elapsed());
            assert_eq!(&back[..n], &msg[..]);
        }
        rtts
    });
    let out = vm.wait(TIMEOUT);
    assert!(
        String::from_utf8_lossy(&out.guest_output()).contains("listening on 7001\ndone\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout())
    );
    println!(
        "udp echo round trip: median {:?} (all: {rtts:?})",
        common::median(rtts[1..].to_vec())
    );
}

#[test]
fn connect_reports_success_and_refusal() {
    let vmm = require_net!();
    let ns = Netns::create();
    let listener = ns.run(|| TcpListener::bind((GATEWAY, 0)).unwrap());
    let open = SocketAddrV4::new(GATEWAY, listener.local_addr().unwrap().port());
    // A port nothing listens on: bound and dropped, so it is free.
    let closed = {
        let l = ns.run(|| TcpListener::bind((GATEWAY, 0)).unwrap());
        SocketAddrV4::new(GATEWAY, l.local_addr().unwrap().port())
    };
    let accepting = std::thread::spawn(move || listener.accept().map(|(_, from)| from));
    let job = Job::new()
        .connect(open, Duration::from_secs(10))
        .connect(closed, Duration::from_secs(10))
        .exit(3);
    let out = start(&vmm, &ns, &job, true, None).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(
        String::from_utf8_lossy(&d.stream("out")),
        "connected\nfailed: connection refused\n",
        "{}",
        out.log
    );
    assert_eq!(
        d.exit_code(),
        Some(3),
        "connect does not decide the exit code"
    );
    let from = accepting.join().unwrap().expect("accept");
    assert_eq!(from.ip(), std::net::IpAddr::V4(GUEST));
}

#[test]
fn connect_times_out_without_an_answer() {
    let vmm = require_net!();
    let ns = Netns::create();
    // Nobody has this address on the link: ARP goes unanswered.
    let silent = SocketAddrV4::new(std::net::Ipv4Addr::new(172, 31, 0, 3), 80);
    let job = Job::new().connect(silent, Duration::from_millis(300));
    let out = start(&vmm, &ns, &job, true, None).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.stream("out"), b"failed: timed out\n", "{}", out.log);
    assert_eq!(d.exit_code(), Some(0));
}

#[test]
fn spin_keeps_the_cpu_busy_for_the_time_asked() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().out("a\n").spin(400).out("b\n");
    let out = spawn(&vmm, &VmSpec::new(job.to_kernel_arg())).wait(TIMEOUT);
    assert!(out.status.success(), "{}", out.log);
    let at = |text: &[u8]| {
        out.lines
            .iter()
            .find(|l| l.bytes == text)
            .map(|l| l.at)
            .unwrap_or_else(|| panic!("no line {text:?}: {:?}", out.stdout()))
    };
    let spun = at(b"b\n") - at(b"a\n");
    println!("spin:400 took {spun:?} between the lines around it");
    assert!(
        spun >= Duration::from_millis(350) && spun < Duration::from_millis(1500),
        "{spun:?}"
    );
}

#[test]
fn network_operation_without_a_device_fails_clearly() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().tcp_echo(7, 1).out("not reached");
    let out = spawn(&vmm, &VmSpec::agent(&job)).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "fail"], "{:?}", d.frames);
    assert_eq!(d.frames[1].payload, b"tcp-echo: no network device");
}
