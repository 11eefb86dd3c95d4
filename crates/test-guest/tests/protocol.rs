//! Host-side checks of guest code: the guest's frame encoder (`guest/frame.rs`)
//! against `docs/guest-protocol-vectors.txt`, and the guest's job parser
//! (`guest/job.rs`) against the host's [`test_guest::Job`] builder.

#[path = "../guest/frame.rs"]
mod frame;

#[path = "../guest/job.rs"]
mod job;

mod common;

use test_guest::{Job, Stream};

#[test]
fn encoder_matches_the_vectors() {
    let (key_hex, vectors) = testkit::protocol_vectors::vectors();
    let key = &<[u8; 32]>::try_from(key_hex.as_bytes()).unwrap();
    let mut checked = 0;
    for v in vectors {
        let (seq, kind, payload, expected) =
            (v.seq.to_string(), v.kind.as_str(), v.payload, v.frame);
        let seq = seq.as_str();
        let mut buf = vec![0u8; frame::MAX_FRAME];
        let n = frame::encode(&mut buf, key, seq.parse().unwrap(), kind, &payload).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("{expected}\n"),
            "vector {seq} {kind}"
        );
        // The test decoder agrees too.
        let lines = [common::Line {
            at: Default::default(),
            bytes: buf[..n].to_vec(),
        }];
        let Ok(k) = std::str::from_utf8(key) else {
            unreachable!()
        };
        if seq == "0" {
            let d = common::decode(&lines, k);
            assert_eq!(d.frames[0].payload, payload);
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} vectors");
}

#[test]
fn encoder_limits() {
    let key = [b'a'; 32];
    let mut buf = vec![0u8; frame::MAX_FRAME];
    let max = vec![0xffu8; frame::MAX_PAYLOAD];
    let n = frame::encode(&mut buf, &key, u32::MAX, "hello", &max).unwrap();
    assert!(n <= frame::MAX_FRAME);
    assert!(frame::encode(&mut buf, &key, 0, "out", &[0; frame::MAX_PAYLOAD + 1]).is_none());
    assert!(frame::encode(&mut buf[..100], &key, 0, "out", b"x").is_none());
    assert!(frame::valid_key(b"0123456789abcdef0123456789abcdef"));
    assert!(!frame::valid_key(b"0123456789ABCDEF0123456789abcdef"));
    assert!(!frame::valid_key(b"0123"));
    for n in 0..10 {
        let data: Vec<u8> = (0..n).collect();
        let mut out = [0u8; 16];
        let len = frame::base64(&data, &mut out);
        assert_eq!(len, frame::base64_len(n as usize));
        assert_eq!(
            common::base64_decode(std::str::from_utf8(&out[..len]).unwrap()),
            data
        );
    }
    assert_eq!(frame::crc32(0, b"123456789"), 0xcbf4_3926);
    assert_eq!(
        frame::crc32(frame::crc32(0, b"1234"), b"56789"),
        0xcbf4_3926
    );
}

#[test]
fn guest_parses_what_the_host_builds() {
    let text: Vec<u8> = (0..=255u8).collect();
    let built = Job::new()
        .out(&text)
        .err("a, b: c %d")
        .sleep(50)
        .copy(1, 2, 1 << 20)
        .bulk(262_144)
        .ignore_cad()
        .panic("p")
        .hang()
        .triple()
        .exit(255)
        .to_string();
    let ops: Vec<_> = job::ops(built.as_bytes())
        .map(|(_, op)| op.unwrap())
        .collect();
    let mut buf = [0u8; 4096];
    assert_eq!(ops.len(), 10);
    assert!(matches!(ops[0], job::Op::Out(t) if job::decode(t, &mut buf) == &text[..]));
    assert!(matches!(ops[1], job::Op::Err(t) if job::decode(t, &mut buf) == b"a, b: c %d"));
    assert!(matches!(ops[2], job::Op::Sleep(50)));
    assert!(matches!(
        ops[3],
        job::Op::Copy {
            from: 1,
            to: 2,
            bytes: 1_048_576
        }
    ));
    assert!(matches!(ops[4], job::Op::Bulk(262_144)));
    assert!(matches!(ops[5], job::Op::IgnoreCad));
    assert!(matches!(ops[6], job::Op::Panic(b"p")));
    assert!(matches!(ops[7], job::Op::Hang));
    assert!(matches!(ops[8], job::Op::Triple));
    assert!(matches!(ops[9], job::Op::Exit(255)));
}

#[test]
fn guest_parses_the_newer_operations() {
    let built = Job::new()
        .bulk_err(5)
        .chunked(Stream::Stderr, 100, 7)
        .chunked(Stream::Stdout, 1, 1)
        .no_heartbeat()
        .raw([0x00, 0xab, 0xff])
        .hello_key(&[0x5a; 16])
        .on_cancel(42)
        .ignore_cancel()
        .poweroff()
        .to_string();
    let ops: Vec<_> = job::ops(built.as_bytes())
        .map(|(_, op)| op.unwrap())
        .collect();
    assert_eq!(ops.len(), 9);
    assert!(matches!(ops[0], job::Op::BulkErr(5)));
    assert!(matches!(
        ops[1],
        job::Op::Chunked {
            stream: job::Stream::Err,
            bytes: 100,
            chunk: 7
        }
    ));
    assert!(matches!(
        ops[2],
        job::Op::Chunked {
            stream: job::Stream::Out,
            bytes: 1,
            chunk: 1
        }
    ));
    assert!(matches!(ops[3], job::Op::NoHeartbeat));
    let mut raw = [0u8; 8];
    assert!(
        matches!(ops[4], job::Op::Raw(hex) if job::decode_hex(hex, &mut raw) == [0, 0xab, 0xff])
    );
    assert!(matches!(ops[5], job::Op::HelloKey(k) if k == [0x5a; 16]));
    assert!(matches!(ops[6], job::Op::OnCancel(42)));
    assert!(matches!(ops[7], job::Op::IgnoreCancel));
    assert!(matches!(ops[8], job::Op::PowerOff));
    let protocol_2_only: Vec<_> = ops.iter().map(job::Op::needs_protocol_2).collect();
    assert_eq!(
        protocol_2_only,
        [false, false, false, false, true, true, false, false, false]
    );
}

#[test]
fn guest_rejects_bad_jobs() {
    let reason = |job: &str| job::ops(job.as_bytes()).find_map(|(_, op)| op.err());
    assert_eq!(reason("out:a,,exit:0,"), None);
    assert_eq!(reason("exit:256"), Some("exit code above 255"));
    assert_eq!(reason("exit:-1"), Some("bad number"));
    assert_eq!(
        reason("sleep:99999999999999999999"),
        Some("number too large")
    );
    assert_eq!(reason("out:a:b"), Some("wrong number of arguments"));
    assert_eq!(reason("hang:1"), Some("wrong number of arguments"));
    assert_eq!(reason("copy:0:1"), Some("wrong number of arguments"));
    assert_eq!(reason("out:100%"), Some("bad percent escape"));
    assert_eq!(reason("out:%zz"), Some("bad percent escape"));
    assert_eq!(reason("reboot"), Some("unknown operation"));
    assert_eq!(reason("copy:0:1:2:3"), Some("too many arguments"));
    assert_eq!(
        reason("chunked:in:1:1"),
        Some("the stream is not `out` or `err`")
    );
    assert_eq!(reason("chunked:out:1:0"), Some("a chunk of 0 bytes"));
    assert_eq!(reason("chunked:out:1"), Some("wrong number of arguments"));
    assert_eq!(reason("raw:abc"), Some("not an even number of hex digits"));
    assert_eq!(reason("raw:zz"), Some("not an even number of hex digits"));
    assert_eq!(reason("raw:"), Some("not an even number of hex digits"));
    assert_eq!(reason("hello-key:00"), Some("not 32 hex digits"));
    assert_eq!(reason("on-cancel:256"), Some("exit code above 255"));
    assert_eq!(reason("poweroff:1"), Some("wrong number of arguments"));
    assert_eq!(reason("ignore-cancel:"), Some("wrong number of arguments"));
}

#[test]
fn guest_parses_the_network_operations() {
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(172, 31, 0, 1), 8080);
    let built = Job::new()
        .spin(250)
        .mmds("/latest/meta-data/x")
        .tcp_echo(7, 2)
        .udp_echo(9, 3)
        .connect(addr, std::time::Duration::from_millis(1500))
        .to_string();
    let ops: Vec<_> = job::ops(built.as_bytes())
        .map(|(_, op)| op.expect("valid"))
        .collect();
    let mut buf = [0u8; 64];
    assert!(matches!(ops[0], job::Op::Spin(250)));
    assert!(
        matches!(ops[1], job::Op::Mmds(p) if job::decode(p, &mut buf) == b"/latest/meta-data/x")
    );
    assert!(matches!(ops[2], job::Op::TcpEcho { port: 7, count: 2 }));
    assert!(matches!(ops[3], job::Op::UdpEcho { port: 9, count: 3 }));
    assert!(matches!(
        ops[4],
        job::Op::Connect {
            ip: b"172.31.0.1",
            port: 8080,
            timeout_ms: 1500
        }
    ));
    let protocol_1_only: Vec<_> = ops.iter().map(job::Op::needs_protocol_1).collect();
    assert_eq!(protocol_1_only, [false, true, true, true, true]);
    let reason = |job: &str| job::ops(job.as_bytes()).find_map(|(_, op)| op.err());
    assert_eq!(reason("tcp-echo:0:1"), Some("bad port"));
    assert_eq!(reason("udp-echo:65536:1"), Some("bad port"));
    assert_eq!(reason("connect:a.b:1:1"), Some("bad IPv4 address"));
    assert_eq!(
        reason("connect:1.2.3.4:1"),
        Some("wrong number of arguments")
    );
    assert_eq!(reason("mmds:%z"), Some("bad percent escape"));
}
