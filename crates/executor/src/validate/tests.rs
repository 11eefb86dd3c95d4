//! Validation tests: a valid request, the Go-shaped request end to end, a
//! table of malformed requests and one of refused host paths (path policy,
//! kernel interfaces, devices, relative paths, one file given twice,
//! unusable `results_dir`), each with the error variant it must give and the
//! field its message must name; files that would block are refused at once,
//! and a validation that blocks anyway times out naming the field.

use super::*;
use crate::request::{Gpu, PortBinding, Resources};
use crate::spec::SpecConfig;
use std::path::Path;

const HOST: HostLimits = HostLimits {
    cpus: 4,
    mem_mib: 2048,
};

struct Fixture {
    dir: tempfile::TempDir,
    /// A directory outside the fixture's policy.
    other: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 0x3e;
        std::fs::write(d.join("vmlinux"), &elf).unwrap();
        elf[4] = 1;
        std::fs::write(d.join("vmlinux32"), &elf).unwrap();
        let mut bz = vec![0u8; 0x400];
        bz[..2].copy_from_slice(b"MZ");
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(d.join("bzImage"), &bz).unwrap();
        std::fs::write(d.join("vmlinux.gz"), [0x1f, 0x8b, 8, 0]).unwrap();
        std::fs::write(d.join("notes.txt"), "hello").unwrap();
        for img in ["rootfs.ext4", "in0.img", "in1.img", "out0.img", "initrd"] {
            std::fs::write(d.join(img), vec![0u8; 4096]).unwrap();
        }
        std::os::unix::fs::symlink(d.join("rootfs.ext4"), d.join("rootfs-link")).unwrap();
        std::fs::create_dir(d.join("adir")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let other = tempfile::tempdir().unwrap();
        for name in ["vmlinux", "initrd", "in.img"] {
            std::fs::copy(d.join("vmlinux"), other.path().join(name)).unwrap();
        }
        std::fs::hard_link(d.join("in0.img"), d.join("in0-hard.img")).unwrap();
        std::os::unix::fs::symlink(d.join("in0.img"), d.join("in0-link.img")).unwrap();
        std::os::unix::fs::symlink(other.path().join("in.img"), d.join("escape.img")).unwrap();
        std::os::unix::fs::symlink(d.join("adir"), d.join("results-link")).unwrap();
        Fixture { dir, other }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A file outside the fixture's policy.
    fn outside(&self, name: &str) -> String {
        self.other.path().join(name).display().to_string()
    }

    /// Only the fixture's directory.
    fn policy(&self) -> PathPolicy {
        PathPolicy::only([self.dir.path()])
    }

    fn request(&self) -> ExecutionRequest {
        ExecutionRequest {
            job_id: "job-1".into(),
            execution_id: "exec_1.a".into(),
            engine_spec: Some(
                SpecConfig::new("firecracker")
                    .with_param("kernel_image", self.p("vmlinux"))
                    .with_param("root_file_system", self.p("rootfs-link"))
                    .with_param("kernel_args", "console=ttyS0 reboot=k panic=1"),
            ),
            inputs: vec![
                StorageVolume {
                    source: self.p("in0.img"),
                    target: "/in0".into(),
                    read_only: true,
                    ..StorageVolume::default()
                },
                StorageVolume {
                    source: self.p("in1.img"),
                    target: "/in1".into(),
                    ..StorageVolume::default()
                },
            ],
            outputs: vec![StorageVolume {
                source: self.p("out0.img"),
                target: "/out".into(),
                read_only: true,
                ..StorageVolume::default()
            }],
            results_dir: self.p("results"),
            ..ExecutionRequest::default()
        }
    }
}

fn params(r: &mut ExecutionRequest) -> &mut serde_json::Map<String, serde_json::Value> {
    &mut r.engine_spec.as_mut().unwrap().params
}

fn set(r: &mut ExecutionRequest, key: &str, value: impl Into<serde_json::Value>) {
    params(r).insert(key.into(), value.into());
}

fn resources(cores: Option<f64>, size: Option<i128>) -> Option<Resources> {
    Some(crate::resources::tests::res(cores, size))
}

#[test]
fn a_valid_request_resolves_everything() {
    let f = Fixture::new();
    let v = validate(&f.request(), &HOST).unwrap();
    let canon = |n: &str| std::fs::canonicalize(f.p(n)).unwrap();
    assert_eq!((v.vcpus, v.mem_mib), (1, 128));
    assert_eq!(v.mode, Mode::Plain);
    assert_eq!(v.kernel_image, canon("vmlinux"));
    let ids: Vec<_> = v.drives.iter().map(|d| d.drive_id.as_str()).collect();
    assert_eq!(ids, ["rootfs", "input0", "input1", "output0"]);
    assert_eq!(v.drives[0].path, canon("rootfs.ext4"), "symlink resolved");
    assert!(v.drives[0].is_root_device && !v.drives[0].read_only);
    assert!(
        v.drives[1].read_only && v.drives[2].read_only,
        "inputs are read-only, whatever their readonly says"
    );
    assert!(!v.drives[3].read_only, "outputs are always read-write");
    assert_eq!(
        v.drives[3].role,
        DriveRole::Output {
            index: 0,
            target: "/out".into()
        }
    );
    assert_eq!(v.outputs().count(), 1);
    assert_eq!(v.results_dir.as_deref(), Some(Path::new(&f.p("results"))));
    assert_eq!(v.drive_count(), 4);
}

#[test]
fn agent_mode_counts_the_config_drive() {
    let f = Fixture::new();
    let mut r = f.request();
    set(&mut r, "agent", true);
    set(&mut r, "agent_job", "out:hi,exit:3");
    set(
        &mut r,
        "mmds_message",
        r#"{"latest":{"meta-data":{"node_id":"n"}}}"#,
    );
    r.resources = resources(Some(2.5), Some(64 << 20));
    let v = validate(&r, &HOST).unwrap();
    assert_eq!(v.mode, Mode::Agent);
    assert_eq!(v.drive_count(), 5);
    assert_eq!(v.agent_job.as_deref(), Some("out:hi,exit:3"));
    assert_eq!(v.mmds.unwrap()["latest"]["meta-data"]["node_id"], "n");
    assert_eq!((v.vcpus, v.mem_mib), (3, 64));
}

#[test]
fn the_go_shaped_request_validates() {
    let f = Fixture::new();
    let json = format!(
        r#"{{"JobID":"7c1d","ExecutionID":"e-1","EngineSpec":{{"type":"firecracker","params":{{
        "kernel_image":"{k}","root_file_system":"{r}","initrd_path":"{i}","kernel_args":"",
        "mmds_message":""}}}},"Resources":{{"cpu":{{"cores":0.5,"clock_speed":2e9}},
        "ram":{{"size":268435456}},"disk":{{"size":0}}}},"Inputs":null,"Outputs":null,
        "ResultsDir":"","PersistLogsDuration":0,"ProvisionScripts":null,"PortsToBind":null,
        "GatewayIP":""}}"#,
        k = f.p("vmlinux"),
        r = f.p("rootfs.ext4"),
        i = f.p("initrd")
    );
    let r: ExecutionRequest = serde_json::from_str(&json).unwrap();
    let v = validate(&r, &HOST).unwrap();
    assert_eq!((v.vcpus, v.mem_mib), (1, 256));
    assert_eq!(v.drives.len(), 1);
    assert!(v.initrd.is_some());
    assert_eq!(v.results_dir, None);
}

type Mutate = Box<dyn Fn(&mut ExecutionRequest, &Fixture)>;
type Check = fn(&ValidationError) -> bool;

macro_rules! case {
    ($name:expr, |$r:ident, $f:ident| $body:expr, $pat:pat, $field:expr, $text:expr) => {
        (
            $name,
            Box::new(|$r: &mut ExecutionRequest, $f: &Fixture| {
                let _ = &$f;
                $body;
            }) as Mutate,
            (|e: &ValidationError| matches!(e, $pat)) as Check,
            $field,
            $text,
        )
    };
}

#[test]
fn malformed_requests_name_their_field() {
    use ValidationError as E;
    let f = Fixture::new();
    fn many(n: usize, f: &Fixture) -> Vec<StorageVolume> {
        (0..n)
            .map(|_| StorageVolume {
                source: f.p("in0.img"),
                target: "/x".into(),
                read_only: true,
                ..StorageVolume::default()
            })
            .collect()
    }
    #[rustfmt::skip]
    let cases: Vec<(&str, Mutate, Check, &str, &str)> = vec![
        case!("empty execution id", |r, f| r.execution_id.clear(), E::InvalidId { .. }, "execution_id", "is empty"),
        case!("traversal id", |r, f| r.execution_id = "../etc".into(), E::InvalidId { .. }, "execution_id", "\"../etc\""),
        case!("dot-dot id", |r, f| r.execution_id = "..".into(), E::InvalidId { .. }, "execution_id", "path traversal"),
        case!("hidden id", |r, f| r.execution_id = ".x".into(), E::InvalidId { .. }, "execution_id", "starts with '.'"),
        case!("long id", |r, f| r.execution_id = "a".repeat(65), E::InvalidId { .. }, "execution_id", "longer than 64"),
        case!("slash in job id", |r, f| r.job_id = "a/b".into(), E::InvalidId { .. }, "job_id", "\"a/b\""),
        case!("unicode job id", |r, f| r.job_id = "jöb".into(), E::InvalidId { .. }, "job_id", "outside"),
        case!("no engine spec", |r, f| r.engine_spec = None, E::Missing { .. }, "engine_spec", "firecracker"),
        case!("docker spec", |r, f| r.engine_spec.as_mut().unwrap().kind = "docker".into(), E::Spec(_), "engine_spec.type", "\"docker\""),
        case!("no kernel", |r, f| params(r).remove("kernel_image"), E::Spec(_), "engine_spec.params.kernel_image", "missing"),
        case!("kernel is a number", |r, f| set(r, "kernel_image", 5), E::Spec(_), "engine_spec.params.kernel_image", "not a string"),
        case!("kernel missing file", |r, f| set(r, "kernel_image", "/x/vmlinux"), E::NotFound { .. }, "engine_spec.params.kernel_image", "/x/vmlinux does not exist"),
        case!("kernel is a dir", |r, f| set(r, "kernel_image", f.p("adir")), E::WrongFileType { .. }, "engine_spec.params.kernel_image", "a directory"),
        case!("bzImage", |r, f| set(r, "kernel_image", f.p("bzImage")), E::NotElfKernel { .. }, "engine_spec.params.kernel_image", "bzImage is not supported"),
        case!("gzip kernel", |r, f| set(r, "kernel_image", f.p("vmlinux.gz")), E::NotElfKernel { .. }, "engine_spec.params.kernel_image", "gzip"),
        case!("text kernel", |r, f| set(r, "kernel_image", f.p("notes.txt")), E::NotElfKernel { .. }, "engine_spec.params.kernel_image", "ELF magic"),
        case!("32-bit kernel", |r, f| set(r, "kernel_image", f.p("vmlinux32")), E::NotElfKernel { .. }, "engine_spec.params.kernel_image", "64-bit"),
        case!("missing initrd", |r, f| set(r, "initrd_path", f.p("nope")), E::NotFound { .. }, "engine_spec.params.initrd_path", "nope does not exist"),
        case!("no rootfs", |r, f| set(r, "root_file_system", ""), E::Spec(_), "engine_spec.params.root_file_system", "missing"),
        case!("missing rootfs", |r, f| set(r, "root_file_system", f.p("gone.ext4")), E::NotFound { .. }, "engine_spec.params.root_file_system", "gone.ext4"),
        case!("rootfs is a fifo", |r, f| set(r, "root_file_system", f.p("fifo")), E::WrongFileType { .. }, "engine_spec.params.root_file_system", "named pipe"),
        case!("rootfs NUL", |r, f| set(r, "root_file_system", "/a\0b"), E::InvalidValue { .. }, "engine_spec.params.root_file_system", "NUL"),
        case!("newline in kernel args", |r, f| set(r, "kernel_args", "a\nb"), E::InvalidValue { .. }, "engine_spec.params.kernel_args", "0x0a at offset 1"),
        case!("kernel args too long", |r, f| set(r, "kernel_args", "x".repeat(2000)), E::TooLong { .. }, "engine_spec.params.kernel_args", "2000 bytes"),
        case!("mmds not JSON", |r, f| set(r, "mmds_message", "{oops"), E::InvalidValue { .. }, "engine_spec.params.mmds_message", "not valid JSON"),
        case!("mmds array", |r, f| set(r, "mmds_message", "[1]"), E::InvalidValue { .. }, "engine_spec.params.mmds_message", "not an object"),
        case!("mmds oversized", |r, f| set(r, "mmds_message", format!("{{\"a\":\"{}\"}}", "x".repeat(51200))), E::TooLong { .. }, "engine_spec.params.mmds_message", "51200"),
        case!("boot timeout 0", |r, f| set(r, "boot_timeout_ms", 0), E::Spec(_), "engine_spec.params.boot_timeout_ms", "out of range"),
        case!("zero cores", |r, f| r.resources = resources(Some(0.0), None), E::Resources(_), "resources.cpu.cores", "0 is not positive"),
        case!("too many cores", |r, f| r.resources = resources(Some(5.0), None), E::Resources(_), "resources.cpu.cores", "4 CPUs"),
        case!("negative ram", |r, f| r.resources = resources(None, Some(-1)), E::Resources(_), "resources.ram.size", "-1"),
        case!("ram in MiB", |r, f| r.resources = resources(None, Some(512)), E::Resources(_), "resources.ram.size", "in bytes"),
        case!("gpus", |r, f| r.resources = Some(Resources { gpus: vec![Gpu::default()], ..Resources::default() }), E::Resources(_), "resources.gpus", "not supported"),
        case!("input missing", |r, f| r.inputs[0].source = f.p("none.img"), E::NotFound { .. }, "inputs[0].source", "none.img"),
        case!("input null", |r, f| r.inputs[1] = StorageVolume::default(), E::Missing { .. }, "inputs[1].source", "disk image"),
        case!("input dir", |r, f| r.inputs[0].source = f.p("adir"), E::WrongFileType { .. }, "inputs[0].source", "a directory"),
        case!("input no target", |r, f| r.inputs[0].target.clear(), E::Missing { .. }, "inputs[0].target", "guest path"),
        case!("input target newline", |r, f| r.inputs[0].target = "/a\nb".into(), E::InvalidValue { .. }, "inputs[0].target", "newline"),
        case!("output missing", |r, f| r.outputs[0].source = f.p("o.img"), E::NotFound { .. }, "outputs[0].source", "create it"),
        case!("outputs without results dir", |r, f| r.results_dir.clear(), E::Missing { .. }, "results_dir", "outputs need"),
        case!("relative results dir", |r, f| r.results_dir = "results".into(), E::InvalidValue { .. }, "results_dir", "not an absolute path"),
        case!("results dir is a file", |r, f| r.results_dir = f.p("notes.txt"), E::WrongFileType { .. }, "results_dir", "not a directory"),
        case!("too many drives", |r, f| r.inputs = many(15, f), E::TooManyDrives { .. }, "inputs, outputs", "17 drives"),
        case!("output is the rootfs", |r, f| r.outputs[0].source = f.p("rootfs.ext4"), E::DuplicateDrive { .. }, "outputs[0].source", "engine_spec.params.root_file_system"),
        case!("one file as two inputs", |r, f| r.inputs[0] = r.inputs[1].clone(), E::DuplicateDrive { .. }, "inputs[1].source", "inputs[0].source"),
        case!("negative log duration", |r, f| r.persist_logs_duration = -1, E::InvalidValue { .. }, "persist_logs_duration", "-1 is a negative"),
        case!("script traversal", |r, f| { r.provision_scripts.insert("../x".into(), vec![]); }, E::InvalidId { .. }, "provision_scripts[\"../x\"]", "\"../x\""),
        case!("scripts too big", |r, f| { r.provision_scripts.insert("a".into(), vec![0; (1 << 20) + 1]); }, E::TooLong { .. }, "provision_scripts", "1048577 bytes"),
        case!("ports", |r, f| r.ports_to_bind = vec![PortBinding { ip: "0.0.0.0".into(), host_port: 0, executor_port: 80, protocol: String::new() }], E::InvalidValue { .. }, "ports_to_bind[0].host_port", "0"),
        case!("gateway", |r, f| r.gateway_ip = "10.0.0.300".into(), E::InvalidValue { .. }, "gateway_ip", "10.0.0.300"),
        case!("agent job in plain mode", |r, f| set(r, "agent_job", "exit:0"), E::InvalidValue { .. }, "engine_spec.params.agent_job", "plain mode"),
        case!("agent job too long", |r, f| { set(r, "agent", true); set(r, "agent_job", "x".repeat(600)); }, E::TooLong { .. }, "engine_spec.params.agent_job", "600 bytes"),
    ];
    assert!(cases.len() >= 25);
    for (name, mutate, check, field, text) in cases {
        let mut r = f.request();
        mutate(&mut r, &f);
        let err = match validate(&r, &HOST) {
            Ok(_) => panic!("{name}: validated"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(check(&err), "{name}: wrong variant: {err:?}");
        assert_eq!(err.field(), field, "{name}: {msg}");
        assert!(msg.starts_with(field), "{name}: {msg}");
        assert!(msg.contains(text), "{name}: {msg:?} lacks {text:?}");
        assert!(msg.contains("; "), "{name}: no fix in {msg:?}");
    }
}

#[test]
fn allowed_directories_admit_the_request_with_resolved_paths() {
    let f = Fixture::new();
    let mut r = f.request();
    r.inputs[1].source = f.p("in0-link.img");
    r.inputs[0].source = f.p("in1.img");
    let link = f.other.path().join("allowed");
    std::os::unix::fs::symlink(f.dir.path(), &link).unwrap();
    for policy in [f.policy(), PathPolicy::only([&link])] {
        let v = validate_with(&r, &HOST, &policy).unwrap();
        let canon = |n: &str| std::fs::canonicalize(f.p(n)).unwrap();
        assert_eq!(v.drives[0].path, canon("rootfs.ext4"));
        assert_eq!(
            v.drives[2].path,
            canon("in0.img"),
            "the link's target is used"
        );
    }
    let err = validate_with(&r, &HOST, &PathPolicy::only([f.other.path()])).unwrap_err();
    assert!(
        matches!(err, ValidationError::OutsideAllowedDirs { .. }),
        "{err}"
    );
}

#[test]
fn retention_rounds_up_to_a_millisecond() {
    let ms = |n| checks::check_persist_logs(n).unwrap();
    assert_eq!(ms(0), Duration::ZERO, "0: the executor's default");
    assert_eq!(
        ms(1),
        Duration::from_millis(1),
        "1 ns is not 'keep forever'"
    );
    assert_eq!(ms(999_999), Duration::from_millis(1));
    assert_eq!(ms(1_000_000), Duration::from_millis(1));
    assert_eq!(ms(1_000_001), Duration::from_millis(2));
    let f = Fixture::new();
    let mut r = f.request();
    r.persist_logs_duration = 1;
    assert_eq!(validate(&r, &HOST).unwrap().persist_logs.as_millis(), 1);
}

type PathMutate = Box<dyn Fn(&mut ExecutionRequest, &Fixture, &mut PathPolicy)>;

macro_rules! path_case {
    ($name:expr, |$r:ident, $f:ident, $p:ident| $body:expr, $pat:pat, $field:expr, $text:expr) => {
        (
            $name,
            Box::new(
                |$r: &mut ExecutionRequest, $f: &Fixture, $p: &mut PathPolicy| {
                    let _ = (&$r, &$f, &$p);
                    $body;
                },
            ) as PathMutate,
            (|e: &ValidationError| matches!(e, $pat)) as Check,
            $field,
            $text,
        )
    };
}

#[test]
fn refused_paths_name_their_field_and_the_fix() {
    use ValidationError as E;
    let f = Fixture::new();
    const K: &str = "engine_spec.params.kernel_image";
    const I: &str = "engine_spec.params.initrd_path";
    const R: &str = "engine_spec.params.root_file_system";
    const OUTSIDE: &str = "is outside the directories";
    const KERNEL_IF: &str = "under /proc or /sys";
    fn any() -> PathPolicy {
        PathPolicy::allow_all()
    }
    #[rustfmt::skip]
    let cases: Vec<(&str, PathMutate, Check, &str, &str)> = vec![
        path_case!("kernel outside", |r, f, p| set(r, "kernel_image", f.outside("vmlinux")), E::OutsideAllowedDirs { .. }, K, OUTSIDE),
        path_case!("initrd outside", |r, f, p| set(r, "initrd_path", f.outside("initrd")), E::OutsideAllowedDirs { .. }, I, OUTSIDE),
        path_case!("input outside", |r, f, p| r.inputs[1].source = f.outside("in.img"), E::OutsideAllowedDirs { .. }, "inputs[1].source", OUTSIDE),
        path_case!("symlink out of the allowed dir", |r, f, p| r.inputs[0].source = f.p("escape.img"), E::OutsideAllowedDirs { .. }, "inputs[0].source", "(resolved: "),
        path_case!("no directory allowed", |r, f, p| p.allowed_dirs = Some(vec![]), E::OutsideAllowedDirs { .. }, K, "allows no directory"),
        path_case!("a device outside the policy", |r, f, p| r.inputs[0].source = "/dev/null".into(), E::OutsideAllowedDirs { .. }, "inputs[0].source", "ExecutorConfig::path_policy"),
        path_case!("/proc file", |r, f, p| { *p = any(); set(r, "kernel_image", "/proc/self/status") }, E::WrongFileType { .. }, K, KERNEL_IF),
        path_case!("/proc magic link", |r, f, p| { *p = any(); set(r, "kernel_image", "/proc/self/exe") }, E::WrongFileType { .. }, K, KERNEL_IF),
        path_case!("/proc as a volume", |r, f, p| { *p = any(); r.inputs[0].source = "/proc/self/mem".into() }, E::WrongFileType { .. }, "inputs[0].source", KERNEL_IF),
        path_case!("/sys file", |r, f, p| { *p = any(); r.outputs[0].source = "/sys/kernel/notes".into() }, E::WrongFileType { .. }, "outputs[0].source", KERNEL_IF),
        path_case!("device file", |r, f, p| { *p = any(); r.inputs[0].source = "/dev/null".into() }, E::WrongFileType { .. }, "inputs[0].source", "a character device"),
        path_case!("device file as initrd", |r, f, p| { *p = any(); set(r, "initrd_path", "/dev/zero") }, E::WrongFileType { .. }, I, "a character device"),
        path_case!("relative kernel", |r, f, p| set(r, "kernel_image", "vmlinux"), E::InvalidValue { .. }, K, "relative path"),
        path_case!("relative input", |r, f, p| r.inputs[1].source = "./in1.img".into(), E::InvalidValue { .. }, "inputs[1].source", "give an absolute path"),
        path_case!("kernel reused as rootfs", |r, f, p| set(r, "root_file_system", f.p("vmlinux")), E::DuplicateDrive { .. }, R, "same file as engine_spec.params.kernel_image"),
        path_case!("initrd reused as input", |r, f, p| { set(r, "initrd_path", f.p("initrd")); r.inputs[0].source = f.p("initrd") }, E::DuplicateDrive { .. }, "inputs[0].source", I),
        path_case!("one file as two volumes", |r, f, p| r.inputs[1].source = f.p("in0.img"), E::DuplicateDrive { .. }, "inputs[1].source", "same file as inputs[0].source"),
        path_case!("one file via a hard link", |r, f, p| r.inputs[1].source = f.p("in0-hard.img"), E::DuplicateDrive { .. }, "inputs[1].source", "same file as inputs[0].source"),
        path_case!("one file via a symlink", |r, f, p| r.outputs[0].source = f.p("in0-link.img"), E::DuplicateDrive { .. }, "outputs[0].source", "inputs[0].source"),
        path_case!("results_dir a symlink", |r, f, p| r.results_dir = f.p("results-link"), E::WrongFileType { .. }, "results_dir", "a symbolic link"),
        path_case!("results_dir below a file", |r, f, p| r.results_dir = f.p("notes.txt/results"), E::InvalidValue { .. }, "results_dir", "notes.txt is not a directory"),
        path_case!("results_dir in /proc", |r, f, p| r.results_dir = "/proc/self/results".into(), E::WrongFileType { .. }, "results_dir", KERNEL_IF),
    ];
    for (name, mutate, check, field, text) in cases {
        let (mut r, mut policy) = (f.request(), f.policy());
        mutate(&mut r, &f, &mut policy);
        let err = match validate_with(&r, &HOST, &policy) {
            Ok(_) => panic!("{name}: validated"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(check(&err), "{name}: wrong variant: {err:?}");
        assert_eq!(err.field(), field, "{name}: {msg}");
        assert!(msg.starts_with(field), "{name}: {msg}");
        assert!(msg.contains(text), "{name}: {msg:?} lacks {text:?}");
        assert!(msg.contains("; "), "{name}: no fix in {msg:?}");
    }
}

#[test]
fn an_unwritable_results_dir_is_refused() {
    let f = Fixture::new();
    let Some(dir) = blocking::Unwritable::new(f.dir.path()) else {
        eprintln!("skipped: cannot make a directory unwritable here");
        return;
    };
    for path in [dir.path().to_path_buf(), dir.path().join("new/results")] {
        let mut r = f.request();
        r.results_dir = path.display().to_string();
        let err = validate(&r, &HOST).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.field(), "results_dir", "{msg}");
        assert!(msg.contains("writable by the user fcexec runs as"), "{msg}");
    }
}

mod blocking;
