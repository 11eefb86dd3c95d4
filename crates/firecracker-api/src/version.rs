//! Version probing: runs `firecracker --version` and checks the answer
//! against the range of versions this crate models.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The oldest Firecracker release this crate supports.
pub const MIN_SUPPORTED: Version = Version::new(1, 16, 0);
/// The first Firecracker release this crate does not support any more.
pub const FIRST_UNSUPPORTED: Version = Version::new(1, 17, 0);

/// A Firecracker release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number.
    pub patch: u32,
}

impl Version {
    /// A version from its three numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// True when this crate supports the version.
    pub fn is_supported(&self) -> bool {
        *self >= MIN_SUPPORTED && *self < FIRST_UNSUPPORTED
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a version could not be read or is not supported.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The binary could not be run.
    #[error("cannot run {binary} --version: {source}; install the Firecracker v1.16 release and put it on PATH, or set FIRECRACKER_BIN / JAILER_BIN")]
    Run {
        /// The binary.
        binary: PathBuf,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The output held no version number.
    #[error("{binary} --version printed {output:?}, which holds no version number like v1.16.1")]
    Unparsable {
        /// The binary.
        binary: PathBuf,
        /// What it printed.
        output: String,
    },
    /// The version is outside the supported range.
    #[error("{binary} is {version}, but fcexec supports {MIN_SUPPORTED} up to (not including) {FIRST_UNSUPPORTED}; install the v1.16.1 release")]
    Unsupported {
        /// The binary.
        binary: PathBuf,
        /// Its version.
        version: Version,
    },
}

impl FromStr for Version {
    type Err = ();

    /// Parses `1.16.1`, `v1.16.1`, or the first such word in a line like
    /// `Firecracker v1.16.1` (a suffix such as `-dev` is ignored).
    fn from_str(s: &str) -> Result<Self, ()> {
        s.split_whitespace().find_map(parse_word).ok_or(())
    }
}

fn parse_word(word: &str) -> Option<Version> {
    let word = word.strip_prefix('v').unwrap_or(word);
    let core = word.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
    parts
        .next()
        .is_none()
        .then_some(Version::new(major, minor, patch))
}

/// Runs `<binary> --version` and returns its version, whether supported or not.
pub async fn probe(binary: &Path) -> Result<Version, VersionError> {
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| VersionError::Run {
            binary: binary.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .next()
        .and_then(|line| line.parse().ok())
        .ok_or_else(|| VersionError::Unparsable {
            binary: binary.to_path_buf(),
            output: text.trim().to_string(),
        })
}

/// Runs `<binary> --version` and fails unless the version is supported.
pub async fn check(binary: &Path) -> Result<Version, VersionError> {
    let version = probe(binary).await?;
    if version.is_supported() {
        Ok(version)
    } else {
        Err(VersionError::Unsupported {
            binary: binary.to_path_buf(),
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_lines() {
        let cases = [
            ("Firecracker v1.16.1", Some(Version::new(1, 16, 1))),
            ("Jailer v1.16.0", Some(Version::new(1, 16, 0))),
            ("Firecracker v1.17.0-dev", Some(Version::new(1, 17, 0))),
            ("1.2.3", Some(Version::new(1, 2, 3))),
            ("Firecracker", None),
            ("v1.16", None),
            ("v1.16.1.2", None),
        ];
        for (line, want) in cases {
            assert_eq!(line.parse::<Version>().ok(), want, "{line}");
        }
    }

    #[test]
    fn support_range() {
        assert!(Version::new(1, 16, 1).is_supported());
        assert!(Version::new(1, 16, 0).is_supported());
        assert!(!Version::new(1, 15, 9).is_supported());
        assert!(!Version::new(1, 17, 0).is_supported());
        assert!(!Version::new(2, 0, 0).is_supported());
    }

    #[tokio::test]
    async fn a_missing_binary_says_how_to_fix_it() {
        let err = probe(Path::new("/nonexistent/firecracker"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("FIRECRACKER_BIN"), "{err}");
    }

    #[tokio::test]
    async fn a_binary_without_version_is_unparsable() {
        let err = probe(Path::new("/bin/true")).await.unwrap_err();
        assert!(matches!(err, VersionError::Unparsable { .. }), "{err}");
    }
}
