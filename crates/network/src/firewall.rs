//! nftables rules, written as nft's JSON and applied through the `nftables`
//! crate (which feeds them to `nft -j -f -`); nothing composes nft's text
//! syntax.
//!
//! On the host, one table `inet fcexec` holds five base chains:
//!
//! | chain | hook, priority | rules |
//! |---|---|---|
//! | `prerouting` | nat prerouting -100 | per execution: `fib daddr type local <proto> dport H dnat to guest:G` |
//! | `output` | nat output -100 | the same, for connections from the host itself |
//! | `postrouting` | nat postrouting 100 | per pool: masquerade pool → outside (egress on); masquerade 127/8 → pool |
//! | `forward` | filter forward 0 | per pool: established; DNAT'd to the pool; drop other traffic to the pool (so between executions); egress allow list or drop |
//! | `input` | filter input 0 | per pool: established; DNS to the upstream; drop the rest from the pool |
//!
//! Per-execution rules carry the comment `fcx:<id>`, per-pool rules
//! `fcx-pool:<pool>`; removal and the sweep find them by comment and delete
//! them by handle. Inside each execution's namespace a table `ip fcexec` drops
//! packets from the TAP with a source other than the guest's address, and
//! forwards DNS sent to the gateway to the host's resolver.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use tracing::debug;

use crate::pool::Block;
use crate::{names, NetworkError, PortMapping, Protocol};

/// The host table.
pub const TABLE: &str = "fcexec";

/// Serialises changes to the host table, so one listing and the deletions
/// that follow it do not race another task's.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The lock file that serialises them between processes (two executors, or
/// an executor and `fcexec ps`, may change the table at once: a listing's
/// handles must still be there when its deletions run).
const HOST_LOCK: &str = "/run/fcexec-nftables.lock";

/// An exclusive `flock(2)` on [`HOST_LOCK`], held until dropped.
struct HostLock {
    _file: std::fs::File,
}

impl HostLock {
    fn acquire() -> Result<HostLock, NetworkError> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(HOST_LOCK)
            .map_err(|e| NetworkError::io(format!("open {HOST_LOCK}"), e))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(HostLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(NetworkError::io(format!("lock {HOST_LOCK}"), err));
            }
        }
    }
}

/// A rule of the host table as removal and the sweep need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Chain of the rule.
    pub chain: String,
    /// Handle of the rule.
    pub handle: u64,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// The address it DNATs to, if it does.
    pub dnat: Option<Ipv4Addr>,
    /// The destination port (and its protocol) it matches, if it does.
    pub dport: Option<(Protocol, u16)>,
}

/// The `nft` binary: from `PATH`, else the usual sbin locations.
pub fn nft_program() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nft"))
            .find(|p| p.is_file())
    });
    from_path
        .or_else(|| {
            ["/usr/sbin/nft", "/sbin/nft"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("nft"))
}

/// Applies a batch of commands in the calling thread's namespace (blocking).
pub(crate) fn apply_blocking(commands: Vec<Value>, what: &str) -> Result<(), NetworkError> {
    let payload = json!({ "nftables": commands }).to_string();
    let program = nft_program();
    nftables::helper::apply_ruleset_raw(&payload, Some(&program), &[] as &[&str])
        .map(|_| ())
        .map_err(|source| NetworkError::Nftables {
            what: what.to_string(),
            source,
        })
}

/// Lists the rules of the host table (none when it does not exist), blocking.
fn list_blocking() -> Result<Vec<RuleInfo>, NetworkError> {
    let program = nft_program();
    let raw =
        nftables::helper::get_current_ruleset_raw(Some(&program), ["list", "ruleset", "inet"])
            .map_err(|source| NetworkError::Nftables {
                what: "list the inet ruleset".into(),
                source,
            })?;
    let value: Value = serde_json::from_str(&raw).map_err(|e| NetworkError::Nftables {
        what: "parse the inet ruleset".into(),
        source: nftables::helper::NftablesError::NftInvalidJson(e),
    })?;
    Ok(parse_rules(&value))
}

/// The rules of table `inet fcexec` in nft's JSON listing.
fn parse_rules(listing: &Value) -> Vec<RuleInfo> {
    let objects = listing
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    objects
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == TABLE && r["family"] == "inet")
        .filter_map(|r| {
            let exprs = r["expr"].as_array().cloned().unwrap_or_default();
            let dnat = exprs
                .iter()
                .find_map(|e| e.get("dnat")?.get("addr")?.as_str()?.parse().ok());
            let dport = exprs.iter().find_map(|e| {
                let m = e.get("match")?;
                let payload = m.get("left")?.get("payload")?;
                if payload.get("field")? != "dport" {
                    return None;
                }
                let protocol = match payload.get("protocol")?.as_str()? {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return None,
                };
                Some((protocol, u16::try_from(m.get("right")?.as_u64()?).ok()?))
            });
            Some(RuleInfo {
                chain: r["chain"].as_str()?.to_string(),
                handle: r["handle"].as_u64()?,
                comment: r.get("comment").and_then(Value::as_str).map(str::to_string),
                dnat,
                dport,
            })
        })
        .collect()
}

/// Lists the rules of the host table.
pub async fn list() -> Result<Vec<RuleInfo>, NetworkError> {
    let _guard = LOCK.lock().await;
    blocking(list_blocking).await
}

/// Runs `f` (which lists or changes the host table) on the blocking pool,
/// under the cross-process lock.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(move || {
        let _host = HostLock::acquire()?;
        f()
    })
    .await
    .map_err(|e| NetworkError::io("run nft", std::io::Error::other(e.to_string())))?
}

fn prefix(net: Ipv4Net) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

fn field(protocol: &str, name: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": protocol, "field": name}}, "right": right}})
}

fn ct(key: &str, right: Value) -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": key}}, "right": right}})
}

fn rule(chain: &str, comment: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "comment": comment, "expr": expr}}})
}

fn delete(rule: &RuleInfo) -> Value {
    json!({"delete": {"rule": {"family": "inet", "table": TABLE, "chain": rule.chain, "handle": rule.handle}}})
}

/// The host table and its chains (adding them again changes nothing).
fn base_commands() -> Vec<Value> {
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    vec![
        json!({"add": {"table": {"family": "inet", "name": TABLE}}}),
        chain("prerouting", "nat", "prerouting", -100),
        chain("output", "nat", "output", -100),
        chain("postrouting", "nat", "postrouting", 100),
        chain("forward", "filter", "forward", 0),
        chain("input", "filter", "input", 0),
    ]
}

/// What the per-pool rules depend on.
#[derive(Debug, Clone)]
pub(crate) struct PoolPolicy {
    /// The pool.
    pub pool: Ipv4Net,
    /// NAT to the outside.
    pub egress: bool,
    /// Destinations allowed when egress is on (empty: all).
    pub egress_allow: Vec<Ipv4Net>,
    /// The resolver DNS sent to the gateway goes to, if any.
    pub dns_upstream: Option<Ipv4Addr>,
}

/// The comment of the per-pool rules.
pub fn pool_tag(pool: Ipv4Net) -> String {
    format!("fcx-pool:{pool}")
}

/// The per-pool rules.
fn pool_commands(p: &PoolPolicy) -> Vec<Value> {
    let tag = pool_tag(p.pool);
    let pool = prefix(p.pool);
    let from_pool = || field("ip", "saddr", "==", pool.clone());
    let to_pool = || field("ip", "daddr", "==", pool.clone());
    let established = || ct("state", json!(["established", "related"]));
    let accept = json!({"accept": null});
    let drop = json!({"drop": null});
    let mut cmds = vec![
        rule(
            "forward",
            &tag,
            vec![to_pool(), established(), accept.clone()],
        ),
        rule(
            "forward",
            &tag,
            vec![from_pool(), established(), accept.clone()],
        ),
        rule(
            "forward",
            &tag,
            vec![to_pool(), ct("status", json!("dnat")), accept.clone()],
        ),
        rule("forward", &tag, vec![to_pool(), drop.clone()]),
    ];
    if p.egress && !p.egress_allow.is_empty() {
        let allowed: Vec<Value> = p.egress_allow.iter().map(|n| prefix(*n)).collect();
        let to_allowed = field("ip", "daddr", "==", json!({"set": allowed}));
        cmds.push(rule(
            "forward",
            &tag,
            vec![from_pool(), to_allowed, accept.clone()],
        ));
    }
    if !p.egress || !p.egress_allow.is_empty() {
        cmds.push(rule("forward", &tag, vec![from_pool(), drop.clone()]));
    }
    cmds.push(rule(
        "input",
        &tag,
        vec![from_pool(), established(), accept.clone()],
    ));
    if let Some(up) = p.dns_upstream {
        for proto in ["udp", "tcp"] {
            let to_up = field("ip", "daddr", "==", json!(up.to_string()));
            cmds.push(rule(
                "input",
                &tag,
                vec![
                    from_pool(),
                    to_up,
                    field(proto, "dport", "==", json!(53)),
                    accept.clone(),
                ],
            ));
        }
    }
    cmds.push(rule("input", &tag, vec![from_pool(), drop]));
    if p.egress {
        let outside = field("ip", "daddr", "!=", pool.clone());
        cmds.push(rule(
            "postrouting",
            &tag,
            vec![from_pool(), outside, json!({"masquerade": null})],
        ));
    }
    let loopback = field(
        "ip",
        "saddr",
        "==",
        prefix(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).unwrap_or_default()),
    );
    cmds.push(rule(
        "postrouting",
        &tag,
        vec![loopback, to_pool(), json!({"masquerade": null})],
    ));
    cmds
}

/// Creates the host table if needed and replaces the rules of `policy.pool`
/// with the ones `policy` asks for, in one transaction.
pub(crate) async fn install_pool(policy: &PoolPolicy) -> Result<(), NetworkError> {
    let _guard = LOCK.lock().await;
    let policy = policy.clone();
    blocking(move || {
        let tag = pool_tag(policy.pool);
        let mut cmds = base_commands();
        cmds.extend(
            list_blocking()?
                .iter()
                .filter(|r| r.comment.as_deref() == Some(tag.as_str()))
                .map(delete),
        );
        cmds.extend(pool_commands(&policy));
        apply_blocking(cmds, &format!("install the rules of pool {}", policy.pool))
    })
    .await
}

/// Deletes the per-pool rules of `pool` (when an executor using it is gone
/// for good); returns how many.
pub async fn uninstall_pool(pool: Ipv4Net) -> Result<usize, NetworkError> {
    let _guard = LOCK.lock().await;
    blocking(move || {
        let tag = pool_tag(pool);
        let cmds: Vec<Value> = list_blocking()?
            .iter()
            .filter(|r| r.comment.as_deref() == Some(tag.as_str()))
            .map(delete)
            .collect();
        let n = cmds.len();
        if n > 0 {
            apply_blocking(cmds, &format!("delete the rules of pool {pool}"))?;
        }
        Ok(n)
    })
    .await
}

/// The per-execution DNAT rules of `ports`, to `guest`.
fn port_commands(id: &str, guest: Ipv4Addr, ports: &[PortMapping]) -> Vec<Value> {
    let tag = names::tag(id);
    let mut cmds = Vec::new();
    for chain in ["prerouting", "output"] {
        for p in ports {
            let local = json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}});
            let dport = field(p.protocol.as_str(), "dport", "==", json!(p.host));
            let dnat =
                json!({"dnat": {"family": "ip", "addr": guest.to_string(), "port": p.guest}});
            cmds.push(rule(chain, &tag, vec![local, dport, dnat]));
        }
    }
    cmds
}

/// Publishes `ports` of execution `id` (DNAT to its guest), in one transaction.
pub(crate) async fn publish(
    id: &str,
    guest: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<(), NetworkError> {
    if ports.is_empty() {
        return Ok(());
    }
    let _guard = LOCK.lock().await;
    let mut cmds = base_commands();
    cmds.extend(port_commands(id, guest, ports));
    let what = format!("publish ports of execution {id}");
    blocking(move || apply_blocking(cmds, &what)).await
}

/// Deletes the host rules whose comment names an execution and that `doomed`
/// says yes to; returns them.
pub(crate) async fn delete_where(
    doomed: impl Fn(&RuleInfo) -> bool + Send + 'static,
) -> Result<Vec<RuleInfo>, NetworkError> {
    let _guard = LOCK.lock().await;
    blocking(move || {
        let rules: Vec<RuleInfo> = list_blocking()?
            .into_iter()
            .filter(|r| r.comment.as_deref().and_then(names::id_of_tag).is_some() && doomed(r))
            .collect();
        if !rules.is_empty() {
            apply_blocking(rules.iter().map(delete).collect(), "delete execution rules")?;
            debug!(rules = rules.len(), "deleted nftables rules");
        }
        Ok(rules)
    })
    .await
}

/// The namespace's own table: anti-spoofing on the TAP, and DNS sent to the
/// gateway forwarded to `dns_upstream`. Applied by a thread in the namespace.
pub(crate) fn namespace_commands(
    block: &Block,
    dns_upstream: Option<Ipv4Addr>,
    egress: bool,
) -> Vec<Value> {
    let t = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    let r = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}});
    let from_tap = || json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": names::TAP}});
    let spoofed = || field("ip", "saddr", "!=", json!(block.guest().to_string()));
    let mut cmds = vec![
        json!({"add": {"table": {"family": "ip", "name": TABLE}}}),
        t("prerouting", "nat", "prerouting", -100),
        t("forward", "filter", "forward", 0),
        t("input", "filter", "input", 0),
        r(
            "forward",
            vec![from_tap(), spoofed(), json!({"drop": null})],
        ),
        r("input", vec![from_tap(), spoofed(), json!({"drop": null})]),
    ];
    if !egress {
        // This execution alone may not reach out: no new connection leaves
        // the namespace from the guest (replies to published ports are
        // established, and MMDS never leaves the VMM).
        let to_veth = json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": names::NS_VETH}});
        cmds.push(r(
            "forward",
            vec![
                from_tap(),
                to_veth,
                ct("state", json!("new")),
                json!({"drop": null}),
            ],
        ));
    }
    if let Some(up) = dns_upstream {
        for proto in ["udp", "tcp"] {
            let to_gw = field("ip", "daddr", "==", json!(block.gateway().to_string()));
            let dnat = json!({"dnat": {"addr": up.to_string()}});
            cmds.push(r(
                "prerouting",
                vec![
                    from_tap(),
                    to_gw,
                    field(proto, "dport", "==", json!(53)),
                    dnat,
                ],
            ));
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;

    fn policy(egress: bool, allow: &[&str]) -> PoolPolicy {
        PoolPolicy {
            pool: "10.213.0.0/16".parse().unwrap(),
            egress,
            egress_allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            dns_upstream: Some(Ipv4Addr::new(192, 0, 2, 53)),
        }
    }

    /// Every batch we build is valid for the nftables crate's schema.
    #[test]
    fn batches_fit_the_nftables_schema() {
        let block = Pool::new("10.213.0.0/16".parse().unwrap())
            .unwrap()
            .block(2)
            .unwrap();
        let ports = [PortMapping {
            host: 8080,
            guest: 80,
            protocol: Protocol::Tcp,
        }];
        let batches = [
            base_commands(),
            pool_commands(&policy(true, &[])),
            pool_commands(&policy(true, &["1.1.1.0/24"])),
            pool_commands(&policy(false, &[])),
            port_commands("e1", block.guest(), &ports),
            namespace_commands(&block, Some(Ipv4Addr::new(192, 0, 2, 53)), false),
        ];
        for cmds in batches {
            let doc = json!({ "nftables": cmds });
            let parsed: Result<nftables::schema::Nftables, _> = serde_json::from_value(doc.clone());
            assert!(parsed.is_ok(), "{:?}\n{doc:#}", parsed.err());
        }
    }

    #[test]
    fn egress_rules_follow_the_policy() {
        let text = |p: &PoolPolicy| json!(pool_commands(p)).to_string();
        let on = text(&policy(true, &[]));
        assert!(on.contains("masquerade") && !on.contains("1.1.1.0"));
        let allow = text(&policy(true, &["1.1.1.0/24"]));
        assert!(allow.contains("1.1.1.0") && allow.contains("masquerade"));
        let off = text(&policy(false, &[]));
        // Only the loopback → pool masquerade remains.
        assert_eq!(off.matches("masquerade").count(), 1);
    }

    #[test]
    fn listing_is_parsed() {
        let listing = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"rule": {"family": "inet", "table": "fcexec", "chain": "prerouting", "handle": 5, "comment": "fcx:abc",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}},
                       {"dnat": {"family": "ip", "addr": "10.213.0.6", "port": 80}}]}},
            {"rule": {"family": "inet", "table": "other", "chain": "x", "handle": 1, "expr": []}}
        ]});
        let rules = parse_rules(&listing);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].handle, 5);
        assert_eq!(rules[0].comment.as_deref(), Some("fcx:abc"));
        assert_eq!(rules[0].dnat, Some(Ipv4Addr::new(10, 213, 0, 6)));
        assert_eq!(rules[0].dport, Some((Protocol::Tcp, 8080)));
    }
}
