//! `fcexec image build SOURCE -o FILE`: an ext4 root file system from a
//! registry reference, an OCI image layout, a `docker save` archive or a
//! directory ([`fcexec_images::build`]), with its progress on stderr (see
//! [`crate::progress`]);
//! `fcexec image ls` and `fcexec image rm KEY`: the images the executor
//! cached for requests that name an `image` (`<data dir>/.cache/images`).

use anyhow::Context as _;
use fcexec_images::{build, BuildOptions, Cache, Source};

use crate::args::{Global, ImageCommand};
use crate::context::Context;
use crate::exit::Exit;
use crate::output::{ago, table};
use crate::progress::ImageProgress;

/// Runs `fcexec image ...`.
pub async fn run(command: &ImageCommand, global: &Global) -> anyhow::Result<Exit> {
    let args = match command {
        ImageCommand::Build(args) => args,
        ImageCommand::Ls => return ls(global),
        ImageCommand::Rm { key } => return rm(global, key),
    };
    let source = Source::parse(&args.source).with_context(|| {
        format!(
            "image source {:?}: give an OCI image layout directory, a docker save archive, \
             a directory, or a registry reference such as registry.example:5000/repo:tag",
            args.source
        )
    })?;
    let progress = ImageProgress::new();
    let options = BuildOptions {
        progress: Some(progress.callback()),
        ..BuildOptions::default()
    };
    let output = args.output.clone();
    // Pulling, unpacking and mkfs block: off the runtime's workers.
    let built = tokio::task::spawn_blocking(move || build(&source, &output, &options))
        .await
        .context("the image build task failed")?;
    progress.finish();
    let built = built?;
    eprintln!(
        "built {} ({} MiB file system, {} layer(s), {} bytes of files) in {:.1?}",
        built.output.display(),
        built.size >> 20,
        built.layers,
        built.bytes,
        built.elapsed
    );
    Ok(Exit::Success)
}

/// The executor's image cache under the data directory (no size limit:
/// listing and removing evict nothing); `None` when there is none yet.
fn cache(global: &Global) -> anyhow::Result<Option<Cache>> {
    let ctx = Context::new(global)?;
    let dir = ctx.data_root.join(".cache/images");
    if !dir.is_dir() {
        return Ok(None);
    }
    let cache =
        Cache::open(&dir, None).with_context(|| format!("the image cache {}", dir.display()))?;
    Ok(Some(cache))
}

/// `fcexec image ls`: most recently used last.
fn ls(global: &Global) -> anyhow::Result<Exit> {
    let entries = match cache(global)? {
        Some(cache) => cache.list()?,
        None => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.key[..12.min(e.key.len())].to_string(),
                format!("{} MiB", e.size.div_ceil(1 << 20)),
                ago(now, e.last_used_ms),
                e.source.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["KEY", "SIZE", "LAST USED", "SOURCE"], &rows));
    Ok(Exit::Success)
}

/// `fcexec image rm KEY`.
fn rm(global: &Global, key: &str) -> anyhow::Result<Exit> {
    let removed = match cache(global)? {
        Some(cache) => cache.remove(key)?,
        None => return Err(fcexec_images::CacheError::NotFound(key.to_string()).into()),
    };
    println!("{}", removed.key);
    Ok(Exit::Success)
}
