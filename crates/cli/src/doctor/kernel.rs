//! `fcexec doctor --kernel PATH`: what a guest kernel shows of the features
//! fcexec's guest agent needs.
//!
//! The kernel must be an uncompressed x86_64 ELF image (Firecracker boots
//! nothing else on x86_64) and a Linux kernel (it holds `Linux version `).
//! Features are recognised by strings that built-in code leaves in the
//! image (driver and file system names, messages): finding one is good
//! evidence, missing one is only a warning (a feature built as a module is
//! not in the image at all, and the agent cannot load modules).

use std::path::Path;

use super::Check;

/// The features fcexec's agent needs built in: name, kernel option, and
/// strings whose presence shows it.
const FEATURES: [(&str, &str, &[&str]); 6] = [
    (
        "virtio-mmio devices",
        "CONFIG_VIRTIO_MMIO=y",
        &["virtio-mmio"],
    ),
    (
        "virtio block devices",
        "CONFIG_VIRTIO_BLK=y",
        &["virtio_blk", "virtblk"],
    ),
    ("ext4", "CONFIG_EXT4_FS=y", &["EXT4-fs"]),
    (
        "virtio vsock",
        "CONFIG_VIRTIO_VSOCKETS=y",
        &["vmw_vsock_virtio_transport", "virtio_vsock"],
    ),
    ("devtmpfs", "CONFIG_DEVTMPFS=y", &["devtmpfs"]),
    ("an initramfs", "CONFIG_BLK_DEV_INITRD=y", &["initramfs"]),
];

/// Looks into the kernel at `path`.
pub(super) fn check(path: &Path) -> Vec<Check> {
    let shown = path.display();
    let image = match std::fs::read(path) {
        Ok(image) => image,
        Err(e) => {
            return vec![Check::fail(
                format!("kernel {shown}: cannot read it: {e}"),
                "give the path of an uncompressed ELF kernel (vmlinux)",
            )]
        }
    };
    // ELF, 64-bit, little-endian, e_machine x86_64 (62).
    let elf = image.len() > 20 && image.starts_with(b"\x7fELF") && image[4] == 2 && image[5] == 1;
    if !elf || u16::from_le_bytes([image[18], image[19]]) != 62 {
        return vec![Check::Fail {
            problem: format!("kernel {shown} is not an x86_64 ELF image"),
            fix: "Firecracker boots an uncompressed vmlinux on x86_64 (not a bzImage): \
                  build one or extract it with the kernel's scripts/extract-vmlinux"
                .into(),
        }];
    }
    let Some(version) = find(&image, b"Linux version ").map(|at| line_at(&image, at)) else {
        return vec![Check::Fail {
            problem: format!("kernel {shown} is an ELF image but not a Linux kernel"),
            fix: "fcexec's guest agent needs a Linux kernel (use plain mode, or an agent of your own, for other guests)".into(),
        }];
    };
    let mut findings = vec![Check::Ok(format!("kernel {shown}: {version}"))];
    for (feature, option, marks) in FEATURES {
        findings.push(match marks.iter().any(|m| find(&image, m.as_bytes()).is_some()) {
            true => Check::Ok(format!("kernel: {feature} built in")),
            false => Check::Warn {
                problem: format!("kernel: no sign of {feature} in {shown}"),
                fix: format!("fcexec's guest agent needs {option}; Firecracker's CI guest kernels have it"),
            },
        });
    }
    findings
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The printable text from `at` to the end of its line (at most 120 bytes).
fn line_at(image: &[u8], at: usize) -> String {
    let line: Vec<u8> = image[at..]
        .iter()
        .take(120)
        .take_while(|&&b| b != b'\n' && b != 0 && (b == b' ' || b.is_ascii_graphic()))
        .copied()
        .collect();
    String::from_utf8_lossy(&line).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(body: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 64];
        image[..4].copy_from_slice(b"\x7fELF");
        image[4] = 2;
        image[5] = 1;
        image[18] = 62;
        image.extend_from_slice(body);
        image
    }

    #[test]
    fn a_linux_kernel_shows_its_version_and_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        let body =
            b"\0Linux version 6.1.102 (builder) #1 SMP\n\0virtio-mmio\0EXT4-fs (%s)\0devtmpfs\0";
        std::fs::write(&path, elf(body)).unwrap();
        let findings = check(&path);
        assert_eq!(
            findings[0],
            Check::Ok(format!(
                "kernel {}: Linux version 6.1.102 (builder) #1 SMP",
                path.display()
            ))
        );
        let warned: Vec<String> = findings
            .iter()
            .filter_map(|f| match f {
                Check::Warn { problem, .. } => Some(problem.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(warned.len(), 3, "{warned:?}");
        assert!(
            warned.iter().any(|w| w.contains("virtio vsock")),
            "{warned:?}"
        );
    }

    #[test]
    fn other_files_fail_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let not_elf = dir.path().join("bzImage");
        std::fs::write(&not_elf, b"MZ not an elf").unwrap();
        assert!(
            matches!(&check(&not_elf)[..], [Check::Fail { fix, .. }] if fix.contains("vmlinux"))
        );
        let not_linux = dir.path().join("guest.elf");
        std::fs::write(&not_linux, elf(b"hello")).unwrap();
        assert!(
            matches!(&check(&not_linux)[..], [Check::Fail { problem, .. }] if problem.contains("not a Linux kernel"))
        );
        assert!(matches!(
            &check(&dir.path().join("none"))[..],
            [Check::Fail { .. }]
        ));
    }
}
