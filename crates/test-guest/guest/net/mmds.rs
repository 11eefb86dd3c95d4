//! The `mmds:<path>` operation: fetches a path from Firecracker's MMDS
//! (version 2) at `169.254.169.254:80` and writes the response body to the
//! sink, exactly as received.
//!
//! Two HTTP/1.1 requests, each on its own TCP connection: `PUT
//! /latest/api/token` with `X-metadata-token-ttl-seconds: 60` gets a token;
//! `GET <path>` with `X-metadata-token: <token>` gets the value (no `Accept`
//! header, so the MMDS answers in its IMDS format: a string leaf is the bare
//! string). A response other than 200 is an [`Error::Status`].

use smoltcp::wire::Ipv4Address;

use super::{deadline, stack, Error};
use crate::Global;

const MMDS: Ipv4Address = Ipv4Address::new(169, 254, 169, 254);
const TIMEOUT_MS: u64 = 10_000;
const RESPONSE_MAX: usize = 32 * 1024;
const REQUEST_MAX: usize = 2048;
const TOKEN_MAX: usize = 256;

static RESPONSE: Global<[u8; RESPONSE_MAX]> = Global::new([0; RESPONSE_MAX]);

/// Fetches `path` (decoded) and writes the body to `out`.
pub fn fetch(path: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
    if path.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(Error::Msg(
            "mmds: the path has spaces or control characters",
        ));
    }
    // SAFETY: used only here, one request at a time.
    let response = unsafe { &mut *RESPONSE.get() };
    let mut request = Request::new();
    request.add(b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    request.add(b"X-metadata-token-ttl-seconds: 60\r\n\r\n");
    let body = exchange(request.bytes()?, response, "mmds token")?;
    if body.len() > TOKEN_MAX {
        return Err(Error::Msg("mmds token: too long"));
    }
    let mut token = [0u8; TOKEN_MAX];
    token[..body.len()].copy_from_slice(body);
    let token = &token[..body.len()];

    let mut request = Request::new();
    request.add(b"GET ");
    if !path.starts_with(b"/") {
        request.add(b"/");
    }
    request.add(path);
    request.add(b" HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token: ");
    request.add(token);
    request.add(b"\r\n\r\n");
    let body = exchange(request.bytes()?, response, "mmds")?;
    out(body);
    Ok(())
}

/// An HTTP request being put together.
struct Request {
    buf: [u8; REQUEST_MAX],
    len: usize,
    overflow: bool,
}

impl Request {
    fn new() -> Self {
        Request {
            buf: [0; REQUEST_MAX],
            len: 0,
            overflow: false,
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflow = true,
        }
    }

    fn bytes(&self) -> Result<&[u8], Error> {
        if self.overflow {
            return Err(Error::Msg("mmds: the request is too long"));
        }
        Ok(&self.buf[..self.len])
    }
}

/// Sends `request` to the MMDS on a new connection and reads the response
/// into `buf`; returns its body when the status is 200.
fn exchange<'b>(request: &[u8], buf: &'b mut [u8], what: &'static str) -> Result<&'b [u8], Error> {
    let s = stack()?;
    let until = deadline(TIMEOUT_MS)?;
    s.connect(0, MMDS, 80)?;
    let mut sent = 0;
    let mut got = 0;
    let done = s.run_until(until, |s| {
        let socket = s.tcp(0);
        if sent < request.len() && socket.can_send() {
            sent += socket.send_slice(&request[sent..]).unwrap_or(0);
        }
        while socket.can_recv() && got < buf.len() {
            got += socket.recv_slice(&mut buf[got..]).unwrap_or(0);
        }
        match parse(&buf[..got]) {
            Parsed::Complete(status, body) => Some(Ok((status, body))),
            Parsed::Bad(reason) => Some(Err(Error::Msg(reason))),
            Parsed::Partial if got == buf.len() => {
                Some(Err(Error::Msg("mmds: the response is too long")))
            }
            Parsed::Partial if !socket.is_active() => {
                Some(Err(Error::Msg("mmds: the connection closed early")))
            }
            Parsed::Partial => None,
        }
    });
    s.tcp(0).abort();
    s.poll();
    let (status, body) = done.ok_or(Error::Msg("mmds: no answer within 10 s"))??;
    if status != 200 {
        return Err(Error::Status(what, status));
    }
    Ok(&buf[body.0..body.1])
}

/// What the bytes of a response so far amount to.
enum Parsed {
    /// The status and the body's range.
    Complete(u16, (usize, usize)),
    Partial,
    Bad(&'static str),
}

fn parse(response: &[u8]) -> Parsed {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let head = &response[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|code| crate::job::number(code).ok())
        .and_then(|code| u16::try_from(code).ok());
    let Some(status) = status else {
        return Parsed::Bad("mmds: bad HTTP status line");
    };
    let mut length = 0usize;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = line[colon + 1..].trim_ascii();
            match crate::job::number(value) {
                Ok(n) => length = n as usize,
                Err(_) => return Parsed::Bad("mmds: bad Content-Length"),
            }
        }
    }
    let start = end + 4;
    if response.len() - start < length {
        return Parsed::Partial;
    }
    Parsed::Complete(status, (start, start + length))
}
