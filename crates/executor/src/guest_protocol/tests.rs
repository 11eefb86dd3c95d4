//! Tests of the guest protocol decoder: the shared vectors, splitting, noise,
//! forgery, broken frames, bounded memory, and a randomized stream test.

use super::*;

fn key() -> Key {
    "0123456789abcdef0123456789abcdef".parse().unwrap()
}

fn other_key() -> Key {
    "fedcba9876543210fedcba9876543210".parse().unwrap()
}

/// Merges neighbouring events of the same byte kind, so that results do not
/// depend on how the input was split.
fn normalize(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::Console(a)), Event::Console(b)) => a.extend(b),
            (Some(Event::Stdout(a)), Event::Stdout(b)) => a.extend(b),
            (Some(Event::Stderr(a)), Event::Stderr(b)) => a.extend(b),
            (_, e) => out.push(e),
        }
    }
    out
}

fn decode_all(key: Key, stream: &[u8], chunks: &[usize]) -> Vec<Event> {
    let mut d = FrameDecoder::new(key);
    let mut events = Vec::new();
    let mut at = 0;
    for &n in chunks.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let end = (at + n.max(1)).min(stream.len());
        events.extend(d.push(&stream[at..end]));
        assert!(d.buffered() <= MAX_BUFFERED);
        at = end;
    }
    events.extend(d.finish());
    normalize(events)
}

/// A tiny deterministic generator, so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn vectors_encode_and_parse() {
    let (key, vectors) = testkit::protocol_vectors::vectors();
    let key: Key = key.parse().unwrap();
    let mut count = 0;
    for v in vectors {
        let (seq, payload, frame) = (v.seq, v.payload, v.frame.as_str());
        let kind = FrameKind::parse(v.kind.as_bytes()).unwrap();
        let encoded = encode_frame(&key, seq, kind, &payload);
        assert_eq!(encoded, format!("{frame}\n").into_bytes(), "seq {seq}");
        let parsed = parse_frame(&key, frame.as_bytes()).unwrap().unwrap();
        assert_eq!(parsed, Frame { seq, kind, payload });
        assert_eq!(parse_frame(&other_key(), frame.as_bytes()), Ok(None));
        count += 1;
    }
    assert_eq!(count, 9);
}

fn stream_with_noise() -> (Vec<u8>, Vec<Event>) {
    let k = key();
    let mut s = Vec::new();
    s.extend_from_slice(b"[    0.000000] Linux version 6.1\r\nboot noise ");
    s.extend(encode_frame(
        &k,
        0,
        FrameKind::Hello,
        b"fcexec-guest-protocol/1 agent=t",
    ));
    s.extend_from_slice(b"kernel: line\n");
    s.extend(encode_frame(&k, 1, FrameKind::Out, b"hello\n"));
    s.extend(encode_frame(&other_key(), 2, FrameKind::Out, b"forged"));
    s.extend(encode_frame(
        &k,
        2,
        FrameKind::Err,
        &[0, 159, 146, 150, 255],
    ));
    s.extend(encode_frame(&k, 3, FrameKind::Out, b"#FCX1 fake frame\n"));
    s.extend(encode_frame(&k, 4, FrameKind::Exit, b"42"));
    s.extend_from_slice(b"reboot: Restarting system\n");
    s.extend(encode_frame(&k, 5, FrameKind::Out, b"after exit"));
    let forged = encode_frame(&other_key(), 2, FrameKind::Out, b"forged");
    let mut tail = b"reboot: Restarting system\n".to_vec();
    tail.extend(encode_frame(&k, 5, FrameKind::Out, b"after exit"));
    let expected = vec![
        Event::Console(b"[    0.000000] Linux version 6.1\r\nboot noise ".to_vec()),
        Event::Hello("fcexec-guest-protocol/1 agent=t".into()),
        Event::Console(b"kernel: line\n".to_vec()),
        Event::Stdout(b"hello\n".to_vec()),
        Event::Console(forged),
        Event::Stderr(vec![0, 159, 146, 150, 255]),
        Event::Stdout(b"#FCX1 fake frame\n".to_vec()),
        Event::Exit(42),
        Event::Console(tail),
    ];
    (s, expected)
}

#[test]
fn whole_stream_with_noise_and_forgery() {
    let (s, expected) = stream_with_noise();
    assert_eq!(decode_all(key(), &s, &[s.len()]), expected);
}

#[test]
fn byte_by_byte_gives_the_same_events() {
    let (s, expected) = stream_with_noise();
    assert_eq!(decode_all(key(), &s, &[1]), expected);
}

#[test]
fn random_chunks_give_the_same_events() {
    let (s, expected) = stream_with_noise();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let chunks: Vec<usize> = (0..16).map(|_| 1 + rng.below(300)).collect();
        assert_eq!(
            decode_all(key(), &s, &chunks),
            expected,
            "chunks {chunks:?}"
        );
    }
}

#[test]
fn crlf_line_ends_are_accepted() {
    let mut f = encode_frame(&key(), 0, FrameKind::Hello, b"x");
    f.insert(f.len() - 1, b'\r');
    assert_eq!(decode_all(key(), &f, &[1]), vec![Event::Hello("x".into())]);
}

/// Builds a frame line with a correct crc over arbitrary field text.
fn raw_frame(fields: &str) -> Vec<u8> {
    let mut line = format!("#FCX1 {} {fields} ", key()).into_bytes();
    let crc = crc32fast::hash(&line);
    line.extend(format!("{crc:08x}\n").bytes());
    line
}

fn hello() -> Vec<u8> {
    encode_frame(&key(), 0, FrameKind::Hello, b"h")
}

fn errors(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ProtocolError(m) => Some(m.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn broken_frames_with_the_right_key_are_protocol_errors() {
    let mut bad_crc = encode_frame(&key(), 1, FrameKind::Out, b"data");
    let n = bad_crc.len();
    bad_crc[n - 2] = if bad_crc[n - 2] == b'0' { b'1' } else { b'0' };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad_crc, "crc mismatch"),
        (raw_frame("1 out @@@="), "not valid base64"),
        (raw_frame("1 out aGk"), "not valid base64"),
        (raw_frame("1 exit MjU2"), "exit code \"256\""),
        (raw_frame("1 exit YWJj"), "exit code \"abc\""),
        (raw_frame("1 exit -"), "exit code \"\""),
        (raw_frame("1 shout aGk="), "unknown kind"),
        (raw_frame("x1 out aGk="), "seq"),
        (raw_frame("99999999999 out aGk="), "seq"),
        (raw_frame("1 out  aGk="), "want seq, kind and payload"),
        (raw_frame("1 out"), "want seq, kind and payload"),
        (raw_frame("1 out "), "'-'"),
        (
            format!("#FCX1 {} 1 out aGk= 0000000G\n", key()).into_bytes(),
            "crc is not",
        ),
        (format!("#FCX1 {} \n", key()).into_bytes(), "no fields"),
    ];
    for (line, want) in cases {
        let mut s = hello();
        s.extend_from_slice(b"prefix ");
        s.extend_from_slice(&line);
        let events = decode_all(key(), &s, &[s.len()]);
        let errs = errors(&events);
        assert_eq!(errs.len(), 1, "{events:?}");
        assert!(
            errs[0].contains(want),
            "{:?}: {}",
            String::from_utf8_lossy(&line),
            errs[0]
        );
        // The console keeps the prefix but never the key.
        let console: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                Event::Console(c) => Some(c.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(console, b"prefix ");
    }
}

#[test]
fn sequence_gaps_and_misplaced_hello_are_reported() {
    let k = key();
    let mut s = hello();
    s.extend(encode_frame(&k, 2, FrameKind::Out, b"a"));
    s.extend(encode_frame(&k, 3, FrameKind::Hello, b"again"));
    s.extend(encode_frame(&k, 4, FrameKind::Out, b"b"));
    let events = decode_all(k.clone(), &s, &[7]);
    assert_eq!(
        events,
        vec![
            Event::Hello("h".into()),
            Event::ProtocolError("sequence gap: expected frame 1, got frame 2".into()),
            Event::Stdout(b"a".to_vec()),
            Event::ProtocolError("frame 3 is hello: hello must be frame 0 and only frame 0".into()),
            Event::Stdout(b"b".to_vec()),
        ]
    );
    let first_not_hello = encode_frame(&k, 0, FrameKind::Out, b"x");
    let events = decode_all(k, &first_not_hello, &[100]);
    assert!(errors(&events)[0].contains("frame 0 is out"), "{events:?}");
}

#[test]
fn fail_frame_finishes_the_decoder() {
    let mut s = hello();
    s.extend(encode_frame(
        &key(),
        1,
        FrameKind::Fail,
        b"panicked at main.rs:10",
    ));
    s.extend_from_slice(b"tail");
    let mut d = FrameDecoder::new(key());
    let mut events = d.push(&s);
    assert!(d.is_done());
    events.extend(d.finish());
    assert_eq!(
        events,
        vec![
            Event::Hello("h".into()),
            Event::Fail("panicked at main.rs:10".into()),
            Event::Console(b"tail".to_vec()),
        ]
    );
}

#[test]
fn last_line_without_newline_is_handled_at_finish() {
    let mut frame = hello();
    frame.pop();
    let mut d = FrameDecoder::new(key());
    assert!(d.push(&frame).is_empty());
    assert_eq!(d.finish(), vec![Event::Hello("h".into())]);
    let mut d = FrameDecoder::new(key());
    assert!(d.push(b"no newline").is_empty());
    assert_eq!(d.finish(), vec![Event::Console(b"no newline".to_vec())]);
    assert!(d.finish().is_empty());
}

#[test]
fn the_last_marker_of_a_line_starts_the_frame() {
    let mut s = b"#FCX1 junk #FCX1 ".to_vec();
    s.extend(hello());
    let events = decode_all(key(), &s, &[3]);
    assert_eq!(
        events,
        vec![
            Event::Console(b"#FCX1 junk #FCX1 ".to_vec()),
            Event::Hello("h".into())
        ]
    );
}

#[test]
fn long_lines_are_flushed_and_memory_stays_bounded() {
    let mut d = FrameDecoder::new(key());
    let mut console = 0;
    for _ in 0..1000 {
        for e in d.push(&[b'a'; 1000]) {
            match e {
                Event::Console(c) => console += c.len(),
                other => panic!("{other:?}"),
            }
        }
        assert!(d.buffered() <= MAX_BUFFERED);
    }
    // A frame after a megabyte of text on the same line is still found.
    let mut events = d.push(&hello());
    events.extend(d.finish());
    for e in events {
        match e {
            Event::Console(c) => console += c.len(),
            Event::Hello(h) => assert_eq!(h, "h"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(console, 1_000_000);
}

#[test]
fn over_long_frames_are_console_text_or_errors() {
    let k = key();
    // A line longer than the longest frame is not a frame: console text.
    let mut s = hello();
    let frame = encode_frame(&k, 1, FrameKind::Out, &vec![b'x'; MAX_PAYLOAD_BYTES + 30]);
    assert!(frame.len() > MAX_FRAME_LEN + 1);
    s.extend(&frame);
    let events = decode_all(k.clone(), &s, &[1000]);
    assert_eq!(
        events,
        vec![Event::Hello("h".into()), Event::Console(frame)]
    );
    // A short line whose payload is over 4096 characters is a broken frame.
    let frame = encode_frame(&k, 1, FrameKind::Out, &vec![b'x'; MAX_PAYLOAD_BYTES + 3]);
    assert!(frame.len() <= MAX_FRAME_LEN);
    assert!(matches!(
        parse_frame(&k, &frame[..frame.len() - 1]),
        Err(FrameError::Malformed(_))
    ));
    // The largest payload with the longest seq decodes ("fail" is 4 of the 5
    // kind bytes, so the newline brings the line to MAX_FRAME_LEN).
    let max = vec![0xabu8; MAX_PAYLOAD_BYTES];
    let frame = encode_frame(&k, u32::MAX, FrameKind::Fail, &max);
    assert_eq!(frame.len(), MAX_FRAME_LEN);
    assert_eq!(
        parse_frame(&k, &frame[..frame.len() - 1])
            .unwrap()
            .unwrap()
            .payload,
        max
    );
}

/// Random console noise (never a `#`, so never a marker), frames of random
/// binary output split at random, then random corruption: the clean stream
/// decodes exactly, and corrupted streams never panic, stay bounded, and
/// never yield bytes that no valid frame carried.
#[test]
fn randomized_streams() {
    let k = key();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let mut stream = Vec::new();
        let mut console = Vec::new();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        stream.extend(encode_frame(&k, 0, FrameKind::Hello, b"fuzz"));
        let mut seq = 1;
        for _ in 0..rng.below(20) {
            if rng.below(2) == 0 {
                let text: Vec<u8> = (0..rng.below(40))
                    .map(|_| match rng.below(20) {
                        0 => b'\n',
                        1 => b'\r',
                        _ => match b'!' + rng.below(94) as u8 {
                            b'#' => b'$',
                            c => c,
                        },
                    })
                    .collect();
                stream.extend(&text);
                console.extend(&text);
            } else {
                let data: Vec<u8> = (0..rng.below(5000)).map(|_| rng.next() as u8).collect();
                for chunk in data.chunks(MAX_PAYLOAD_BYTES) {
                    let (kind, sink) = if rng.below(3) == 0 {
                        (FrameKind::Err, &mut stderr)
                    } else {
                        (FrameKind::Out, &mut stdout)
                    };
                    stream.extend(encode_frame(&k, seq, kind, chunk));
                    sink.extend(chunk);
                    seq += 1;
                }
            }
        }
        stream.extend(encode_frame(&k, seq, FrameKind::Exit, b"7"));
        let chunks: Vec<usize> = (0..8).map(|_| 1 + rng.below(2000)).collect();
        let events = decode_all(k.clone(), &stream, &chunks);
        let mut got = (Vec::new(), Vec::new(), Vec::new(), None);
        for e in events {
            match e {
                Event::Console(c) => got.0.extend(c),
                Event::Stdout(c) => got.1.extend(c),
                Event::Stderr(c) => got.2.extend(c),
                Event::Exit(code) => got.3 = Some(code),
                Event::Hello(_) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            got,
            (console, stdout.clone(), stderr, Some(7)),
            "round {round}"
        );

        // Corrupt some bytes: whatever happens, no panic and no invented output.
        let mut bad = stream.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bad.len());
            bad[at] = rng.next() as u8;
        }
        let mut d = FrameDecoder::new(k.clone());
        let mut out = Vec::new();
        for chunk in bad.chunks(1 + rng.below(500)) {
            for e in d.push(chunk) {
                if let Event::Stdout(b) = e {
                    out.extend(b);
                }
            }
            assert!(d.buffered() <= MAX_BUFFERED);
        }
        d.finish();
        assert!(out.len() <= stdout.len(), "round {round}");
    }
}
