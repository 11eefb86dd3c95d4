//! How an image pull and build shows its progress: a bar (indicatif) when
//! stderr is a terminal, plain lines otherwise (a log file or CI keeps a
//! readable record: one line per step, downloads every 16 MiB).
//!
//! Used by `fcexec image build` directly and, through [`LaunchProgress`], by
//! `fcexec run` when a request's `image` is pulled and built at launch.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fcexec::{LaunchHook, LaunchStep};
use fcexec_images::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressStyle};

/// Download lines are printed at most every this many bytes.
const LINE_EVERY: u64 = 16 << 20;

/// Shows the progress of image builds on stderr.
#[derive(Debug)]
pub struct ImageProgress {
    /// Whether stderr is a terminal (a bar) or not (lines).
    terminal: bool,
    /// The bar, drawn from the first step until [`ImageProgress::finish`].
    bar: Mutex<Option<ProgressBar>>,
    /// Bytes downloaded when the last line was printed.
    last_line: Mutex<u64>,
}

impl ImageProgress {
    /// A bar on a terminal, lines otherwise; nothing shows before a step.
    pub fn new() -> Arc<ImageProgress> {
        Arc::new(ImageProgress {
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            last_line: Mutex::new(0),
        })
    }

    /// The callback for [`fcexec_images::BuildOptions::progress`].
    pub fn callback(self: &Arc<Self>) -> ProgressFn {
        let me = self.clone();
        Arc::new(move |p: &Progress| me.report(p))
    }

    /// Shows one step.
    pub fn report(&self, progress: &Progress) {
        if self.terminal {
            let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
            bar.get_or_insert_with(spinner)
                .set_message(describe(progress));
            return;
        }
        if let Progress::Downloaded { bytes } = progress {
            let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
            if *last != 0 && *bytes < *last + LINE_EVERY {
                return;
            }
            *last = (*bytes).max(1);
        }
        eprintln!("{}", describe(progress));
    }

    /// Removes the bar, if one is drawn (lines stay as printed).
    pub fn finish(&self) {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
}

/// A spinner with the elapsed time and the step's words.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// One step in words.
pub fn describe(progress: &Progress) -> String {
    match progress {
        Progress::Downloaded { bytes } => format!("pulled {}", mib(*bytes)),
        Progress::Resolved { layers } => format!("resolved: {layers} layer(s)"),
        Progress::LayerApplied {
            index,
            count,
            bytes,
        } => format!(
            "applied layer {}/{count} ({} of files so far)",
            index + 1,
            mib(*bytes)
        ),
        Progress::Building { size } => format!("making a {} ext4 file system", mib(*size)),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A [`LaunchHook`] that shows a request's image build and passes the
/// steps on to another hook (the test seam of [`crate::fault`]).
#[derive(Debug)]
pub struct LaunchProgress {
    /// The hook the steps go to.
    pub inner: Option<Arc<dyn LaunchHook>>,
    /// Shows the image's build.
    pub progress: Arc<ImageProgress>,
}

impl LaunchHook for LaunchProgress {
    fn before(&self, id: &str, step: LaunchStep) -> Result<(), String> {
        if step == LaunchStep::CreateDir {
            // The image, if any, is ready: the bar's work is done.
            self.progress.finish();
        }
        self.inner.as_ref().map_or(Ok(()), |h| h.before(id, step))
    }

    fn after(&self, id: &str, step: LaunchStep, took: Duration) {
        if let Some(h) = &self.inner {
            h.after(id, step, took);
        }
    }

    fn image_progress(&self, _id: &str, progress: &Progress) {
        self.progress.report(progress);
    }
}
