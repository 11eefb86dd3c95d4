//! The crate's one error type: every variant names the object it concerns and,
//! where there is one, the fix.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::Protocol;

/// Why a networking operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration cannot be used as it is.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// The execution id cannot name network objects.
    #[error("execution id {id:?} cannot name network objects: {reason}")]
    InvalidId {
        /// The offending id.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This manager already holds a network for the execution.
    #[error("execution {0:?} already has a network; remove it first")]
    AlreadyExists(String),
    /// A host port is already published (or listed twice in one request).
    #[error(
        "host port {port}/{protocol} is already published by {owner}; choose another host port"
    )]
    PortInUse {
        /// The host port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
        /// Who holds it: an execution id, "this request" or "a host process".
        owner: String,
    },
    /// A port mapping names port 0.
    #[error("port mapping {host}->{guest}/{protocol} uses port 0; both ports must be 1-65535")]
    InvalidPort {
        /// Host port of the mapping.
        host: u16,
        /// Guest port of the mapping.
        guest: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// The requested gateway is not inside the pool.
    #[error("gateway_ip {gateway} is outside the network pool {pool}; use an address of the pool such as {example}")]
    GatewayOutsidePool {
        /// The requested gateway.
        gateway: Ipv4Addr,
        /// The configured pool.
        pool: Ipv4Net,
        /// An acceptable gateway.
        example: Ipv4Addr,
    },
    /// The requested gateway is in the pool but is not a block's gateway address.
    #[error("gateway_ip {gateway} cannot be a gateway in pool {pool}: gateways are the 6th address of each /29 block (x.x.x.5, .13, .21, ... such as {example})")]
    GatewayNotUsable {
        /// The requested gateway.
        gateway: Ipv4Addr,
        /// The configured pool.
        pool: Ipv4Net,
        /// The nearest acceptable gateway.
        example: Ipv4Addr,
    },
    /// The requested gateway's block belongs to another execution.
    #[error("gateway_ip {gateway} is already the gateway of execution {owner}; choose another or omit gateway_ip")]
    GatewayInUse {
        /// The requested gateway.
        gateway: Ipv4Addr,
        /// The execution holding it.
        owner: String,
    },
    /// Every block of the pool is in use.
    #[error("network pool {pool} is exhausted ({blocks} executions hold all of it); remove executions or configure a larger pool")]
    PoolExhausted {
        /// The configured pool.
        pool: Ipv4Net,
        /// How many blocks it has.
        blocks: u32,
    },
    /// A netlink request failed.
    #[error("netlink: {what}")]
    Netlink {
        /// The operation and object.
        what: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// An nftables request failed.
    #[error("nftables: {what} (is `nft` installed and nf_tables loaded?)")]
    Nftables {
        /// The operation and object.
        what: String,
        /// The error from the nftables crate.
        #[source]
        source: nftables::helper::NftablesError,
    },
    /// A system call or file operation failed.
    #[error("{what}")]
    Io {
        /// The operation and object.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The persisted record of an execution's network does not fit this manager.
    #[error("cannot adopt network of execution {id:?}: {reason}")]
    Adopt {
        /// The execution id.
        id: String,
        /// Why it does not fit.
        reason: String,
    },
}

impl NetworkError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NetworkError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a netlink error with what was being done.
    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetworkError::Netlink {
            what: what.into(),
            source,
        }
    }
}
