//! The executor's side of execution networking ([`fcexec_network`]): one
//! manager per executor, made on first use (it needs root and nftables, so
//! an executor that never networks an execution never needs them), and
//! what an execution asks for turned into the manager's request.
//!
//! An execution's network is made at launch, before its VMM is spawned
//! into the namespace, kept in its record (so a restarted executor adopts
//! it), and removed when the execution ends. At start the executor sweeps
//! the objects of executions it no longer has, when there are any.

use std::path::Path;

use fcexec_network::{ExecutionNetwork, Network, NetworkConfig, NetworkError, NetworkRequest};
use tokio::sync::OnceCell;

use crate::validate::NetworkAsk;

/// The network manager, made on first use.
#[derive(Debug)]
pub struct Networks {
    /// The configuration; `None`: networking is off for this executor.
    config: Option<NetworkConfig>,
    /// What this executor's network ids start with (see [`Networks::new`]).
    scope: String,
    /// Give executions a network unless they say `network: false`.
    by_default: bool,
    /// The manager, once made (or why it could not be).
    manager: OnceCell<Result<Network, String>>,
}

impl Networks {
    /// Networks with `config` (`None`: off); `by_default` networks every
    /// execution that does not say otherwise. `executor_dir` (the
    /// executor's runtime directory) scopes the network ids: an execution's
    /// network is named `<8 hex digits of its hash>-<execution id>`, and the
    /// sweep touches only ids of that prefix, so executors sharing a pool
    /// never sweep each other's networks.
    pub fn new(config: Option<NetworkConfig>, by_default: bool, executor_dir: &Path) -> Networks {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(executor_dir.as_os_str().as_encoded_bytes());
        let scope: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let scope = format!("{scope}-");
        Networks {
            config: config.map(|c| NetworkConfig {
                sweep_scope: scope.clone(),
                ..c
            }),
            scope,
            by_default,
            manager: OnceCell::new(),
        }
    }

    /// The network id of execution `id`.
    pub fn network_id(&self, id: &str) -> String {
        format!("{}{id}", self.scope)
    }

    /// The network an execution gets: what it asks for, or the executor's
    /// default; `egress` is the request's own setting when it gives one.
    pub fn wanted(
        &self,
        ask: Option<&NetworkAsk>,
        network: Option<bool>,
        egress: Option<bool>,
    ) -> Option<NetworkRequest> {
        let ask = match (ask, network) {
            (Some(ask), _) => ask.clone(),
            (None, None) if self.by_default => NetworkAsk::default(),
            _ => return None,
        };
        Some(NetworkRequest {
            ports: ask.ports,
            gateway: ask.gateway,
            egress,
            ..NetworkRequest::default()
        })
    }

    /// The manager; made now if this is the first use.
    async fn manager(&self) -> Result<&Network, NetworkError> {
        let Some(config) = &self.config else {
            return Err(NetworkError::InvalidConfig(
                "networking is off for this executor (ExecutorConfig::network is None)".into(),
            ));
        };
        let made = self
            .manager
            .get_or_init(|| async {
                Network::new(config.clone()).await.map_err(|e| {
                    tracing::warn!(error = %e, "execution networking is unavailable");
                    e.to_string()
                })
            })
            .await;
        made.as_ref()
            .map_err(|e| NetworkError::InvalidConfig(e.clone()))
    }

    /// Makes execution `id`'s network (named [`Networks::network_id`]).
    pub async fn create(
        &self,
        id: &str,
        request: &NetworkRequest,
    ) -> Result<ExecutionNetwork, NetworkError> {
        self.manager()
            .await?
            .create(&self.network_id(id), request)
            .await
    }

    /// Removes `net`; failures are logged (the next sweep retries).
    pub async fn remove(&self, net: &ExecutionNetwork) {
        let removed = match self.manager().await {
            Ok(manager) => manager.remove(net).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(id = %net.id, error = %e, "cannot remove the execution's network; the next executor start sweeps it");
        }
    }

    /// Takes over `net` of an execution found at start-up.
    pub async fn adopt(&self, net: &ExecutionNetwork) {
        let adopted = match self.manager().await {
            Ok(manager) => manager.adopt(net),
            Err(e) => Err(e),
        };
        if let Err(e) = adopted {
            tracing::warn!(id = %net.id, error = %e, "cannot adopt the execution's network");
        }
    }

    /// Removes the network objects of executions not in `keep`, when the
    /// host has any of fcexec's (so that a host without them needs neither
    /// root nor nftables for this).
    pub async fn sweep(&self, keep: &[String]) {
        if self.config.is_none() || !any_left() {
            return;
        }
        match self.manager().await {
            Ok(manager) => match manager.sweep(keep).await {
                Ok(report) if report.is_empty() => {}
                Ok(report) => tracing::info!(?report, "swept the networks of executions gone"),
                Err(e) => tracing::warn!(error = %e, "cannot sweep old execution networks"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot sweep old execution networks"),
        }
    }
}

/// Whether any fcexec namespace or host link exists.
fn any_left() -> bool {
    let named = |dir: &Path, prefix: &str| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or(false)
    };
    named(Path::new(fcexec_network::names::NETNS_DIR), "fcx-")
        || named(Path::new("/sys/class/net"), "fcx")
}
