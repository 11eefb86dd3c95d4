//! The test guest under the real Firecracker: exit codes, output streams, bulk
//! output, drive copies, triple faults, panics, sleeps, Ctrl+Alt+Del, plain
//! mode and the config drive. Each test skips (see `testkit`) without
//! Firecracker or `/dev/kvm`.

mod common;

use std::time::Duration;

use common::{spawn, VmSpec, KEY};
use test_guest::Job;

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn exit_codes_arrive_intact() {
    let vmm = testkit::require_vmm!();
    for code in [0u8, 1, 42, 255] {
        let out = spawn(&vmm, &VmSpec::agent(&Job::new().exit(code))).wait(TIMEOUT);
        assert!(out.status.success(), "{}", out.log);
        let d = out.decode();
        assert_eq!(d.kinds(), ["hello", "exit"]);
        assert_eq!(d.frames[0].payload, test_guest::HELLO.as_bytes());
        assert_eq!(d.exit_code(), Some(code));
    }
}

#[test]
fn job_without_exit_exits_zero() {
    let vmm = testkit::require_vmm!();
    let out = spawn(&vmm, &VmSpec::agent(&Job::new().out("x"))).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "out", "exit"]);
    assert_eq!(d.exit_code(), Some(0));
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let vmm = testkit::require_vmm!();
    let job = Job::new()
        .out("one, two: three 100%\n")
        .err("warning\n")
        .out(b"\x00\x01binary\xff")
        .err("error\n")
        .exit(7);
    let out = spawn(&vmm, &VmSpec::agent(&job)).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "out", "err", "out", "err", "exit"]);
    assert_eq!(d.stream("out"), b"one, two: three 100%\n\x00\x01binary\xff");
    assert_eq!(d.stream("err"), b"warning\nerror\n");
    assert_eq!(d.exit_code(), Some(7));
}

#[test]
fn bulk_output_arrives_byte_for_byte() {
    let vmm = testkit::require_vmm!();
    const BYTES: usize = 256 * 1024;
    let out =
        spawn(&vmm, &VmSpec::agent(&Job::new().bulk(BYTES as u64))).wait(Duration::from_secs(120));
    let d = out.decode();
    let stdout = d.stream("out");
    assert_eq!(stdout.len(), BYTES);
    assert!(
        stdout == test_guest::bulk_pattern(BYTES),
        "bulk pattern differs"
    );
    assert_eq!(d.frames.len(), 1 + BYTES.div_ceil(3072) + 1);
    assert_eq!(d.exit_code(), Some(0));
    assert!(d
        .console
        .iter()
        .all(|l| l.is_empty() || common::is_firecracker_log(l.as_bytes())));
}

#[test]
fn drive_to_drive_copy_matches() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst.img");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&dst, vec![0xeeu8; 1 << 20]).unwrap();
    let spec = VmSpec::agent(&Job::new().copy(0, 1, 1 << 20).out("copied"))
        .drive(&src, true)
        .drive(&dst, false);
    let out = spawn(&vmm, &spec).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.stream("out"), b"copied", "{:?}", d.frames);
    assert_eq!(d.exit_code(), Some(0));
    assert!(std::fs::read(&dst).unwrap() == data, "destination differs");
}

#[test]
fn partial_sector_copy_keeps_the_rest() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    std::fs::write(&src, vec![0x11u8; 4096]).unwrap();
    std::fs::write(&dst, vec![0x22u8; 4096]).unwrap();
    let spec = VmSpec::agent(&Job::new().copy(0, 1, 1000))
        .drive(&src, false)
        .drive(&dst, false);
    let d = spawn(&vmm, &spec).wait(TIMEOUT).decode();
    assert_eq!(d.exit_code(), Some(0), "{:?}", d.frames);
    let got = std::fs::read(&dst).unwrap();
    assert!(got[..1000].iter().all(|&b| b == 0x11));
    assert!(got[1000..].iter().all(|&b| b == 0x22));
}

#[test]
fn copy_to_a_read_only_drive_fails() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    std::fs::write(&src, vec![1u8; 4096]).unwrap();
    std::fs::write(&dst, vec![2u8; 4096]).unwrap();
    let spec = VmSpec::agent(&Job::new().copy(0, 1, 4096))
        .drive(&src, false)
        .drive(&dst, true);
    let d = spawn(&vmm, &spec).wait(TIMEOUT).decode();
    assert_eq!(d.kinds(), ["hello", "fail"]);
    let reason = String::from_utf8_lossy(&d.frames[1].payload).into_owned();
    assert!(
        reason.starts_with("copy from drive 0 to drive 1:"),
        "{reason}"
    );
    assert_eq!(std::fs::read(&dst).unwrap(), vec![2u8; 4096]);
}

#[test]
fn triple_fault_stops_the_vm_without_an_exit_frame() {
    let vmm = testkit::require_vmm!();
    let out = spawn(&vmm, &VmSpec::agent(&Job::new().out("before").triple())).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "out"]);
    // Firecracker exits 1 or 0 here: its vCPU thread signals the exit event
    // before it sends its error status, and the main thread may read the
    // statuses first. The log is reliable.
    assert!(
        out.log
            .contains("Unexpected exit reason on vcpu run: Shutdown"),
        "{}",
        out.log
    );
}

#[test]
fn panic_sends_a_fail_frame() {
    let vmm = testkit::require_vmm!();
    let out = spawn(
        &vmm,
        &VmSpec::agent(&Job::new().out("x").panic("it broke: badly").exit(0)),
    )
    .wait(TIMEOUT);
    assert!(out.status.success());
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "out", "fail"]);
    assert_eq!(d.frames[2].payload, b"it broke: badly");
}

#[test]
fn bad_job_sends_a_fail_frame_before_running_anything() {
    let vmm = testkit::require_vmm!();
    let spec = VmSpec::new(format!("fcx.key={KEY} fcx.job=out:x,exit:256"));
    let d = spawn(&vmm, &spec).wait(TIMEOUT).decode();
    assert_eq!(d.kinds(), ["hello", "fail"]);
    let reason = String::from_utf8_lossy(&d.frames[1].payload).into_owned();
    assert_eq!(
        reason,
        "bad job: operation 1 `exit:256`: exit code above 255"
    );
}

#[test]
fn sleep_takes_at_least_its_time() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().out("before").sleep(50).out("after");
    let out = spawn(&vmm, &VmSpec::agent(&job)).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "out", "out", "exit"]);
    // Arrival times are taken as the host reads the serial file, so the
    // first frame may be seen a little late: allow that much.
    let slept = d.frames[2].at - d.frames[1].at;
    assert!(slept >= Duration::from_millis(40), "slept {slept:?}");
    assert!(slept < Duration::from_millis(1000), "slept {slept:?}");
}

#[test]
fn ctrl_alt_del_powers_off_a_hanging_guest() {
    let vmm = testkit::require_vmm!();
    let vm = spawn(
        &vmm,
        &VmSpec::agent(&Job::new().out("hanging").hang()).with_api(),
    );
    assert!(vm.wait_for_line(" out ", TIMEOUT), "no output");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(vm.send_ctrl_alt_del(), 204);
    let out = vm.wait(Duration::from_secs(10));
    assert!(out.status.success(), "{}", out.log);
    let d = out.decode();
    assert_eq!(d.kinds(), ["hello", "out"]);
    assert!(d
        .console
        .iter()
        .any(|l| l == "test-guest: Ctrl+Alt+Del, powering off"));
}

#[test]
fn ctrl_alt_del_interrupts_a_sleep() {
    let vmm = testkit::require_vmm!();
    let vm = spawn(
        &vmm,
        &VmSpec::agent(&Job::new().out("sleeping").sleep(60_000)).with_api(),
    );
    assert!(vm.wait_for_line(" out ", TIMEOUT), "no output");
    assert_eq!(vm.send_ctrl_alt_del(), 204);
    let out = vm.wait(Duration::from_secs(10));
    assert!(out.status.success());
    assert_eq!(out.decode().kinds(), ["hello", "out"]);
}

#[test]
fn ignored_ctrl_alt_del_keeps_the_guest_running() {
    let vmm = testkit::require_vmm!();
    let vm = spawn(
        &vmm,
        &VmSpec::agent(&Job::new().ignore_cad().out("hanging").hang()).with_api(),
    );
    assert!(vm.wait_for_line(" out ", TIMEOUT), "no output");
    assert_eq!(vm.send_ctrl_alt_del(), 204);
    assert!(vm.wait_for_line("Ctrl+Alt+Del ignored", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    let out = vm.kill();
    assert!(
        out.status.code().is_none(),
        "firecracker exited by itself: {}",
        out.status
    );
    assert_eq!(out.decode().kinds(), ["hello", "out"]);
}

#[test]
fn plain_mode_prints_the_greeting() {
    let vmm = testkit::require_vmm!();
    let out = spawn(&vmm, &VmSpec::new("console=ttyS0 reboot=k panic=1")).wait(TIMEOUT);
    assert!(out.status.success());
    assert_eq!(
        out.guest_output(),
        format!("{}\n", test_guest::GREETING).as_bytes()
    );
}

#[test]
fn plain_mode_writes_text_as_is() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().out("to stdout\n").err("to stderr\n").exit(3);
    let out = spawn(&vmm, &VmSpec::new(job.to_kernel_arg())).wait(TIMEOUT);
    assert!(out.status.success());
    assert_eq!(out.guest_output(), b"to stdout\nto stderr\n");
}

#[test]
fn plain_mode_failure_is_a_vmm_failure() {
    let vmm = testkit::require_vmm!();
    let out = spawn(
        &vmm,
        &VmSpec::new(Job::new().panic("no way").to_kernel_arg()),
    )
    .wait(TIMEOUT);
    assert_eq!(
        String::from_utf8_lossy(&out.guest_output()),
        "\ntest-guest: no way\n"
    );
    assert!(out
        .log
        .contains("Unexpected exit reason on vcpu run: Shutdown"));
}

#[test]
fn config_drive_supplies_key_and_job() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.img");
    std::fs::write(&data, vec![0u8; 4096]).unwrap();
    let cfg = dir.path().join("config.img");
    let key = "fedcba9876543210fedcba9876543210";
    common::config_drive(&cfg, key, Some(&Job::new().out("from the drive").exit(5)));
    // The command line's job loses to the drive's.
    let spec = VmSpec::new(Job::new().out("from the command line").to_kernel_arg())
        .drive(&data, false)
        .drive(&cfg, true);
    let out = spawn(&vmm, &spec).wait(TIMEOUT);
    let d = common::decode(&out.lines, key);
    assert_eq!(d.kinds(), ["hello", "out", "exit"]);
    assert_eq!(d.stream("out"), b"from the drive");
    assert_eq!(d.exit_code(), Some(5));
}

#[test]
fn config_drive_without_job_uses_the_command_line() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.img");
    common::config_drive(&cfg, KEY, None);
    let spec = VmSpec::new(Job::new().err("cmdline").to_kernel_arg()).drive(&cfg, true);
    let d = spawn(&vmm, &spec).wait(TIMEOUT).decode();
    assert_eq!(d.kinds(), ["hello", "err", "exit"]);
    assert_eq!(d.stream("err"), b"cmdline");
}

#[test]
fn frame_like_output_without_the_key_is_console_text() {
    let vmm = testkit::require_vmm!();
    let fake = format!("#FCX1 {} 1 exit MA== 00000000\n", "f".repeat(32));
    let out = spawn(&vmm, &VmSpec::agent(&Job::new().out(&fake).exit(9))).wait(TIMEOUT);
    let d = out.decode();
    assert_eq!(d.exit_code(), Some(9));
    assert_eq!(d.stream("out"), fake.as_bytes());
}
