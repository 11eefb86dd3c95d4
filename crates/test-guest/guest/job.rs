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
        b"exit" => {
            want(1)?;
            let code = number(a[0])?;
            u8::try_from(code)
                .map(Op::Exit)
                .map_err(|_| "exit code above 255")
        }
        b"sleep" => want(1).and_then(|()| number(a[0])).map(Op::Sleep),
        b"bulk" => want(1).and_then(|()| number(a[0])).map(Op::Bulk),
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
        b"hang" => want(0).map(|()| Op::Hang),
        b"triple" => want(0).map(|()| Op::Triple),
        b"ignore-cad" => want(0).map(|()| Op::IgnoreCad),
        _ => Err("unknown operation"),
    }
}

/// A decimal `u64`.
fn number(text: &[u8]) -> Result<u64, &'static str> {
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
