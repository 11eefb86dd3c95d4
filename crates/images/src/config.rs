//! The image's run configuration (entrypoint, cmd, env, working directory,
//! user), read from the OCI / Docker image config and stored in the root
//! file system at [`IMAGE_CONFIG_PATH`], so a built image carries it, and
//! in the cache's sidecar. The executor takes it from the sidecar: a
//! request that names the image and no command gets the image's entrypoint
//! and cmd (with its env, working directory and user as defaults) in the
//! job it hands fcexec's guest agent.

use serde::{Deserialize, Serialize};

/// Where the image config is stored inside the root file system.
pub const IMAGE_CONFIG_PATH: &str = ".fcexec/image.json";

/// What a container runtime takes from an image to start it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The program and its first arguments (`Entrypoint`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Default arguments, or the command when there is no entrypoint (`Cmd`).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `NAME=value` environment entries (`Env`).
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory (`WorkingDir`); empty means `/`.
    #[serde(default)]
    pub working_dir: String,
    /// The user as `user[:group]`, names or ids (`User`); empty means root.
    #[serde(default)]
    pub user: String,
}

/// The parts of an OCI / Docker image config file this crate reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    /// The CPU architecture ("amd64").
    #[serde(default)]
    pub architecture: String,
    /// The operating system ("linux").
    #[serde(default)]
    pub os: String,
    /// The run configuration.
    #[serde(default)]
    pub config: Option<RawConfig>,
    /// The uncompressed layers' digests.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// `rootfs` of a config file.
#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    /// `sha256:<hex>` of each uncompressed layer, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` of a config file (Docker's capitalized names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

impl From<RawConfig> for ImageConfig {
    fn from(raw: RawConfig) -> Self {
        ImageConfig {
            entrypoint: raw.entrypoint.unwrap_or_default(),
            cmd: raw.cmd.unwrap_or_default(),
            env: raw.env.unwrap_or_default(),
            working_dir: raw.working_dir.unwrap_or_default(),
            user: raw.user.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_capitalized_fields_and_nulls() {
        let file: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":null,
            "Cmd":["sh"],"Env":["A=1"],"WorkingDir":"/w","User":"1000:1000","Labels":{}},
            "rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#,
        )
        .unwrap();
        let config = ImageConfig::from(file.config.unwrap());
        assert_eq!(config.entrypoint, Vec::<String>::new());
        assert_eq!(config.cmd, ["sh"]);
        assert_eq!(config.env, ["A=1"]);
        assert_eq!(config.working_dir, "/w");
        assert_eq!(config.user, "1000:1000");
    }
}
