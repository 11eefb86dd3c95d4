//! Test harness: runs the test guest under the real Firecracker
//! (`firecracker --config-file`, with or without an API socket, with or
//! without a vsock device, with or without a network interface in a network
//! namespace), captures its stdout with arrival times, and decodes guest
//! protocol frames ([`decode`]); [`host`] is a minimal protocol 2 host on the
//! vsock socket; [`netns`] makes throwaway network namespaces.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod decode;
pub mod host;
pub mod netns;
#[allow(unused_imports)] // each test binary uses a different part
pub use decode::{base64_decode, decode, Decoded};

/// The key the tests use.
pub const KEY: &str = "0123456789abcdef0123456789abcdef";

/// One line of the VMM's stdout and when it arrived (since spawn).
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Duration,
    pub bytes: Vec<u8>,
}

/// How to run one VM.
pub struct VmSpec {
    pub boot_args: String,
    /// Host paths of the drives, in order; `true` marks a read-only drive.
    pub drives: Vec<(PathBuf, bool)>,
    pub api: bool,
    /// The vsock device's host socket (`uds_path`), guest CID 3.
    pub vsock: Option<PathBuf>,
    /// A network interface, and the namespace the VMM runs in.
    pub net: Option<NetSpec>,
}

/// A VM's network interface `eth0` on a TAP device in a network namespace,
/// with MMDS version 2 enabled on it.
pub struct NetSpec {
    /// The network namespace (`ip netns` name) the VMM runs in.
    pub netns: String,
    /// The TAP device in that namespace.
    pub tap: String,
    /// The guest's MAC address.
    pub guest_mac: String,
    /// The MMDS's initial contents (`--metadata`), if any.
    pub metadata: Option<String>,
}

impl VmSpec {
    pub fn new(boot_args: impl Into<String>) -> Self {
        VmSpec {
            boot_args: boot_args.into(),
            drives: Vec::new(),
            api: false,
            vsock: None,
            net: None,
        }
    }

    pub fn agent(job: &test_guest::Job) -> Self {
        Self::new(format!("fcx.key={KEY} {}", job.to_kernel_arg()))
    }

    pub fn drive(mut self, path: &Path, read_only: bool) -> Self {
        self.drives.push((path.to_path_buf(), read_only));
        self
    }

    pub fn with_api(mut self) -> Self {
        self.api = true;
        self
    }

    pub fn with_vsock(mut self, uds_path: &Path) -> Self {
        self.vsock = Some(uds_path.to_path_buf());
        self
    }

    pub fn with_net(mut self, net: NetSpec) -> Self {
        self.net = Some(net);
        self
    }
}

/// A running VMM.
pub struct Vm {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub started: Instant,
    pub lines: Arc<Mutex<Vec<Line>>>,
    reader: Option<JoinHandle<()>>,
    pub api_sock: Option<PathBuf>,
    pub log: PathBuf,
}

/// What a finished VM left behind.
pub struct Outcome {
    pub status: ExitStatus,
    pub wall: Duration,
    pub lines: Vec<Line>,
    pub log: String,
}

impl Outcome {
    /// All of stdout.
    pub fn stdout(&self) -> Vec<u8> {
        self.lines
            .iter()
            .flat_map(|l| l.bytes.iter().copied())
            .collect()
    }

    /// Stdout without Firecracker's own first log line (written before its
    /// logger is configured).
    pub fn guest_output(&self) -> Vec<u8> {
        self.lines
            .iter()
            .filter(|l| !is_firecracker_log(&l.bytes))
            .flat_map(|l| l.bytes.iter().copied())
            .collect()
    }

    pub fn decode(&self) -> Decoded {
        decode(&self.lines, KEY)
    }
}

pub fn is_firecracker_log(line: &[u8]) -> bool {
    String::from_utf8_lossy(line).contains("] Running Firecracker v")
}

/// Starts a VM running the test guest.
pub fn spawn(vmm: &testkit::Vmm, spec: &VmSpec) -> Vm {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = test_guest::write_kernel(dir.path()).expect("write kernel");
    let log = dir.path().join("firecracker.log");
    std::fs::write(&log, b"").expect("create log");
    let drives: Vec<_> = spec
        .drives
        .iter()
        .enumerate()
        .map(|(i, (path, ro))| {
            format!(
                r#"{{"drive_id":"d{i}","path_on_host":{},"is_root_device":false,"is_read_only":{ro}}}"#,
                json_string(&path.to_string_lossy())
            )
        })
        .collect();
    let vsock = spec
        .vsock
        .as_ref()
        .map(|uds| {
            format!(
                r#""vsock":{{"guest_cid":3,"uds_path":{}}},"#,
                json_string(&uds.to_string_lossy())
            )
        })
        .unwrap_or_default();
    let net = spec
        .net
        .as_ref()
        .map(|net| {
            format!(
                r#""network-interfaces":[{{"iface_id":"eth0","host_dev_name":{},"guest_mac":{}}}],
"mmds-config":{{"version":"V2","network_interfaces":["eth0"]}},"#,
                json_string(&net.tap),
                json_string(&net.guest_mac)
            )
        })
        .unwrap_or_default();
    let config = format!(
        r#"{{"boot-source":{{"kernel_image_path":{},"boot_args":{}}},
"drives":[{}],{vsock}{net}
"machine-config":{{"vcpu_count":1,"mem_size_mib":32}},
"logger":{{"log_path":{},"level":"Info"}}}}"#,
        json_string(&kernel.to_string_lossy()),
        json_string(&spec.boot_args),
        drives.join(","),
        json_string(&log.to_string_lossy()),
    );
    let config_path = dir.path().join("vm.json");
    std::fs::write(&config_path, config).expect("write config");
    let mut cmd = match &spec.net {
        Some(net) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &net.netns])
                .arg(&vmm.firecracker);
            if let Some(metadata) = &net.metadata {
                let path = dir.path().join("metadata.json");
                std::fs::write(&path, metadata).expect("write metadata");
                cmd.arg("--metadata").arg(path);
            }
            cmd
        }
        None => Command::new(&vmm.firecracker),
    };
    let api_sock = spec.api.then(|| dir.path().join("api.sock"));
    match &api_sock {
        Some(sock) => cmd.arg("--api-sock").arg(sock),
        None => cmd.arg("--no-api"),
    };
    cmd.arg("--config-file").arg(&config_path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn firecracker");
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, stdout);
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => sink.lock().unwrap().push(Line {
                    at: started.elapsed(),
                    bytes: buf,
                }),
            }
        }
    });
    Vm {
        dir,
        child,
        started,
        lines,
        reader: Some(reader),
        api_sock,
        log,
    }
}

impl Vm {
    /// Waits for the VMM to exit (killing it after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait");
                panic!(
                    "firecracker ran longer than {timeout:?} ({status}); log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let wall = self.started.elapsed();
        self.finish(status, wall)
    }

    /// Kills the VMM and collects what it left.
    pub fn kill(mut self) -> Outcome {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait");
        let wall = self.started.elapsed();
        self.finish(status, wall)
    }

    fn finish(&mut self, status: ExitStatus, wall: Duration) -> Outcome {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        Outcome {
            status,
            wall,
            lines,
            log: self.log_text(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a stdout line contains `needle`; false on timeout.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| String::from_utf8_lossy(&l.bytes).contains(needle))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Sends `PUT /actions {"action_type": "SendCtrlAltDel"}`; returns the HTTP status.
    pub fn send_ctrl_alt_del(&self) -> u16 {
        let sock = self
            .api_sock
            .as_ref()
            .expect("VM started without an API socket");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("cannot connect to {}: {e}", sock.display()),
            }
        };
        let body = r#"{"action_type":"SendCtrlAltDel"}"#;
        let request = format!(
            "PUT /actions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send request");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut response = [0u8; 512];
        let n = stream.read(&mut response).expect("read response");
        let text = String::from_utf8_lossy(&response[..n]);
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config drive image: the `FCXCFG1` sector, padded to 4 KiB.
pub fn config_drive(path: &Path, key: &str, job: Option<&test_guest::Job>) {
    let job = job.map(|job| format!("job={job}"));
    config_drive_lines(path, key, job.as_slice());
}

/// A config drive image with the key and more `name=value` lines.
pub fn config_drive_lines(path: &Path, key: &str, lines: &[String]) {
    let mut text = format!("FCXCFG1\nkey={key}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let mut image = text.into_bytes();
    assert!(image.len() < 512, "config sector too long");
    image.resize(4096, 0);
    std::fs::write(path, image).expect("write config drive");
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 0 {
        (v[n / 2 - 1] + v[n / 2]) / 2
    } else {
        v[n / 2]
    }
}
