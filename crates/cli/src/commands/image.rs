//! `fcexec image build SOURCE -o FILE`: an ext4 root file system from an
//! OCI image layout, a `docker save` archive or a directory
//! ([`fcexec_images::build`]), with a line of progress per step on stderr.

use std::sync::Arc;

use anyhow::Context as _;
use fcexec_images::{build, BuildOptions, Progress, Source};

use crate::args::ImageCommand;
use crate::exit::Exit;

/// Runs `fcexec image ...`.
pub async fn run(command: &ImageCommand) -> anyhow::Result<Exit> {
    let ImageCommand::Build(args) = command;
    let source = Source::detect(&args.source)
        .with_context(|| format!("image source {}", args.source.display()))?;
    let options = BuildOptions {
        progress: Some(Arc::new(|p: &Progress| eprintln!("{}", describe(p)))),
        ..BuildOptions::default()
    };
    let output = args.output.clone();
    // Unpacking and mkfs block: off the runtime's workers.
    let built = tokio::task::spawn_blocking(move || build(&source, &output, &options))
        .await
        .context("the image build task failed")??;
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

/// One progress line.
fn describe(progress: &Progress) -> String {
    match progress {
        Progress::Resolved { layers } => format!("resolved: {layers} layer(s)"),
        Progress::LayerApplied {
            index,
            count,
            bytes,
        } => format!("applied layer {}/{count} ({bytes} bytes so far)", index + 1),
        Progress::Building { size } => format!("making a {} MiB ext4 file system", size >> 20),
    }
}
