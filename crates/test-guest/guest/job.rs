//! Test guest jobs: parsing the job string (`docs/guest-protocol.md`, "Test
//! guest jobs") and percent-decoding its text.
//!
//! A job is operations separated by `,` (empty ones are skipped), an
//! operation's arguments are separated by `:`, and text is percent-encoded.

/// One operation of a job. Text is still percent-encoded.
#[derive(Clone, Copy)]
pub enum Op<'a> {
    /// `out:<text>`
    Out(&'a [u8]),
    /// `err:<text>`
    Err(&'a [u8]),
    /// `exit:<code>`
    Exit(u8),
    /// `sleep:<ms>`
    Sleep(u64),
    /// `hang`
    Hang,
    /// `triple`
    Triple,
    /// `panic:<text>`
    Panic(&'a [u8]),
    /// `copy:<from>:<to>:<bytes>`
    Copy { from: usize, to: usize, bytes: u64 },
    /// `bulk:<bytes>`
    Bulk(u64),
    /// `ignore-cad`
    IgnoreCad,
    /// `bulk-err:<bytes>`
    BulkErr(u64),
    /// `chunked:<out|err>:<bytes>:<chunk>`
    Chunked {
        stream: Stream,
        bytes: u64,
        chunk: u64,
    },
    /// `no-heartbeat`
    NoHeartbeat,
    /// `raw:<hex>`, still hex (protocol 2 only).
    Raw(&'a [u8]),
    /// `hello-key:<32 hex digits>` (protocol 2 only).
    HelloKey([u8; 16]),
    /// `poweroff`
    PowerOff,
    /// `on-cancel:<code>`
    OnCancel(u8),
    /// `ignore-cancel`
    IgnoreCancel,
    /// `spin:<ms>`: keep the vCPU busy for that long.
    Spin(u64),
    /// `mmds:<path>`, the path still percent-encoded (protocol 1 and plain).
    Mmds(&'a [u8]),
    /// `tcp-echo:<port>:<count>` (protocol 1 and plain).
    TcpEcho { port: u16, count: u64 },
    /// `udp-echo:<port>:<count>` (protocol 1 and plain).
    UdpEcho { port: u16, count: u64 },
    /// `connect:<ipv4>:<port>:<timeout_ms>` (protocol 1 and plain).
    Connect {
        ip: &'a [u8],
        port: u16,
        timeout_ms: u64,
    },
}

/// An output stream of the workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    /// Standard output (`out`).
    Out,
    /// Standard error (`err`).
    Err,
}

impl Op<'_> {
    /// True for operations that only protocol 2 has.
    pub fn needs_protocol_2(&self) -> bool {
        matches!(self, Op::Raw(_) | Op::HelloKey(_))
    }

    /// True for the network operations, which protocol 2 does not have.
    pub fn needs_protocol_1(&self) -> bool {
        matches!(
            self,
            Op::Mmds(_) | Op::TcpEcho { .. } | Op::UdpEcho { .. } | Op::Connect { .. }
        )
    }
}

/// The operations of a job, each parsed or with the reason it is invalid.
pub fn ops(job: &[u8]) -> impl Iterator<Item = (&[u8], Result<Op<'_>, &'static str>)> {
    job.split(|&b| b == b',')
        .filter(|op| !op.is_empty())
        .map(|op| (op, parse(op)))
}

/// Parses one operation.
fn parse(op: &[u8]) -> Result<Op<'_>, &'static str> {
    let mut args = op.split(|&b| b == b':');
    let name = args.next().unwrap_or_default();
    let mut a = [&[][..]; 3];
    let mut n = 0;
    for arg in args {
        if n == a.len() {
            return Err("too many arguments");
        }
        a[n] = arg;
        n += 1;
    }
    let want = |count: usize| {
        if n == count {
            Ok(())
        } else {
            Err("wrong number of arguments")
        }
    };
    match name {
        b"out" | b"err" | b"panic" => {
            want(1)?;
            check_text(a[0])?;
            Ok(match name {
                b"out" => Op::Out(a[0]),
                b"err" => Op::Err(a[0]),
                _ => Op::Panic(a[0]),
            })
        }
        b"exit" => want(1).and_then(|()| code(a[0])).map(Op::Exit),
        b"on-cancel" => want(1).and_then(|()| code(a[0])).map(Op::OnCancel),
        b"sleep" => want(1).and_then(|()| number(a[0])).map(Op::Sleep),
        b"bulk" => want(1).and_then(|()| number(a[0])).map(Op::Bulk),
        b"bulk-err" => want(1).and_then(|()| number(a[0])).map(Op::BulkErr),
        b"chunked" => {
            want(3)?;
            let stream = match a[0] {
                b"out" => Stream::Out,
                b"err" => Stream::Err,
                _ => return Err("the stream is not `out` or `err`"),
            };
            let chunk = number(a[2])?;
            if chunk == 0 {
                return Err("a chunk of 0 bytes");
            }
            Ok(Op::Chunked {
                stream,
                bytes: number(a[1])?,
                chunk,
            })
        }
        b"raw" => {
            want(1)?;
            if a[0].is_empty()
                || a[0].len() % 2 != 0
                || !a[0].iter().all(|&b| hex_digit(b).is_some())
            {
                return Err("not an even number of hex digits");
            }
            Ok(Op::Raw(a[0]))
        }
        b"hello-key" => {
            want(1)?;
            let mut key = [0u8; 16];
            if a[0].len() != 32 || !a[0].iter().all(|&b| hex_digit(b).is_some()) {
                return Err("not 32 hex digits");
            }
            decode_hex(a[0], &mut key);
            Ok(Op::HelloKey(key))
        }
        b"copy" => {
            want(3)?;
            let from = usize::try_from(number(a[0])?).map_err(|_| "bad drive index")?;
            let to = usize::try_from(number(a[1])?).map_err(|_| "bad drive index")?;
            Ok(Op::Copy {
                from,
                to,
                bytes: number(a[2])?,
            })
        }
        b"spin" => want(1).and_then(|()| number(a[0])).map(Op::Spin),
        b"mmds" => {
            want(1)?;
            check_text(a[0])?;
            Ok(Op::Mmds(a[0]))
        }
        b"tcp-echo" | b"udp-echo" => {
            want(2)?;
            let port = port(a[0])?;
            let count = number(a[1])?;
            Ok(if name == b"tcp-echo" {
                Op::TcpEcho { port, count }
            } else {
                Op::UdpEcho { port, count }
            })
        }
        b"connect" => {
            want(3)?;
            if a[0].is_empty() || !a[0].iter().all(|&b| b.is_ascii_digit() || b == b'.') {
                return Err("bad IPv4 address");
            }
            Ok(Op::Connect {
                ip: a[0],
                port: port(a[1])?,
                timeout_ms: number(a[2])?,
            })
        }
        b"hang" => want(0).map(|()| Op::Hang),
        b"triple" => want(0).map(|()| Op::Triple),
        b"ignore-cad" => want(0).map(|()| Op::IgnoreCad),
        b"no-heartbeat" => want(0).map(|()| Op::NoHeartbeat),
        b"poweroff" => want(0).map(|()| Op::PowerOff),
        b"ignore-cancel" => want(0).map(|()| Op::IgnoreCancel),
        _ => Err("unknown operation"),
    }
}

/// A decimal `u64`.
pub fn number(text: &[u8]) -> Result<u64, &'static str> {
    if text.is_empty() || text.len() > 20 {
        return Err("bad number");
    }
    text.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err("bad number");
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or("number too large")
    })
}

/// A port number, 1..=65535.
fn port(text: &[u8]) -> Result<u16, &'static str> {
    match u16::try_from(number(text)?) {
        Ok(0) | Err(_) => Err("bad port"),
        Ok(port) => Ok(port),
    }
}

/// An exit code, 0..=255.
fn code(text: &[u8]) -> Result<u8, &'static str> {
    u8::try_from(number(text)?).map_err(|_| "exit code above 255")
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Checks that every `%` starts a valid escape.
fn check_text(text: &[u8]) -> Result<(), &'static str> {
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            match (
                text.get(i + 1).copied().and_then(hex_digit),
                text.get(i + 2).copied().and_then(hex_digit),
            ) {
                (Some(_), Some(_)) => i += 3,
                _ => return Err("bad percent escape"),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Decodes hex digits (already checked) into `out`, which must be at least
/// half as long; returns the decoded bytes.
pub fn decode_hex<'o>(text: &[u8], out: &'o mut [u8]) -> &'o [u8] {
    let mut n = 0;
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let hi = hex_digit(pair[0]).unwrap_or(0);
        let lo = hex_digit(pair[1]).unwrap_or(0);
        *byte = hi << 4 | lo;
        n += 1;
    }
    &out[..n]
}

/// Percent-decodes `text` (already checked) into `out`, which must be at least
/// as long; returns the decoded bytes.
pub fn decode<'o>(text: &[u8], out: &'o mut [u8]) -> &'o [u8] {
    let mut i = 0;
    let mut n = 0;
    while i < text.len() && n < out.len() {
        let escaped = if text[i] == b'%' {
            text.get(i + 1)
                .copied()
                .and_then(hex_digit)
                .zip(text.get(i + 2).copied().and_then(hex_digit))
        } else {
            None
        };
        match escaped {
            Some((hi, lo)) => {
                out[n] = hi << 4 | lo;
                i += 3;
            }
            None => {
                out[n] = text[i];
                i += 1;
            }
        }
        n += 1;
    }
    &out[..n]
}
