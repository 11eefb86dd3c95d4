//! [`PathPolicy`]: the host directories a request's kernel, initrd, root
//! file system and volumes may come from.

use std::path::{Path, PathBuf};

/// Which host directories the files a request names (kernel, initrd, root
/// file system, input and output volumes) may come from. Each path is
/// resolved first (symbolic links followed, once), and the resolved path is
/// what is checked and what the VM is given.
///
/// The default allows every directory, as earlier versions did; a node that
/// takes requests from others should list its image and volume directories:
///
/// ```
/// use fcexec::validate::PathPolicy;
/// let config = fcexec::ExecutorConfig {
///     path_policy: PathPolicy::only(["/var/lib/node/images", "/var/lib/node/volumes"]),
///     ..fcexec::ExecutorConfig::default()
/// };
/// assert!(!config.path_policy.allows_everything());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// `None`: any directory (the default). `Some(dirs)`: a file must be
    /// inside one of `dirs` (at any depth) once resolved; an empty list
    /// allows nothing. Entries are absolute paths; their own symbolic links
    /// are resolved at each check; a relative entry matches nothing.
    pub allowed_dirs: Option<Vec<PathBuf>>,
    /// The registries (`host[:port]` as in a reference, `docker.io` for
    /// Docker Hub) a request's `image` may be pulled from. `None`: any
    /// (the default); an empty list: none, only image files.
    pub allowed_registries: Option<Vec<String>>,
}

impl PathPolicy {
    /// Any directory (the default).
    pub fn allow_all() -> PathPolicy {
        PathPolicy {
            allowed_dirs: None,
            allowed_registries: None,
        }
    }

    /// Only files inside `dirs`.
    pub fn only<I, P>(dirs: I) -> PathPolicy
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        PathPolicy {
            allowed_dirs: Some(dirs.into_iter().map(Into::into).collect()),
            allowed_registries: None,
        }
    }

    /// Whether every directory is allowed (what `fcexec doctor` warns about).
    pub fn allows_everything(&self) -> bool {
        self.allowed_dirs.is_none()
    }

    /// Checks a registry: `Err` lists the allowed ones for the message.
    pub(super) fn check_registry(&self, registry: &str) -> Result<(), String> {
        match &self.allowed_registries {
            None => Ok(()),
            Some(list) if list.iter().any(|r| r == registry) => Ok(()),
            Some(list) if list.is_empty() => Err("no registry".into()),
            Some(list) => Err(list.join(", ")),
        }
    }

    /// Checks a resolved (canonical) path: `Err` lists the allowed
    /// directories for the message.
    pub(super) fn check(&self, resolved: &Path) -> Result<(), String> {
        let Some(dirs) = &self.allowed_dirs else {
            return Ok(());
        };
        let inside = dirs.iter().filter(|d| d.is_absolute()).any(|dir| {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            resolved.starts_with(dir)
        });
        if inside {
            return Ok(());
        }
        Err(match dirs.is_empty() {
            true => "none: the policy allows no directory".to_string(),
            false => dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}
