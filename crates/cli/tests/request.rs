//! `fcexec run --request`, `--timeout` and `--max-output` against the real
//! VMM and the built-in test guest: the README's request run as the node
//! sends it (from a file and from stdin), a run cut short by its time limit
//! and one by its output cap, and request files that cannot be run.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{finish, Fcexec, Run, LIMIT};
use serde_json::{json, Value};

/// The README's example request (the JSON block of "The request").
fn readme_request() -> Value {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## The request")
        .nth(1)
        .expect("the README has a section \"The request\"");
    let block = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("\"The request\" shows a JSON block");
    serde_json::from_str(block).expect("the README's request is JSON")
}

/// Files the README's request names, made real under the test's directory.
struct Images {
    kernel: PathBuf,
    rootfs: PathBuf,
    initrd: PathBuf,
    input: PathBuf,
    output: PathBuf,
    results: PathBuf,
}

impl Images {
    fn new(dir: &Path) -> Images {
        let images = dir.join("images");
        std::fs::create_dir(&images).unwrap();
        let kernel = test_guest::write_kernel(&images).unwrap();
        let write = |name: &str, content: Vec<u8>| {
            let path = images.join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        Images {
            kernel,
            rootfs: write("rootfs.ext4", vec![0; 64 << 10]),
            initrd: write("initrd", vec![0; 4096]),
            input: write("in.img", test_guest::bulk_pattern(64 << 10)),
            output: write("out.img", vec![0; 64 << 10]),
            results: dir.join("results"),
        }
    }

    /// The README's request with these files and `job` for the test guest.
    fn request(&self, job: &str) -> Value {
        let mut request = readme_request();
        let path = |p: &Path| Value::from(p.to_str().unwrap());
        let params = &mut request["engine_spec"]["params"];
        params["kernel_image"] = path(&self.kernel);
        params["root_file_system"] = path(&self.rootfs);
        params["initrd_path"] = path(&self.initrd);
        params["agent_job"] = job.into();
        request["inputs"][0]["source"] = path(&self.input);
        request["outputs"][0]["source"] = path(&self.output);
        request["results_dir"] = path(&self.results);
        request
    }
}

/// Runs `fcexec <args>` with `stdin` as its standard input.
fn run_with_stdin(f: &Fcexec, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = f
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    Run::from(finish(child, LIMIT))
}

/// The result `--json` printed.
#[track_caller]
fn result_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
}

#[test]
fn run_request_runs_the_readme_request_as_the_node_sends_it() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let images = Images::new(f.dir.path());
    // Input drive 1 to output drive 2 (0 is the root file system).
    let request = images.request("copy:1:2:4096,out:hi%0A,exit:3");
    let file = f.dir.path().join("request.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&request).unwrap()).unwrap();

    let run = f
        .run(&["run", "--json", "--request", file.to_str().unwrap()])
        .expect(3);
    let result = result_of(&run);
    assert_eq!(result["stdout"], "hi\n", "{run:#?}");
    assert_eq!(
        (
            &result["exit_code"],
            &result["killed"],
            &result["error_msg"]
        ),
        (&json!(3), &json!(false), &json!("")),
    );
    // The execution took the request's id, and its output came back.
    let ps = f.run(&["ps", "-a", "--json"]).expect(0);
    let list: Value = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(
        (list[0]["execution_id"].as_str(), list[0]["job_id"].as_str()),
        (Some("exec-1"), Some("job-1")),
        "{ps:#?}"
    );
    let copied = std::fs::read(images.results.join("exec-1-0-out")).unwrap();
    assert_eq!(copied[..4096], test_guest::bulk_pattern(4096)[..]);

    // Again from stdin, streaming, under another id (exec-1 exists).
    let text = serde_json::to_vec(&images.request("out:again%0A,err:e%0A,exit:3")).unwrap();
    let run = run_with_stdin(
        &f,
        &["run", "--request", "-", "--id", "from-stdin", "--rm"],
        &text,
    )
    .expect(3);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("again\n", "e\n")
    );
    assert!(!f.state().join("cli/from-stdin").exists(), "--rm");
    // The same id twice is the executor's to refuse.
    let again = f
        .run(&["run", "--request", file.to_str().unwrap()])
        .expect(125);
    assert!(again.stderr.contains("exec-1"), "{again:#?}");
    f.assert_nothing_left();
}

#[test]
fn run_timeout_stops_a_hanging_job() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    // Warm the demo's images so that the clock measures the run.
    f.run(&["run", "--job", "exit:0"]).expect(0);
    let started = Instant::now();
    let run = f
        .run(&["run", "--timeout", "500ms", "--job", "out:started%0A,hang"])
        .expect(125);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?}: {run:#?}"
    );
    assert!(
        took >= Duration::from_millis(500),
        "took {took:?}: {run:#?}"
    );
    assert_eq!(run.stdout, "started\n");
    assert!(run.stderr.contains("timed out after 500ms"), "{run:#?}");

    // Over a request's own timeout_ms.
    let images = Images::new(f.dir.path());
    let mut request = images.request("hang");
    request["engine_spec"]["params"]["timeout_ms"] = json!(600_000);
    let text = serde_json::to_vec(&request).unwrap();
    let run = run_with_stdin(&f, &["run", "--request", "-", "--timeout", "0.3"], &text).expect(125);
    assert!(run.stderr.contains("timed out after 300ms"), "{run:#?}");
    f.assert_nothing_left();
}

#[test]
fn run_max_output_stops_a_job_that_writes_too_much() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let run = f
        .run(&[
            "run",
            "--json",
            "--max-output",
            "4KiB",
            "--job",
            "bulk:1048576,hang",
        ])
        .expect(125);
    let result = result_of(&run);
    let why = result["error_msg"].as_str().unwrap();
    assert!(why.contains("output limit reached"), "{run:#?}");
    assert!(why.contains("4 KiB"), "{run:#?}");
    assert!(run.stderr.contains("more than 4 KiB"), "{run:#?}");
    // Bytes that are not UTF-8 come back as U+FFFD, one character each.
    let kept = result["stdout"].as_str().unwrap().chars().count();
    assert!(kept <= 4096, "{kept} bytes kept");
    f.assert_nothing_left();
}

#[test]
fn bad_options_and_request_files_are_usage_errors() {
    let f = Fcexec::new();
    let missing = f.dir.path().join("missing.json");
    let run = f
        .run(&["run", "--request", missing.to_str().unwrap()])
        .expect(2);
    assert!(
        run.stderr.starts_with(&format!(
            "fcexec: --request {}: no such file",
            missing.display()
        )),
        "{run:#?}"
    );

    let broken = f.dir.path().join("broken.json");
    std::fs::write(&broken, "{\"job_id\": \"j\",\n \"execution_id\": }").unwrap();
    let run = f
        .run(&["run", "--request", broken.to_str().unwrap()])
        .expect(2);
    let expected = format!(
        "fcexec: --request {} is not valid JSON: line 2, column 18",
        broken.display()
    );
    assert!(run.stderr.starts_with(&expected), "{run:#?}");

    let run = run_with_stdin(&f, &["run", "--request", "-"], b"{\"inputs\": 3}").expect(2);
    assert!(
        run.stderr.starts_with(
            "fcexec: --request - (stdin) is not an ExecutionRequest: line 1, column 12"
        ),
        "{run:#?}"
    );
    let run = run_with_stdin(&f, &["run", "--request", "-"], b"").expect(2);
    assert!(run.stderr.contains("is empty"), "{run:#?}");

    let run = f
        .run(&[
            "run",
            "--request",
            "r.json",
            "--kernel",
            "k",
            "--rootfs",
            "r",
        ])
        .expect(2);
    assert!(run.stderr.contains("cannot be used with"), "{run:#?}");
    let run = f.run(&["run", "--timeout", "5 parsecs"]).expect(2);
    assert!(run.stderr.contains("'--timeout <DURATION>'"), "{run:#?}");
    let run = f.run(&["run", "--max-output", "1MB"]).expect(2);
    assert!(run.stderr.contains("'--max-output <SIZE>'"), "{run:#?}");
    assert!(run.stderr.contains("ambiguous"), "{run:#?}");
    assert!(!f.state().join("cli").exists(), "nothing ran");
}
