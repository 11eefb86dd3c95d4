//! The TCP/IP stack: one smoltcp interface on the virtio-net device, its
//! addresses and routes, and a fixed set of sockets in static memory (two TCP
//! sockets, one UDP socket; no allocator), set up on first use.
//!
//! Addresses: the `ip=` client address with its prefix and a default route
//! through its gateway; and `169.254.0.2/16`, so that the MMDS address
//! `169.254.169.254` is on-link (Firecracker answers its ARP requests and
//! serves it on an MMDS-enabled interface).
//!
//! Waiting ([`Stack::run_until`]) polls the device without interrupts: it
//! spins while packets flow and, after `IDLE_AFTER_NS` without any, halts in
//! 1 ms steps (which also lets Ctrl+Alt+Del through).

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use super::device::Net;
use super::ipconf::{self, IpConfig};
use super::Error;
use crate::{clock, cmdline, sys, Global};

/// The guest's link-local address, for reaching the MMDS.
pub const LINK_LOCAL: Ipv4Address = Ipv4Address::new(169, 254, 0, 2);
/// Bytes of each TCP socket's receive and send buffers.
const TCP_BUF: usize = 16 * 1024;
/// Datagrams and bytes of the UDP socket's receive and send buffers.
const UDP_PACKETS: usize = 16;
const UDP_BUF: usize = 16 * 1024;
/// Spin this long after the last packet before halting between polls.
const IDLE_AFTER_NS: u64 = 5_000_000;
const IDLE_STEP_NS: u64 = 1_000_000;
/// Ephemeral ports are taken from here upwards.
const FIRST_EPHEMERAL: u16 = 49152;

/// The interface, the device and the sockets.
pub struct Stack {
    iface: Interface,
    net: Net,
    sockets: SocketSet<'static>,
    tcp: [SocketHandle; 2],
    udp: SocketHandle,
    next_port: u16,
    last_progress: u64,
}

static STACK: Global<Option<Stack>> = Global::new(None);
static STORAGE: Global<[SocketStorage<'static>; 3]> = Global::new([SocketStorage::EMPTY; 3]);
static TCP_BUFS: Global<[[u8; TCP_BUF]; 4]> = Global::new([[0; TCP_BUF]; 4]);
static UDP_META: Global<[[udp::PacketMetadata; UDP_PACKETS]; 2]> =
    Global::new([[udp::PacketMetadata::EMPTY; UDP_PACKETS]; 2]);
static UDP_BUFS: Global<[[u8; UDP_BUF]; 2]> = Global::new([[0; UDP_BUF]; 2]);

/// The stack, set up on first use from the device and the command line.
pub fn get(device: usize, cmdline: &[u8]) -> Result<&'static mut Stack, Error> {
    // SAFETY: the stack is used by one operation at a time, through the one
    // reference this returns; nothing else touches the static.
    let slot = unsafe { &mut *STACK.get() };
    if slot.is_none() {
        *slot = Some(setup(device, cmdline)?);
    }
    slot.as_mut().ok_or(Error::Msg("no network stack"))
}

fn setup(device: usize, cmdline: &[u8]) -> Result<Stack, Error> {
    let ip = cmdline::param(cmdline, b"ip=").ok_or(Error::Msg("no ip= on the command line"))?;
    let IpConfig {
        client,
        prefix,
        gateway,
    } = ipconf::parse(ip).map_err(Error::Msg)?;
    let now = now_ns()?;
    let mut net = Net::init(device).map_err(Error::Msg)?;
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(net.mac())));
    config.random_seed = now ^ 0x9e37_79b9_7f4a_7c15;
    let mut iface = Interface::new(config, &mut net, instant(now));
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(client.into(), prefix));
        let _ = addrs.push(IpCidr::new(LINK_LOCAL.into(), 16));
    });
    if let Some(gateway) = gateway {
        iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .map_err(|_| Error::Msg("cannot add the default route"))?;
    }
    // SAFETY: `setup` runs once; these statics are handed out here only, and
    // live forever.
    let (storage, tcp_bufs, udp_meta, udp_bufs) = unsafe {
        (
            &mut *STORAGE.get(),
            &mut *TCP_BUFS.get(),
            &mut *UDP_META.get(),
            &mut *UDP_BUFS.get(),
        )
    };
    let mut sockets = SocketSet::new(&mut storage[..]);
    let [b0, b1, b2, b3] = tcp_bufs;
    let tcp = [
        sockets.add(tcp_socket(b0, b1)),
        sockets.add(tcp_socket(b2, b3)),
    ];
    let [m0, m1] = udp_meta;
    let [u0, u1] = udp_bufs;
    let udp = sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(&mut m0[..], &mut u0[..]),
        udp::PacketBuffer::new(&mut m1[..], &mut u1[..]),
    ));
    Ok(Stack {
        iface,
        net,
        sockets,
        tcp,
        udp,
        next_port: FIRST_EPHEMERAL + (now % 1000) as u16,
        last_progress: now,
    })
}

fn tcp_socket(rx: &'static mut [u8], tx: &'static mut [u8]) -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx))
}

/// Nanoseconds of kvmclock, or an error without it.
pub fn now_ns() -> Result<u64, Error> {
    clock::now_ns().ok_or(Error::Msg("no clock (kvmclock is missing)"))
}

fn instant(ns: u64) -> Instant {
    Instant::from_micros((ns / 1000) as i64)
}

impl Stack {
    /// Moves packets between the device and the sockets; true when anything
    /// happened.
    pub fn poll(&mut self) -> bool {
        let now = clock::now_ns().unwrap_or(0);
        let changed = self
            .iface
            .poll(instant(now), &mut self.net, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged;
        self.net.kick();
        if changed || self.net.rx_ready() {
            self.last_progress = now;
        }
        changed
    }

    /// Polls, then calls `step` until it returns `Some` (its value is
    /// returned) or until kvmclock passes `deadline_ns` (`None`).
    pub fn run_until<T>(
        &mut self,
        deadline_ns: u64,
        mut step: impl FnMut(&mut Stack) -> Option<T>,
    ) -> Option<T> {
        self.last_progress = clock::now_ns().unwrap_or(0);
        loop {
            self.poll();
            if let Some(value) = step(self) {
                self.poll(); // send what `step` queued
                return Some(value);
            }
            let now = clock::now_ns().unwrap_or(u64::MAX);
            if now >= deadline_ns {
                return None;
            }
            if now.saturating_sub(self.last_progress) > IDLE_AFTER_NS {
                sys::idle_until(now.saturating_add(IDLE_STEP_NS).min(deadline_ns));
            } else {
                core::hint::spin_loop();
            }
        }
    }

    /// TCP socket `index` (0 or 1).
    pub fn tcp(&mut self, index: usize) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp[index % 2])
    }

    /// The UDP socket.
    pub fn udp(&mut self) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(self.udp)
    }

    /// Starts connecting TCP socket `index` to `addr:port` from a fresh
    /// ephemeral port (aborting whatever the socket was doing).
    pub fn connect(&mut self, index: usize, addr: Ipv4Address, port: u16) -> Result<(), Error> {
        let local = self.next_port;
        self.next_port = if local == u16::MAX {
            FIRST_EPHEMERAL
        } else {
            local + 1
        };
        let handle = self.tcp[index % 2];
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.abort();
        socket
            .connect(self.iface.context(), (addr, port), local)
            .map_err(|_| Error::Msg("cannot start the connection"))
    }
}
