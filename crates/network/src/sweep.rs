//! The sweep: when an executor starts, it removes the network objects of
//! executions it no longer has — left by a crash, or by a create that died
//! half way.
//!
//! Only objects of this manager's pool are touched (other executors, with
//! other pools, may share the host), and never those of executions the
//! manager created or adopted itself. What belongs to the pool:
//!
//! - host links `fcx<hex>` named after a block of the pool;
//! - main-table routes to a /30 of the pool whose block is not kept;
//! - namespaces `fcx-<id>` whose `veth0` has an address in the pool; and
//!   those without one (a create that died early, or one still running in
//!   another executor) once they are older than a grace period.
//! - host rules commented `fcx:<id>` that DNAT into the pool.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::names::{self, NS_VETH};
use crate::{firewall, links, netns, Network, NetworkError};

/// What a sweep removed, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Execution ids whose namespace was removed.
    pub namespaces: Vec<String>,
    /// Host links removed.
    pub links: Vec<String>,
    /// Host routes removed.
    pub routes: usize,
    /// nftables rules removed.
    pub rules: usize,
    /// Every failure, in words; the sweep goes on past each.
    pub failures: Vec<String>,
}

impl SweepReport {
    /// Whether the sweep removed nothing and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.routes == 0
            && self.rules == 0
            && self.failures.is_empty()
    }
}

/// How old a namespace without an address must be before the sweep takes it
/// for a dead create rather than one in progress.
pub const SWEEP_GRACE: Duration = Duration::from_secs(30);

/// Whether a namespace belongs to the pool being swept.
enum Belongs {
    Yes,
    No,
    /// It has no address yet: a create in progress, or one that died.
    Unknown,
}

impl Network {
    /// Removes every fcexec namespace, link, route and rule of this pool
    /// whose execution id starts with the configured `sweep_scope` and is
    /// neither in `keep` nor created or adopted by this manager. Failures are collected in the report; the error is for when
    /// the host cannot even be listed. Namespaces without an address yet are
    /// removed only once older than [`SWEEP_GRACE`].
    pub async fn sweep(&self, keep: &[String]) -> Result<SweepReport, NetworkError> {
        self.sweep_older_than(keep, SWEEP_GRACE).await
    }

    /// [`sweep`](Network::sweep) with another grace period for namespaces
    /// without an address.
    pub async fn sweep_older_than(
        &self,
        keep: &[String],
        grace: Duration,
    ) -> Result<SweepReport, NetworkError> {
        let pool = self.inner.pool;
        let protected: HashSet<String> = {
            let alloc = self.alloc();
            keep.iter()
                .cloned()
                .chain(alloc.live_ids().map(str::to_string))
                .collect()
        };
        let is_doomed = {
            let protected = protected.clone();
            let scope = self.inner.config.sweep_scope.clone();
            move |id: &str| id.starts_with(scope.as_str()) && !protected.contains(id)
        };
        let mut report = SweepReport::default();
        let mut swept: HashSet<String> = HashSet::new();
        let host = &self.inner.host;

        let doomed_rule = is_doomed.clone();
        match firewall::delete_where(move |r| {
            let id = r
                .comment
                .as_deref()
                .and_then(names::id_of_tag)
                .unwrap_or_default();
            doomed_rule(id) && r.dnat.is_some_and(|a| pool.net().contains(&a))
        })
        .await
        {
            Ok(rules) => {
                report.rules = rules.len();
                let ids = rules
                    .iter()
                    .filter_map(|r| r.comment.as_deref().and_then(names::id_of_tag));
                swept.extend(ids.map(str::to_string));
            }
            Err(e) => report.failures.push(e.to_string()),
        }

        // Namespaces are judged first: deleting a host veth takes the
        // namespace's veth0 with it, and with it the namespace's address.
        let mut doomed_namespaces = Vec::new();
        for file in netns::list() {
            let Some(id) = names::id_of_netns(&file) else {
                continue;
            };
            if !is_doomed(id) {
                continue;
            }
            let path = names::netns_path(id);
            match namespace_in_pool(&path, pool.net()).await {
                Ok(Belongs::No) => continue,
                Ok(Belongs::Unknown) if !older_than(&path, grace) => continue,
                Ok(_) => doomed_namespaces.push((id.to_string(), path)),
                Err(e) => report.failures.push(e.to_string()),
            }
        }

        for link in links::list_links(host).await? {
            let Some(base) = names::block_of_host_veth(&link.name) else {
                continue;
            };
            let Some(index) = pool.block_of(base).map(|b| b.index) else {
                continue;
            };
            let id = link.alias.as_deref().and_then(names::id_of_tag);
            let doomed = match id {
                Some(id) => is_doomed(id),
                None => self.alloc().owner(index).map_or(true, &is_doomed),
            };
            if !doomed {
                continue;
            }
            match links::delete_link(host, &link.name).await {
                Ok(_) => {
                    report.links.push(link.name.clone());
                    swept.extend(id.map(str::to_string));
                }
                Err(e) => report.failures.push(e.to_string()),
            }
        }

        for route in links::routes(host).await? {
            if route.destination.prefix_len() != 30
                || !pool.net().contains(&route.destination.network())
            {
                continue;
            }
            let Some(block) = pool.block_of(route.destination.network()) else {
                continue;
            };
            if route.destination != block.tap_net()
                || self
                    .alloc()
                    .owner(block.index)
                    .is_some_and(|o| !is_doomed(o))
            {
                continue;
            }
            match links::delete_route(host, &route).await {
                Ok(()) => report.routes += 1,
                Err(e) => report.failures.push(e.to_string()),
            }
        }

        for (id, path) in doomed_namespaces {
            match netns::remove(&path) {
                Ok(_) => {
                    report.namespaces.push(id.clone());
                    swept.insert(id);
                }
                Err(e) => report.failures.push(e.to_string()),
            }
        }

        {
            let mut alloc = self.alloc();
            for id in &swept {
                if !alloc.is_live(id) {
                    alloc.release(id);
                }
            }
        }
        for f in &report.failures {
            warn!(failure = %f, "sweep could not remove an object");
        }
        if !report.is_empty() {
            info!(namespaces = ?report.namespaces, links = ?report.links, routes = report.routes, rules = report.rules, "swept network objects of unknown executions");
        }
        Ok(report)
    }
}

/// Whether the namespace at `path` belongs to `pool`, by the address of its
/// `veth0`.
async fn namespace_in_pool(
    path: &std::path::Path,
    pool: ipnet::Ipv4Net,
) -> Result<Belongs, NetworkError> {
    let handle = match netns::netlink_in(path).await {
        Ok(h) => h,
        // A file that is no namespace (its mount gone): a stale leftover.
        Err(NetworkError::Io { .. }) => return Ok(Belongs::Unknown),
        Err(e) => return Err(e),
    };
    let Some(index) = links::link_index(&handle, NS_VETH).await? else {
        return Ok(Belongs::Unknown);
    };
    let addrs = links::addresses(&handle, index).await?;
    Ok(if addrs.is_empty() {
        Belongs::Unknown
    } else if addrs.iter().any(|a| pool.contains(&a.addr())) {
        Belongs::Yes
    } else {
        Belongs::No
    })
}

/// Whether the namespace file at `path` (the namespace's own inode once
/// mounted) was made more than `grace` ago.
fn older_than(path: &std::path::Path, grace: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(true, |age| age >= grace)
}
