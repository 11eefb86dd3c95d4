//! The agent as PID 1 of fresh PID and mount namespaces, with a busybox
//! rootfs and volumes as real ext4 images on loop devices (see
//! `support/harness.rs`). Needs root; skipped with one line otherwise.

mod support {
    pub mod harness;
    pub mod host;
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fcexec_guest_protocol::{ExitStatus, HostFrame};
use serde_json::{json, Value};
use support::harness::{self, busybox_tree, config_drive, mkfs, sh, Agent, Loop, Slot};
use support::host::{accept, serve, Frame, HostConn, Stored};

const LONG: Duration = Duration::from_secs(30);

/// Returns from the calling test, counted as skipped, without root or tools.
macro_rules! require_root {
    () => {
        if let Some(reason) = harness::missing() {
            harness::skip(&reason);
            return;
        }
    };
}

/// Not a test: the namespaced agent's entry (see `support/harness.rs`).
#[test]
fn pid1_harness_entry() {
    harness::entry();
}

/// One VM: a temp dir, its images, their loop devices.
struct Vm {
    // Dropped in order: the loops after everything else that uses them.
    dir: tempfile::TempDir,
    drives: Vec<PathBuf>,
    images: Vec<PathBuf>,
    loops: Vec<Loop>,
    _slot: Slot,
}

/// What a run gave.
struct Run {
    stored: Stored,
    /// Whether the agent connected at all.
    connected: bool,
    /// The agent process's exit code (0: reported; 3: unreported).
    code: Option<i32>,
    console: String,
}

impl Run {
    /// Asserts the stored stdout, showing stderr and the console if not.
    #[track_caller]
    fn assert_out(&self, expected: &str) {
        assert_eq!(
            self.stored.out(),
            expected,
            "{}\n{}",
            self.stored.err(),
            self.console
        );
    }

    fn status(&self) -> Option<ExitStatus> {
        self.stored.status()
    }

    fn fail(&self) -> &str {
        self.stored
            .fail()
            .unwrap_or_else(|| panic!("no fail: {:?}\nconsole:\n{}", self.stored.end, self.console))
    }
}

impl Vm {
    /// A VM whose rootfs is the busybox tree, changed by `tweak`.
    fn with_root(tweak: impl FnOnce(&Path)) -> Vm {
        let slot = Slot::take();
        let dir = tempfile::Builder::new()
            .prefix("fcexec-agent-")
            .tempdir()
            .unwrap();
        let tree = dir.path().join("rootfs-tree");
        busybox_tree(&tree);
        tweak(&tree);
        let mut vm = Vm {
            dir,
            drives: Vec::new(),
            images: Vec::new(),
            loops: Vec::new(),
            _slot: slot,
        };
        vm.add_image("rootfs.img", 32, Some(&tree));
        vm
    }

    fn new() -> Vm {
        Vm::with_root(|_| {})
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds an ext4 drive holding `dir` (or empty); returns its index.
    fn add_image(&mut self, name: &str, size_mib: u64, dir: Option<&Path>) -> usize {
        let image = self.path(name);
        mkfs(&image, size_mib, dir);
        self.attach(image)
    }

    /// Adds a volume holding the files `(name, text)`; returns its index.
    fn add_volume(&mut self, name: &str, files: &[(&str, &str)]) -> usize {
        let tree = self.path(&format!("{name}-tree"));
        std::fs::create_dir_all(&tree).unwrap();
        for (file, text) in files {
            std::fs::write(tree.join(file), text).unwrap();
        }
        self.add_image(&format!("{name}.img"), 8, Some(&tree))
    }

    /// Adds a drive that is not a file system; returns its index.
    fn add_garbage(&mut self) -> usize {
        let image = self.path("garbage.img");
        let junk: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        std::fs::write(&image, junk).unwrap();
        self.attach(image)
    }

    fn attach(&mut self, image: PathBuf) -> usize {
        let device = Loop::attach(&image);
        self.drives.push(device.0.clone());
        self.loops.push(device);
        self.images.push(image);
        self.drives.len() - 1
    }

    /// Runs the agent with `spec` as the config drive's job spec; the host
    /// is well-behaved, and `hook` sees each frame.
    fn run_raw(&self, spec: &[u8], hook: &mut dyn FnMut(&Frame, &mut HostConn, &Stored)) -> Run {
        let config = self.path("config.img");
        std::fs::write(&config, config_drive(spec, 200)).unwrap();
        let mut drives = self.drives.clone();
        drives.push(config);
        let socket = self.path("host.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let mut agent = Agent::start(
            &drives,
            &socket,
            &self.path("rootfs"),
            &self.path("console.log"),
        );
        let give_up = Instant::now() + LONG;
        let mut stored = Stored::default();
        let mut connected = false;
        let mut code = None;
        while Instant::now() < give_up {
            if let Some(mut conn) = accept(&listener, Duration::from_millis(50)) {
                connected = true;
                serve(&mut conn, &mut stored, LONG, hook);
                code = agent.wait(LONG);
                break;
            }
            if let Some(c) = agent.wait(Duration::ZERO) {
                code = Some(c);
                break;
            }
        }
        Run {
            stored,
            connected,
            code,
            console: agent.console(),
        }
    }

    fn run(&self, spec: Value) -> Run {
        self.run_hooked(spec, &mut |_, _, _| {})
    }

    fn run_hooked(&self, spec: Value, hook: &mut dyn FnMut(&Frame, &mut HostConn, &Stored)) -> Run {
        let run = self.run_raw(spec.to_string().as_bytes(), hook);
        assert!(
            run.connected,
            "the agent never connected; console:\n{}",
            run.console
        );
        assert_eq!(
            run.code,
            Some(0),
            "the agent did not end well; console:\n{}",
            run.console
        );
        run
    }

    /// A file of an ext4 image, read without mounting it.
    fn read_back(&self, drive: usize, file: &str) -> String {
        sh(Command::new(harness::tool("debugfs"))
            .arg("-R")
            .arg(format!("cat {file}"))
            .arg(&self.images[drive]))
    }
}

fn shell(script: &str) -> Value {
    json!({"command": ["/bin/sh", "-c", script]})
}

#[test]
fn exit_codes_0_3_and_255() {
    require_root!();
    let vm = Vm::new();
    for code in [0u8, 3, 255] {
        let run = vm.run(shell(&format!("exit {code}")));
        assert_eq!(
            run.status(),
            Some(ExitStatus::Code(code)),
            "{}",
            run.console
        );
    }
}

#[test]
fn a_job_killed_by_sigsegv_reports_the_signal() {
    require_root!();
    let run = Vm::new().run(shell("echo before; kill -SEGV $$"));
    assert_eq!(run.status(), Some(ExitStatus::Signal(11)));
    assert_eq!(run.stored.out(), "before\n");
}

#[test]
fn stdout_and_stderr_stay_apart() {
    require_root!();
    let run = Vm::new().run(shell("echo out1; echo err1 >&2; echo out2; echo err2 >&2"));
    assert_eq!(run.stored.out(), "out1\nout2\n");
    assert_eq!(run.stored.err(), "err1\nerr2\n");
    assert_eq!(run.status(), Some(ExitStatus::Code(0)));
}

#[test]
fn env_working_directory_and_a_non_root_user_are_applied() {
    require_root!();
    let vm = Vm::new();
    let script =
        r#"echo "$GREETING"; pwd; id -u; id -g; echo "$PATH"; ls /dev | grep -c loop || true"#;
    let mut spec = shell(script);
    spec["env"] = json!([["GREETING", "hello there"]]);
    spec["working_dir"] = json!("/work");
    spec["user"] = json!("1000:1000");
    let run = vm.run(spec);
    assert_eq!(
        run.stored.out(),
        format!(
            "hello there\n/work\n1000\n1000\n{}\n0\n",
            fcexec_guest_agent::job::DEFAULT_PATH
        ),
        "stderr: {}",
        run.stored.err()
    );
    // By name, with the supplementary groups of /etc/group.
    let mut spec = shell("id -u; id -G");
    spec["user"] = json!("alice");
    let run = vm.run(spec);
    assert_eq!(run.stored.out(), "1000\n1000 50\n", "{}", run.stored.err());
}

fn script(name: &str, text: &str) -> Value {
    json!({"name": name, "script_b64": base64(text.as_bytes())})
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[test]
fn provision_scripts_run_in_order_as_root_before_the_job() {
    require_root!();
    let mut spec = shell("cat /order");
    spec["user"] = json!("alice");
    spec["provision_scripts"] = json!([
        script("01-first", "echo one > /order; echo noise"),
        script(
            "02-second",
            "echo two-as-$(id -u) >> /order; echo noise >&2"
        ),
    ]);
    let run = Vm::new().run(spec);
    assert_eq!(run.stored.out(), "one\ntwo-as-0\n");
    assert_eq!(run.stored.err(), "");
    assert_eq!(run.status(), Some(ExitStatus::Code(0)));
}

#[test]
fn a_failing_provision_script_fails_with_its_name_and_output() {
    require_root!();
    let mut spec = shell("echo the job ran");
    spec["provision_scripts"] = json!([
        script("01-ok", "true"),
        script("02-bad", "echo about to fail; echo really >&2; exit 9"),
        script("03-never", "touch /never"),
    ]);
    let run = Vm::new().run(spec);
    assert_eq!(
        run.fail(),
        "provision script 02-bad failed with exit code 9: about to fail\nreally"
    );
    assert_eq!(run.stored.out(), "");
}

#[test]
fn an_input_volume_is_read_only_and_an_output_volumes_writes_reach_its_image() {
    require_root!();
    let mut vm = Vm::new();
    let input = vm.add_volume("input", &[("hello.txt", "input data\n")]);
    let output = vm.add_image("output.img", 8, None);
    let mut spec = shell(
        "cat /mnt/in/hello.txt; \
         if echo x > /mnt/in/new 2>/dev/null; then echo WROTE; else echo READ-ONLY; fi; \
         echo result > /data/out/result.txt && echo written",
    );
    spec["volumes"] = json!([
        {"drive": input, "target": "/mnt/in", "read_only": true},
        // The host lets a relative target through: it starts at the rootfs's /.
        {"drive": output, "target": "data/out", "read_only": false},
    ]);
    let run = vm.run(spec);
    assert_eq!(
        run.stored.out(),
        "input data\nREAD-ONLY\nwritten\n",
        "{}",
        run.stored.err()
    );
    assert_eq!(vm.read_back(output, "/result.txt"), "result\n");
    let listing = sh(Command::new(harness::tool("debugfs"))
        .args(["-R", "ls"])
        .arg(&vm.images[input]));
    assert!(!listing.contains("new"), "{listing}");
}

#[test]
fn orphans_are_reaped_and_no_zombie_remains() {
    require_root!();
    let script = r#"
        i=0
        while [ $i -lt 100 ]; do sh -c 'sleep 0.01 &'; i=$((i+1)); done
        sleep 1
        zombies=0
        for f in /proc/[0-9]*/stat; do
            read -r line < $f 2>/dev/null || continue
            case "$line" in *") Z "*) zombies=$((zombies+1));; esac
        done
        echo zombies=$zombies
    "#;
    let run = Vm::new().run(shell(script));
    assert_eq!(run.stored.out(), "zombies=0\n", "{}", run.stored.err());
    assert_eq!(run.status(), Some(ExitStatus::Code(0)));
}

#[test]
fn a_daemon_that_escaped_the_jobs_group_does_not_hold_the_end() {
    require_root!();
    let started = Instant::now();
    let script = "setsid sh -c 'while :; do echo tick; sleep 0.1; done' & sleep 0.3; echo started";
    let run = Vm::new().run(shell(script));
    // Ticks may come before and just after it, until the daemon is killed.
    assert!(
        run.stored.out().contains("started\n"),
        "{}",
        run.stored.out()
    );
    assert_eq!(run.status(), Some(ExitStatus::Code(0)));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Cancels the job (with `grace_ms`) once it printed `ready`.
fn cancel_after_ready(script: &str, grace_ms: u32) -> (Run, Duration) {
    let mut sent = None;
    let run = Vm::new().run_hooked(shell(script), &mut |frame, conn, _| {
        if matches!(frame, Frame::Output { data, .. } if data.starts_with(b"ready")) {
            conn.send(HostFrame::Cancel { grace_ms });
            sent = Some(Instant::now());
        }
    });
    let took = sent.expect("the job never said ready").elapsed();
    (run, took)
}

#[test]
fn cancel_a_job_that_traps_sigterm_exits_with_its_own_code() {
    require_root!();
    let script = r#"trap "echo stopping; exit 7" TERM; echo ready; while :; do sleep 0.05; done"#;
    let (run, took) = cancel_after_ready(script, 10_000);
    assert_eq!(run.status(), Some(ExitStatus::Code(7)));
    assert_eq!(run.stored.out(), "ready\nstopping\n");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn cancel_a_job_that_ignores_sigterm_kills_it_after_the_grace() {
    require_root!();
    let script = r#"trap "" TERM; echo ready; while :; do sleep 0.05; done"#;
    let (run, took) = cancel_after_ready(script, 500);
    assert_eq!(run.status(), Some(ExitStatus::Signal(9)));
    assert!(took >= Duration::from_millis(500), "killed after {took:?}");
}

#[test]
fn a_missing_command_fails_with_the_reason() {
    require_root!();
    let run = Vm::new().run(json!({"command": ["no-such-command", "arg"]}));
    assert_eq!(
        run.fail(),
        format!(
            "cannot run the job: `no-such-command` is not found in PATH {}",
            fcexec_guest_agent::job::DEFAULT_PATH
        )
    );
}

#[test]
fn an_unmountable_volume_fails_naming_the_drive_and_target() {
    require_root!();
    let mut vm = Vm::new();
    let bad = vm.add_garbage();
    let mut spec = shell("echo never");
    spec["volumes"] = json!([{"drive": bad, "target": "/mnt/in", "read_only": true}]);
    let run = vm.run(spec);
    let want = format!(
        "cannot mount volume drive {bad} ({}) as ext4, read-only at /mnt/in: ",
        vm.drives[bad].display()
    );
    assert!(run.fail().starts_with(&want), "{}", run.fail());
    // A target that resolves to the rootfs's / itself.
    let mut spec = shell("echo never");
    spec["volumes"] = json!([{"drive": bad, "target": "/x/.."}]);
    let run = vm.run(spec);
    assert_eq!(
        run.fail(),
        format!(
            "the target /x/.. of volume drive {bad} ({}) is the rootfs's / itself",
            vm.drives[bad].display()
        )
    );
    // A drive that is not there at all.
    let mut spec = shell("echo never");
    spec["volumes"] = json!([{"drive": 7, "target": "/mnt/x"}]);
    let run = vm.run(spec);
    assert_eq!(
        run.fail(),
        "volume drive 7 does not exist: the VM's volume drives are drive 1 (0 is the root file \
         system, 2 the config drive)"
    );
}

#[test]
fn a_garbage_config_drive_fails_with_the_reason() {
    require_root!();
    let vm = Vm::new();
    let run = vm.run_raw(b"{\"command\": [\"/bin/true\"", &mut |_, _, _| {});
    assert!(
        run.fail()
            .starts_with("bad config drive: the job spec is not valid JSON: EOF while parsing"),
        "{}",
        run.fail()
    );
    let run = vm.run_raw(br#"{"command": "/bin/true"}"#, &mut |_, _, _| {});
    assert_eq!(
        run.fail(),
        r#"bad config drive: bad job spec field `command`: expected an array, got "/bin/true""#
    );
}

#[test]
fn without_a_config_drive_nothing_is_reported() {
    require_root!();
    let vm = Vm::new();
    // Only the rootfs: the config drive is the one missing.
    let socket = vm.path("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut agent = Agent::start(
        &vm.drives,
        &socket,
        &vm.path("rootfs"),
        &vm.path("console.log"),
    );
    assert_eq!(agent.wait(LONG), Some(3), "{}", agent.console());
    assert!(accept(&listener, Duration::from_millis(100)).is_none());
    assert!(
        agent
            .console()
            .contains("no config drive: none of the 1 block devices"),
        "{}",
        agent.console()
    );
}

#[test]
fn a_read_only_rootfs_cannot_be_written() {
    require_root!();
    let mut spec = shell("if touch /new-file 2>/dev/null; then echo WROTE; else echo READ-ONLY; fi; echo ok > /tmp/x 2>/dev/null || echo tmp-too");
    spec["root_read_only"] = json!(true);
    let run = Vm::new().run(spec);
    assert_eq!(run.stored.out(), "READ-ONLY\ntmp-too\n");
}

/// A job spec that runs `cat /etc/resolv.conf` with `network.dns`.
fn dns_spec() -> Value {
    json!({
        "command": ["cat", "/etc/resolv.conf"],
        "network": {"address": "10.213.0.6/30", "gateway": "10.213.0.5", "dns": "10.213.0.5"},
    })
}

/// [`dns_spec`] running `script` with `/bin/sh -c`.
fn dns_shell(script: &str) -> Value {
    let mut spec = dns_spec();
    spec["command"] = json!(["/bin/sh", "-c", script]);
    spec
}

const IMAGE_RESOLV: &str = "nameserver 192.0.2.1\nsearch example.test\n";

#[test]
fn network_dns_covers_resolv_conf_without_changing_the_image() {
    require_root!();
    let vm =
        Vm::with_root(|tree| std::fs::write(tree.join("etc/resolv.conf"), IMAGE_RESOLV).unwrap());
    // As a user, who can read it but not write it.
    let mut spec = dns_shell("cat /etc/resolv.conf; echo x >> /etc/resolv.conf 2>/dev/null && echo WROTE || echo READ-ONLY");
    spec["user"] = json!("alice");
    let run = vm.run(spec);
    run.assert_out("nameserver 10.213.0.5\nREAD-ONLY\n");
    assert_eq!(run.status(), Some(ExitStatus::Code(0)));
    // As root, who can write neither.
    let spec =
        dns_shell("echo x > /etc/resolv.conf 2>/dev/null && echo WROTE; cat /etc/resolv.conf");
    let run = vm.run(spec);
    assert_eq!(
        run.stored.out(),
        "nameserver 10.213.0.5\n",
        "{}",
        run.console
    );
    assert_eq!(vm.read_back(0, "/etc/resolv.conf"), IMAGE_RESOLV);
    // Without `network`, the image's own.
    let run = vm.run(json!({"command": ["cat", "/etc/resolv.conf"]}));
    assert_eq!(run.stored.out(), IMAGE_RESOLV);
}

#[test]
fn network_dns_on_a_read_only_rootfs() {
    require_root!();
    let vm =
        Vm::with_root(|tree| std::fs::write(tree.join("etc/resolv.conf"), IMAGE_RESOLV).unwrap());
    let mut spec = dns_spec();
    spec["root_read_only"] = json!(true);
    let run = vm.run(spec);
    assert_eq!(
        run.stored.out(),
        "nameserver 10.213.0.5\n",
        "{}",
        run.console
    );
    // No /etc/resolv.conf on a read-only rootfs: left, and said so.
    let vm = Vm::new();
    let mut spec = dns_spec();
    spec["root_read_only"] = json!(true);
    let run = vm.run(spec);
    assert_eq!(run.status(), Some(ExitStatus::Code(1)));
    assert!(
        run.console.contains(
            "the job's DNS server 10.213.0.5 is not set: it does not exist and the rootfs is \
             read-only; /etc/resolv.conf is left as it is"
        ),
        "{}",
        run.console
    );
}

#[test]
fn network_dns_without_resolv_conf_leaves_no_file_behind() {
    require_root!();
    let vm = Vm::new();
    let run = vm.run(dns_spec());
    assert_eq!(
        run.stored.out(),
        "nameserver 10.213.0.5\n",
        "{}",
        run.console
    );
    let etc = sh(Command::new(harness::tool("debugfs"))
        .args(["-R", "ls /etc"])
        .arg(&vm.images[0]));
    assert!(etc.contains("passwd"), "{etc}");
    assert!(!etc.contains("resolv.conf"), "{etc}");
}

#[test]
fn network_dns_follows_a_symlink_onto_run_and_leaves_others() {
    require_root!();
    // systemd-resolved's layout: the link leads onto the /run tmpfs.
    let vm = Vm::with_root(|tree| {
        std::os::unix::fs::symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            tree.join("etc/resolv.conf"),
        )
        .unwrap();
    });
    let spec = dns_shell("cat /etc/resolv.conf; readlink /etc/resolv.conf");
    let run = vm.run(spec);
    run.assert_out("nameserver 10.213.0.5\n../run/systemd/resolve/stub-resolv.conf\n");
    // A link into the image itself: left as it is, and said so.
    let vm = Vm::with_root(|tree| {
        std::fs::create_dir_all(tree.join("usr/share")).unwrap();
        std::fs::write(tree.join("usr/share/resolv.conf"), IMAGE_RESOLV).unwrap();
        std::os::unix::fs::symlink("/usr/share/resolv.conf", tree.join("etc/resolv.conf")).unwrap();
    });
    let run = vm.run(dns_spec());
    assert_eq!(run.stored.out(), IMAGE_RESOLV);
    assert!(
        run.console.contains(
            "the job's DNS server 10.213.0.5 is not set: it is a symlink to \
             /usr/share/resolv.conf, which is not on the /run tmpfs the agent mounted"
        ),
        "{}",
        run.console
    );
    assert_eq!(vm.read_back(0, "/usr/share/resolv.conf"), IMAGE_RESOLV);
}
