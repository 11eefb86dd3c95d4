//! Root file systems from container images (extension `image`): before a
//! launch the image is built, or found, in the executor's image cache
//! (`<data root>/.cache/images`, see [`fcexec_images::cache`]), on the
//! blocking pool; the execution then gets its own writable copy
//! ([`ROOTFS_COPY`] in its data directory, removed with it): a reflink
//! (`FICLONE`) where the file system can, else a sparse copy. In agent
//! mode the image's run configuration supplies the command when the
//! request gives none, and the defaults of its environment, working
//! directory and user.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use fcexec_images::{BuildOptions, Cache, CachedImage, ImageConfig, ProgressFn, Source};

use crate::spec::{Command, Mode};
use crate::validate::{ValidatedRequest, ValidationError};

/// The execution's copy of the image, in its data directory.
pub const ROOTFS_COPY: &str = "rootfs.ext4";

/// The field named by errors.
const FIELD: &str = "engine_spec.params.image";

/// The image of `source`, from `cache_dir`'s cache (built, or pulled and
/// built, when missing), held in use until dropped; `progress` hears how
/// a build goes. Blocking.
pub fn resolve(
    cache_dir: &Path,
    limit: Option<u64>,
    source: &Source,
    progress: Option<ProgressFn>,
) -> Result<CachedImage, ValidationError> {
    let invalid = |reason: String| ValidationError::InvalidValue {
        field: FIELD.into(),
        value: format!("{:?}", source.to_string()),
        reason,
        fix: "give a linux/amd64 image: a registry reference the executor can pull, an OCI \
              image layout directory or a docker save archive",
    };
    let cache =
        Cache::open(cache_dir, limit).map_err(|e| invalid(format!("cannot be cached: {e}")))?;
    let options = BuildOptions {
        progress,
        ..BuildOptions::default()
    };
    cache
        .get_or_build(source, &options)
        .map_err(|e| invalid(format!("cannot be built: {e}")))
}

/// `valid` with its root drive at `copy` and, in agent mode for fcexec's
/// own agent, the command completed from the image's `config`.
pub fn apply(
    valid: &ValidatedRequest,
    copy: &Path,
    config: &ImageConfig,
) -> Result<ValidatedRequest, ValidationError> {
    let mut valid = valid.clone();
    if let Some(root) = valid.drives.first_mut() {
        root.path = copy.to_path_buf();
    }
    let own_agent =
        valid.mode == Mode::Agent && valid.initrd.is_none() && valid.agent_job.is_none();
    if own_agent {
        valid.command = Some(command(valid.command.take(), config)?);
    }
    Ok(valid)
}

/// The request's command, or the image's entrypoint and cmd; the image's
/// env, working directory and user as defaults the request overrides.
pub fn command(request: Option<Command>, config: &ImageConfig) -> Result<Command, ValidationError> {
    let mut command = match request {
        Some(c) => c,
        None => {
            let argv: Vec<String> = config
                .entrypoint
                .iter()
                .chain(&config.cmd)
                .cloned()
                .collect();
            if argv.is_empty() {
                return Err(ValidationError::Missing {
                    field: "engine_spec.params.command".into(),
                    fix: "the image has no entrypoint nor cmd: give the command to run, such as \
                          [\"/bin/sh\", \"-c\", \"echo hi\"]",
                });
            }
            Command {
                argv,
                ..Command::default()
            }
        }
    };
    let mut env: Vec<(String, String)> = config
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .filter(|(k, _)| !command.env.iter().any(|(n, _)| n == k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.append(&mut command.env);
    command.env = env;
    if command.working_dir.is_none() && !config.working_dir.is_empty() {
        command.working_dir = Some(config.working_dir.clone());
    }
    if command.user.is_none() && !config.user.is_empty() {
        command.user = Some(config.user.clone());
    }
    Ok(command)
}

/// Gives `to` (created, mode 0600) the content of `from`: a reflink when
/// the file system shares blocks, else a sparse copy.
pub fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let context = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot copy the image {} to {}: {e}",
                from.display(),
                to.display()
            ),
        )
    };
    let source = File::open(from).map_err(context)?;
    let target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(context)?;
    /// `FICLONE`: `_IOW(0x94, 9, int)`.
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both descriptors are open files we own; FICLONE takes an fd.
    let cloned = unsafe { libc::ioctl(target.as_raw_fd(), FICLONE as _, source.as_raw_fd()) } == 0;
    if !cloned {
        crate::results::copy_sparse(&source, &target).map_err(context)?;
    }
    Ok(())
}

/// The cache's directory under the executor's data root.
pub fn cache_dir(data_cache: &Path) -> PathBuf {
    data_cache.join("images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_config_completes_the_command_and_the_request_overrides_it() {
        let config = ImageConfig {
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["--flag".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: "/w".into(),
            user: "1000".into(),
        };
        let c = command(None, &config).unwrap();
        assert_eq!(c.argv, ["/bin/entry", "--flag"]);
        assert_eq!(
            c.env,
            [("PATH".into(), "/bin".into()), ("A".into(), "1".into())]
        );
        assert_eq!(
            (c.working_dir.as_deref(), c.user.as_deref()),
            (Some("/w"), Some("1000"))
        );
        let own = Command {
            argv: vec!["/bin/true".into()],
            env: vec![("A".into(), "2".into())],
            working_dir: Some("/x".into()),
            user: None,
        };
        let c = command(Some(own), &config).unwrap();
        assert_eq!(c.argv, ["/bin/true"]);
        assert_eq!(
            c.env,
            [("PATH".into(), "/bin".into()), ("A".into(), "2".into())]
        );
        assert_eq!(
            (c.working_dir.as_deref(), c.user.as_deref()),
            (Some("/x"), Some("1000"))
        );
        let err = command(None, &ImageConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("engine_spec.params.command"), "{err}");
    }

    #[test]
    fn a_copy_has_the_same_content_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        let f = File::create(&from).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"data", 4 << 20).unwrap();
        let to = dir.path().join("b");
        copy(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());
        assert!(copy(&from, &to).is_err());
    }
}
