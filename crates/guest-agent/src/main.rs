//! `fcexec-agent`: PID 1 of the initrd that fcexec builds for a Linux guest
//! (see the library's docs). Run as anything but PID 1 it refuses: as PID 1
//! it mounts over /proc and /dev and reboots the machine at the end.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("--version" | "-V")) {
        println!("fcexec-agent {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if std::process::id() != 1 {
        eprintln!(
            "fcexec-agent: this is fcexec's guest agent, the init (PID 1) of the initrd fcexec \
             builds for a Linux VM; it mounts file systems and reboots the machine when done, so \
             it does not run as an ordinary process (pid {})",
            std::process::id()
        );
        return ExitCode::from(2);
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("fcexec-agent: panic: {info}");
    }));
    let _ = fcexec_guest_agent::run(fcexec_guest_agent::Env::guest());
    // The reboot failed. PID 1 exiting makes the kernel panic, and the
    // kernel command line's `panic=1` reboots it: the VM stops either way.
    eprintln!("fcexec-agent: the reboot did not happen; exiting, which stops the VM");
    ExitCode::FAILURE
}
