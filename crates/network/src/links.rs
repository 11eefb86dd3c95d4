//! Links, addresses and routes, all through rtnetlink: the veth pair between
//! host and namespace, addresses on both ends and on the TAP, the host's route
//! to the TAP link and the namespace's default route, and listing them for
//! removal and the sweep.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::netns::NetnsFd;
use crate::NetworkError;

/// One netlink socket answers one dump at a time (EBUSY otherwise), and the
/// manager's host handle is shared by concurrent tasks: dumps take turns.
static DUMP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A link as the sweep and the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Interface alias (`fcx:<id>` on fcexec's host veths).
    pub alias: Option<String>,
}

/// A route as the sweep and the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination network (0.0.0.0/0 for the default route).
    pub destination: Ipv4Net,
    /// Next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// The message itself, to delete the route.
    message: RouteMessage,
}

/// The errno of a netlink error, if it is one (positive, like `libc::ENOENT`).
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
    )
}

/// The index of link `name`, or `None` if there is no such link.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(NetworkError::netlink(format!("look up link {name}"), e)),
    }
}

/// Every link, with its alias.
pub async fn list_links(handle: &Handle) -> Result<Vec<LinkInfo>, NetworkError> {
    let _turn = DUMP.lock().await;
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetworkError::netlink("list links", e))?;
    Ok(links
        .into_iter()
        .map(|l| {
            let mut info = LinkInfo {
                index: l.header.index,
                name: String::new(),
                alias: None,
            };
            for attr in l.attributes {
                match attr {
                    LinkAttribute::IfName(n) => info.name = n,
                    LinkAttribute::IfAlias(a) => info.alias = Some(a),
                    _ => {}
                }
            }
            info
        })
        .collect())
}

/// The IPv4 addresses (with prefix) of link `index`.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<Ipv4Net>, NetworkError> {
    let _turn = DUMP.lock().await;
    let msgs: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetworkError::netlink(format!("list addresses of link {index}"), e))?;
    Ok(msgs
        .into_iter()
        .flat_map(|m| {
            let len = m.header.prefix_len;
            m.attributes.into_iter().filter_map(move |a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Ipv4Net::new(ip, len).ok(),
                _ => None,
            })
        })
        .collect())
}

/// Every IPv4 route of the main table.
pub async fn routes(handle: &Handle) -> Result<Vec<RouteInfo>, NetworkError> {
    let _turn = DUMP.lock().await;
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetworkError::netlink("list routes", e))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.table == rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN)
        .map(|m| {
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let (mut gateway, mut oif) = (None, None);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let destination =
                Ipv4Net::new(dst, m.header.destination_prefix_length).unwrap_or_default();
            RouteInfo {
                destination,
                gateway,
                oif,
                message: m,
            }
        })
        .collect())
}

/// Creates the veth pair `host` (in the caller's namespace, alias `alias`) and
/// `peer` (directly inside the namespace `ns`), and returns `host`'s index.
pub async fn create_veth(
    handle: &Handle,
    host: &str,
    alias: &str,
    peer: &str,
    ns: &NetnsFd,
) -> Result<u32, NetworkError> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .setns_by_fd(ns.raw())
        .build();
    let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| NetworkError::netlink(format!("create veth pair {host}/{peer}"), e))?;
    let index = link_index(handle, host).await?.ok_or_else(|| {
        NetworkError::io(
            format!("find veth {host}"),
            std::io::Error::other("it vanished after creation"),
        )
    })?;
    let set = LinkUnspec::new_with_index(index)
        .append_extra_attribute(LinkAttribute::IfAlias(alias.to_string()));
    handle
        .link()
        .set(set.build())
        .execute()
        .await
        .map_err(|e| NetworkError::netlink(format!("set alias {alias} on {host}"), e))?;
    Ok(index)
}

/// Adds `addr` to link `index` (named `name` in messages) and brings it up.
pub async fn address_and_up(
    handle: &Handle,
    index: u32,
    name: &str,
    addr: Option<Ipv4Net>,
) -> Result<(), NetworkError> {
    if let Some(addr) = addr {
        handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
            .map_err(|e| NetworkError::netlink(format!("add address {addr} to {name}"), e))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetworkError::netlink(format!("bring {name} up"), e))
}

/// Adds a route to `destination` via `gateway`.
pub async fn add_route(
    handle: &Handle,
    destination: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .gateway(gateway)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(|e| NetworkError::netlink(format!("add route {destination} via {gateway}"), e))
}

/// Deletes a listed route; a route already gone is not an error.
pub async fn delete_route(handle: &Handle, route: &RouteInfo) -> Result<(), NetworkError> {
    match handle.route().del(route.message.clone()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(NetworkError::netlink(
            format!("delete route {}", route.destination),
            e,
        )),
    }
}

/// Deletes link `name`; a link already gone is not an error. Returns whether
/// there was one.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, NetworkError> {
    let Some(index) = link_index(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) => Err(NetworkError::netlink(format!("delete link {name}"), e)),
    }
}
