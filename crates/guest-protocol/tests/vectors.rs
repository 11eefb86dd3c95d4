//! Checks the crate against docs/guest-protocol-v2-vectors.txt, both ways:
//! the fields encode to the frame, the frame decodes to the fields, every
//! strict prefix of a frame is incomplete, and malformed input gives the named
//! error, at the named point. The file's header describes its format.

use std::collections::BTreeSet;

use fcexec_guest_protocol::{
    decode_guest, decode_host, output_header, DecodeError, ExitStatus, GuestFrame, HostFrame,
    Stream, HEADER_LEN, KEY_LEN, OUTPUT_HEADER_LEN,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/guest-protocol-v2-vectors.txt"
);

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s:?}")))
        .collect()
}

/// A bytes field: `-`, or parts joined by `+`: hex, `<hex>*<n>`, `pattern:<n>`.
fn bytes(field: &str) -> Vec<u8> {
    if field == "-" {
        return Vec::new();
    }
    let mut out = Vec::new();
    for part in field.split('+') {
        if let Some(n) = part.strip_prefix("pattern:") {
            out.extend((0..num::<usize>(n)).map(|i| (i % 251) as u8));
        } else if let Some((unit, n)) = part.split_once('*') {
            out.extend(hex(unit).repeat(num(n)));
        } else {
            out.extend(hex(part));
        }
    }
    out
}

/// A text field: `-`, or UTF-8 with `%XX` escapes.
fn text(field: &str) -> String {
    if field == "-" {
        return String::new();
    }
    let mut out = Vec::new();
    let mut rest = field.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            out.extend(hex(std::str::from_utf8(&tail[..2]).unwrap()));
            rest = &tail[2..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
    String::from_utf8(out).expect("a text field is UTF-8")
}

fn num<T: std::str::FromStr>(field: &str) -> T {
    field
        .parse()
        .unwrap_or_else(|_| panic!("bad number {field:?}"))
}

fn variant(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::BadLength { .. } => "BadLength",
        DecodeError::UnknownKind(_) => "UnknownKind",
        DecodeError::BadBody { .. } => "BadBody",
    }
}

/// The vector lines, without comments and blank lines, with their line numbers.
fn lines() -> Vec<(usize, String)> {
    let file = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("{VECTORS}: {e}"));
    file.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// Checks what a decoder gives for every strict prefix of `bytes`: `Ok(None)`
/// below `first_error_at` bytes, `whole` (the answer for all of `bytes`) from
/// there on. Answers are compared by their `Debug` text, which keeps this
/// independent of the frames' lifetimes.
fn check_prefixes(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> String,
    first_error_at: usize,
    whole: &str,
    what: &str,
) {
    for k in 0..bytes.len() {
        let got = decode(&bytes[..k]);
        let want = if k < first_error_at {
            "Ok(None)"
        } else {
            whole
        };
        assert_eq!(got, want, "{what}: prefix of {k} bytes");
    }
}

fn guest_debug(b: &[u8]) -> String {
    format!("{:?}", decode_guest(b))
}

fn host_debug(b: &[u8]) -> String {
    format!("{:?}", decode_host(b))
}

struct Guest {
    frames: Vec<Vec<u8>>,
    kinds: BTreeSet<String>,
}

fn check_guest(fields: &[&str], what: &str, seen: &mut Guest) {
    let (kind, fields) = fields.split_first().unwrap();
    let (frame_field, fields) = fields.split_last().unwrap();
    let frame_bytes = bytes(frame_field);
    // Owned values the expected frame borrows from.
    let agent_or_reason;
    let data;
    let expected = match (*kind, fields) {
        ("hello", [version, key, caps, agent]) => {
            agent_or_reason = text(agent);
            GuestFrame::Hello {
                version: num(version),
                key: <[u8; KEY_LEN]>::try_from(hex(key)).unwrap(),
                capabilities: num(caps),
                agent: &agent_or_reason,
            }
        }
        ("stdout" | "stderr", [offset, d]) => {
            data = bytes(d);
            let stream = if *kind == "stdout" {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            let offset = num(offset);
            let header = output_header(stream, offset, data.len()).unwrap();
            assert_eq!(header[..], frame_bytes[..OUTPUT_HEADER_LEN], "{what}");
            GuestFrame::Output {
                stream,
                offset,
                data: &data,
            }
        }
        ("exit", [how, value, stdout_len, stderr_len]) => GuestFrame::Exit {
            status: match *how {
                "code" => ExitStatus::Code(num(value)),
                "signal" => ExitStatus::Signal(num(value)),
                other => panic!("{what}: exit {other}?"),
            },
            stdout_len: num(stdout_len),
            stderr_len: num(stderr_len),
        },
        ("fail", [reason]) => {
            agent_or_reason = text(reason);
            GuestFrame::Fail {
                reason: &agent_or_reason,
            }
        }
        ("heartbeat", [ms]) => GuestFrame::Heartbeat { uptime_ms: num(ms) },
        _ => panic!("{what}: unknown guest vector"),
    };
    let mut key = kind.to_string();
    if let GuestFrame::Exit { status, .. } = expected {
        key = format!(
            "exit {}",
            if matches!(status, ExitStatus::Code(_)) {
                "code"
            } else {
                "signal"
            }
        );
    }
    seen.kinds.insert(key);

    assert_eq!(expected.encoded_len(), frame_bytes.len(), "{what}");
    let mut out = vec![0xa5; frame_bytes.len() + 3];
    assert_eq!(expected.encode(&mut out), Ok(frame_bytes.len()), "{what}");
    assert_eq!(out[..frame_bytes.len()], frame_bytes[..], "{what}: encode");
    assert_eq!(
        out[frame_bytes.len()..],
        [0xa5; 3],
        "{what}: wrote past the frame"
    );

    let whole = Ok(Some((expected, frame_bytes.len())));
    assert_eq!(decode_guest(&frame_bytes), whole, "{what}: decode");
    let mut longer = frame_bytes.clone();
    longer.extend_from_slice(&frame_bytes);
    assert_eq!(decode_guest(&longer), whole, "{what}: decode with more");
    check_prefixes(&frame_bytes, guest_debug, usize::MAX, "", what);
    assert!(decode_host(&frame_bytes).is_err(), "{what}: a host frame?");
    seen.frames.push(frame_bytes);
}

fn check_host(fields: &[&str], what: &str, seen: &mut Guest) {
    let (kind, fields) = fields.split_first().unwrap();
    let (frame_field, fields) = fields.split_last().unwrap();
    let frame_bytes = bytes(frame_field);
    let expected = match (*kind, fields) {
        ("attach", [o, e]) => HostFrame::Attach {
            stdout_offset: num(o),
            stderr_offset: num(e),
        },
        ("ack", [o, e]) => HostFrame::Ack {
            stdout_offset: num(o),
            stderr_offset: num(e),
        },
        ("cancel", [g]) => HostFrame::Cancel { grace_ms: num(g) },
        ("done", []) => HostFrame::Done,
        _ => panic!("{what}: unknown host vector"),
    };
    seen.kinds.insert(kind.to_string());
    assert_eq!(expected.encoded_len(), frame_bytes.len(), "{what}");
    assert!(frame_bytes.len() <= HostFrame::MAX_LEN, "{what}");
    let mut out = [0xa5; HostFrame::MAX_LEN + 1];
    assert_eq!(expected.encode(&mut out), Ok(frame_bytes.len()), "{what}");
    assert_eq!(out[..frame_bytes.len()], frame_bytes[..], "{what}: encode");
    let whole = Ok(Some((expected, frame_bytes.len())));
    assert_eq!(decode_host(&frame_bytes), whole, "{what}: decode");
    check_prefixes(&frame_bytes, host_debug, usize::MAX, "", what);
    assert!(
        decode_guest(&frame_bytes).is_err(),
        "{what}: a guest frame?"
    );
    seen.frames.push(frame_bytes);
}

/// `bad-*` lines: `<bytes> <at> <variant> <message...>`.
fn check_bad(
    fields: &[&str],
    what: &str,
    decode: impl Fn(&[u8]) -> Result<(), DecodeError>,
    debug: impl Fn(&[u8]) -> String,
    variants: &mut BTreeSet<String>,
) {
    let [input, at, name, message @ ..] = fields else {
        panic!("{what}: short bad line");
    };
    let input = bytes(input);
    let error = match decode(&input) {
        Err(error) => error,
        Ok(()) => panic!("{what}: decoded as {}", debug(&input)),
    };
    assert_eq!(variant(&error), *name, "{what}: {error:?}");
    assert_eq!(error.to_string(), message.join(" "), "{what}");
    let first_error_at = match *at {
        "header" => HEADER_LEN,
        "body" => input.len(),
        other => panic!("{what}: at {other}?"),
    };
    check_prefixes(
        &input,
        debug,
        first_error_at,
        &format!("Err({error:?})"),
        what,
    );
    variants.insert(format!("{name} at {at}"));
}

#[test]
fn vectors() {
    let mut guest = Guest {
        frames: Vec::new(),
        kinds: BTreeSet::new(),
    };
    let mut host = Guest {
        frames: Vec::new(),
        kinds: BTreeSet::new(),
    };
    let mut bad_guest = BTreeSet::new();
    let mut bad_host = BTreeSet::new();
    for (number, line) in lines() {
        let what = format!("line {number}");
        let fields: Vec<&str> = line.split(' ').collect();
        match fields[0] {
            "guest" => check_guest(&fields[1..], &what, &mut guest),
            "host" => check_host(&fields[1..], &what, &mut host),
            "bad-guest" => check_bad(
                &fields[1..],
                &what,
                |b| decode_guest(b).map(drop),
                guest_debug,
                &mut bad_guest,
            ),
            "bad-host" => check_bad(
                &fields[1..],
                &what,
                |b| decode_host(b).map(drop),
                host_debug,
                &mut bad_host,
            ),
            other => panic!("{what}: unknown line kind {other:?}"),
        }
    }

    // Every kind and every error is covered.
    let names = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        guest.kinds,
        names(&[
            "hello",
            "stdout",
            "stderr",
            "exit code",
            "exit signal",
            "fail",
            "heartbeat"
        ])
    );
    assert_eq!(host.kinds, names(&["attach", "ack", "cancel", "done"]));
    assert_eq!(
        bad_guest,
        names(&[
            "BadLength at header",
            "UnknownKind at header",
            "BadBody at header",
            "BadBody at body"
        ])
    );
    assert_eq!(
        bad_host,
        names(&[
            "BadLength at header",
            "UnknownKind at header",
            "BadBody at header"
        ])
    );

    // All the valid frames of a direction, back to back, decode one by one.
    let stream: Vec<u8> = guest.frames.concat();
    let mut at = 0;
    for frame in &guest.frames {
        let (_, n) = decode_guest(&stream[at..]).unwrap().unwrap();
        assert_eq!(stream[at..at + n], frame[..]);
        at += n;
    }
    assert_eq!(at, stream.len());
    let stream: Vec<u8> = host.frames.concat();
    let mut at = 0;
    for frame in &host.frames {
        let (_, n) = decode_host(&stream[at..]).unwrap().unwrap();
        assert_eq!(stream[at..at + n], frame[..]);
        at += n;
    }
    assert_eq!(at, stream.len());
}
