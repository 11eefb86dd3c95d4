mod common;
use std::time::{Duration, Instant};
use common::host::{boot, Transcript};
use test_guest::Job;
#[test]
fn slow_host() {
    let vmm = testkit::require_vmm!();
    let (vm, listener) = boot(&vmm, &Job::new().bulk(4 << 20).err("e"), &["heartbeat_ms=3"]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    let s = Instant::now();
    for i in 0..60 {
        let r = conn.serve(&mut t, |_| false, Duration::from_millis(1));
        if i % 10 == 0 { println!("{i}: {r:?} stdout {} hb {}", t.stdout.len(), t.heartbeats.len()); }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = conn.serve(&mut t, |_| false, Duration::from_secs(3));
    println!("end: {r:?} {:?} stdout {} hb {}", s.elapsed(), t.stdout.len(), t.heartbeats.len());
    let out = vm.vm.kill();
    println!("LOG:\n{}\nCONSOLE:\n{}", out.log, String::from_utf8_lossy(&out.stdout()));
}
