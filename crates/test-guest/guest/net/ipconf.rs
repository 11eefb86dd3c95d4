//! The guest's address, from the Linux-style kernel parameter
//! `ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>`
//! (for example `ip=172.31.0.2::172.31.0.1:255.255.255.252::eth0:off`). Only
//! the client address, the gateway and the netmask are used; the others may
//! be empty and are ignored.

use smoltcp::wire::Ipv4Address;

/// What `ip=` configures.
#[derive(Clone, Copy)]
pub struct IpConfig {
    /// The guest's address.
    pub client: Ipv4Address,
    /// The prefix length of its network, from the netmask.
    pub prefix: u8,
    /// The default gateway (the host's side of the TAP), if any.
    pub gateway: Option<Ipv4Address>,
}

/// Parses the value of `ip=`.
pub fn parse(value: &[u8]) -> Result<IpConfig, &'static str> {
    let mut fields = value.split(|&b| b == b':');
    let client = fields.next().unwrap_or_default();
    let _server = fields.next();
    let gateway = fields.next().unwrap_or_default();
    let netmask = fields.next().unwrap_or_default();
    let client = address(client).ok_or("ip=: bad client address")?;
    let gateway = match gateway {
        b"" => None,
        text => Some(address(text).ok_or("ip=: bad gateway address")?),
    };
    let prefix = match netmask {
        b"" => 24,
        text => {
            let mask = u32::from(address(text).ok_or("ip=: bad netmask")?);
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                return Err("ip=: the netmask is not contiguous");
            }
            mask.leading_ones() as u8
        }
    };
    Ok(IpConfig {
        client,
        prefix,
        gateway,
    })
}

/// A dotted-quad IPv4 address.
pub fn address(text: &[u8]) -> Option<Ipv4Address> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'));
        *octet = u8::try_from(n).ok()?;
    }
    parts.next().is_none().then(|| Ipv4Address::from(octets))
}
