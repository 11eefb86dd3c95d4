//! The echo servers: `tcp-echo:<port>:<count>` serves `count` connections
//! (two at a time at most), echoing everything each peer sends until it
//! closes; `udp-echo:<port>:<count>` sends `count` datagrams back to their
//! senders. Both write `listening on <port>\n` to the sink once they listen,
//! and run until done (no timeout).

use core::fmt::Write;

use smoltcp::socket::tcp::State;

use super::{stack, Error};

/// Serves `count` TCP connections on `port`.
pub fn tcp_echo(port: u16, count: u64, out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
    let s = stack()?;
    // Per socket: listening or connected (true), or idle (false).
    let mut busy = [false; 2];
    let mut served = 0u64;
    let mut announced = false;
    for i in 0..2 {
        s.tcp(i).abort();
    }
    s.poll();
    let result = s.run_until(u64::MAX, |s| {
        for (i, busy) in busy.iter_mut().enumerate() {
            let socket = s.tcp(i);
            if *busy && matches!(socket.state(), State::Closed | State::TimeWait) {
                socket.abort();
                *busy = false;
                served += 1;
            }
        }
        if served >= count {
            return Some(Ok(()));
        }
        let in_flight = busy.iter().filter(|&&b| b).count() as u64;
        for (i, busy) in busy.iter_mut().enumerate() {
            let socket = s.tcp(i);
            if !*busy && served + in_flight < count {
                if socket.listen(port).is_err() {
                    return Some(Err(Error::Msg("tcp-echo: cannot listen")));
                }
                *busy = true;
                break; // one more listener per round is enough
            }
        }
        if !announced {
            announced = true;
            announce(port, out);
        }
        for i in 0..2 {
            echo_some(s.tcp(i));
        }
        None
    });
    result.unwrap_or(Ok(()))
}

/// Echoes what one connection has received, as far as there is room to
/// send, and closes the connection once the peer has closed and all is sent.
fn echo_some(socket: &mut smoltcp::socket::tcp::Socket) {
    let mut chunk = [0u8; 2048];
    while socket.can_recv() && socket.can_send() {
        let room = socket.send_capacity() - socket.send_queue();
        let want = room.min(chunk.len());
        let n = socket.recv_slice(&mut chunk[..want]).unwrap_or(0);
        if n == 0 {
            break;
        }
        let _ = socket.send_slice(&chunk[..n]);
    }
    if socket.state() == State::CloseWait && socket.recv_queue() == 0 && socket.send_queue() == 0 {
        socket.close();
    }
}

/// Echoes `count` UDP datagrams on `port`.
pub fn udp_echo(port: u16, count: u64, out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
    let s = stack()?;
    let socket = s.udp();
    socket.close();
    socket
        .bind(port)
        .map_err(|_| Error::Msg("udp-echo: cannot bind"))?;
    s.poll();
    announce(port, out);
    let mut echoed = 0u64;
    let mut datagram = [0u8; 2048];
    s.run_until(u64::MAX, |s| {
        let socket = s.udp();
        while echoed < count && socket.can_recv() && socket.can_send() {
            let Ok((n, meta)) = socket.recv_slice(&mut datagram) else {
                break;
            };
            let _ = socket.send_slice(&datagram[..n], meta.endpoint);
            echoed += 1;
        }
        (echoed >= count).then_some(())
    });
    // Let the last replies leave before the socket closes.
    let until = super::deadline(1000)?;
    s.run_until(until, |s| (s.udp().send_queue() == 0).then_some(()));
    s.udp().close();
    Ok(())
}

/// Writes `listening on <port>\n` to the sink.
fn announce(port: u16, out: &mut dyn FnMut(&[u8])) {
    let mut line = Line::default();
    let _ = writeln!(line, "listening on {port}");
    out(&line.buf[..line.len]);
}

#[derive(Default)]
struct Line {
    buf: [u8; 32],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = &mut self.buf[self.len..];
        let n = s.len().min(room.len());
        room[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
