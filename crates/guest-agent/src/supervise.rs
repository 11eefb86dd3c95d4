//! The agent's one loop: it services the host connection, runs the
//! provision scripts and then the job, moves the job's output to the host,
//! reaps children, and ends the report.
//!
//! 1. Nothing runs before the host's first `attach`. Then
//!    [`Workload::prepare`] readies the system (the guest mounts the rootfs
//!    and the volumes) and returns the [`Steps`]; its error fails the run.
//! 2. Each provision script runs in order, its output (both streams in one
//!    pipe) captured, not sent; a script that does not exit 0 fails the run
//!    with its name, its status and the last lines of its output.
//! 3. The job runs with its stdout and stderr on two pipes, read only while
//!    the session has room for more retained output, so a host that does
//!    not keep up holds the job back on a full pipe.
//! 4. A `cancel` sends SIGTERM to the running process's group and SIGKILL
//!    when the grace time is over; a cancelled job's status is reported as
//!    it is (its own exit code, or the signal). A cancel while a provision
//!    script runs stops the script and ends the run without the job, as
//!    killed by SIGTERM (SIGKILL when it had to be killed).
//! 5. When the job's main process has been reaped, what is left of its
//!    process group is killed (as PID 1: every other process), the pipes
//!    are read to their end (or until they stay silent for
//!    [`Options::drain_quiet`]), [`Workload::finish`]
//!    runs (the guest syncs and unmounts), and the end (`exit` or `fail`)
//!    goes to the host. The loop returns at `done`.
//!
//! The loop is a single thread around `poll(2)`: the connection, the pipes,
//! the reaper's descriptors, and the deadlines (next connection attempt,
//! heartbeat, SIGKILL, drain) decide how long it sleeps.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use fcexec_guest_protocol::{ExitStatus, Stream};
use nix::sys::signal::Signal;

use crate::channel::Channel;
use crate::job::{self, Launch};
use crate::reaper::Reaper;
use crate::session::{End, Event};
use crate::sys::{self, Wait};
use crate::transport::Transport;

/// Bytes of a provision script's output kept for its fail reason.
const SCRIPT_TAIL: usize = 64 << 10;
/// Lines of a failed script's output in the fail reason.
const SCRIPT_LINES: usize = 20;
/// Bytes read from one pipe per turn of the loop.
const READ_TURN: usize = 256 << 10;

/// What the agent runs, and the system around it.
pub trait Workload {
    /// Readies the system and says what to run; called once, after the
    /// first `attach`. `Err`: the run fails with this reason.
    fn prepare(&mut self) -> Result<Steps, String>;
    /// Called once, after the last process ended (or the run failed) and
    /// before the end is reported: stop leftovers, sync, unmount.
    fn finish(&mut self);
}

/// A provision script, ready to run.
#[derive(Debug, Clone)]
pub struct Script {
    /// Its name, for the fail reason.
    pub name: String,
    /// How to run it.
    pub launch: Launch,
}

/// What to run: the provision scripts in order, then the job.
#[derive(Debug, Clone)]
pub struct Steps {
    /// The provision scripts.
    pub scripts: Vec<Script>,
    /// The job.
    pub job: Launch,
}

/// Tunables of the loop.
#[derive(Debug, Clone)]
pub struct Options {
    /// Grace between SIGTERM and SIGKILL when the agent itself stops the
    /// job (after a protocol error).
    pub stop_grace: Duration,
    /// After a process ended, how long its pipes may stay silent before
    /// they are closed (a daemon it started may hold them open).
    pub drain_quiet: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stop_grace: Duration::from_secs(5),
            drain_quiet: Duration::from_millis(500),
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The end reported to the host.
    pub end: End,
    /// True when the host answered `done`.
    pub acknowledged: bool,
}

/// Which process runs.
#[derive(Debug)]
enum Role {
    Script(String),
    Job,
}

/// A running (or ending) process.
#[derive(Debug)]
struct Proc {
    role: Role,
    pid: i32,
    /// stdout and stderr (a script: both on the first).
    pipes: [Option<OwnedFd>; 2],
    status: Option<ExitStatus>,
    /// The last time output arrived (or, once ended, could not be taken).
    last_data: Instant,
    kill_at: Option<Instant>,
    killed: bool,
    /// A script's captured output (its last `SCRIPT_TAIL` bytes).
    capture: VecDeque<u8>,
}

impl Proc {
    fn done(&self) -> bool {
        self.status.is_some() && self.pipes.iter().all(Option::is_none)
    }
}

/// The loop's state.
struct Run<'a> {
    channel: &'a mut Channel,
    transport: &'a dyn Transport,
    workload: &'a mut dyn Workload,
    reaper: &'a mut Reaper,
    options: &'a Options,
    started: bool,
    scripts: VecDeque<Script>,
    job: Option<Launch>,
    proc: Option<Proc>,
    cancelled: bool,
    failure: Option<String>,
    end: Option<End>,
    acknowledged: bool,
    finished: bool,
    /// The buffer pipes are read into.
    chunk: Vec<u8>,
}

/// Runs the workload and reports it over `channel` (see the module docs);
/// returns at `done` (or when no `done` can come).
pub fn serve(
    channel: &mut Channel,
    transport: &dyn Transport,
    workload: &mut dyn Workload,
    reaper: &mut Reaper,
    options: &Options,
) -> Report {
    let mut run = Run {
        channel,
        transport,
        workload,
        reaper,
        options,
        started: false,
        scripts: VecDeque::new(),
        job: None,
        proc: None,
        cancelled: false,
        failure: None,
        end: None,
        acknowledged: false,
        finished: false,
        chunk: vec![0; 64 << 10],
    };
    loop {
        let now = Instant::now();
        run.read_pipes(now);
        for (pid, status) in run.reaper.reap() {
            run.exited(pid, status, now);
        }
        run.timers(now);
        run.advance(now);
        let events = run.channel.service(now, run.transport);
        let busy = !events.is_empty();
        for event in events {
            run.event(event, now);
        }
        if let (Some(end), true) = (&run.end, run.finished) {
            return Report {
                end: end.clone(),
                acknowledged: run.acknowledged,
            };
        }
        if !busy {
            run.sleep(now);
        }
    }
}

/// Reports `end` alone over `channel` (after the loop itself failed) and
/// waits for `done` until `limit`.
pub fn report_only(channel: &mut Channel, transport: &dyn Transport, end: &End, limit: Duration) {
    channel.finish(end);
    let give_up = Instant::now() + limit;
    loop {
        let now = Instant::now();
        let events = channel.service(now, transport);
        if events
            .iter()
            .any(|e| matches!(e, Event::Done | Event::Abandoned))
            || now >= give_up
        {
            return;
        }
        let mut waits: Vec<Wait> = channel.wait().into_iter().collect();
        let deadline = channel.deadline().map_or(give_up, |d| d.min(give_up));
        let _ = sys::poll(
            &mut waits,
            Some(deadline.min(now + Duration::from_millis(50))),
        );
    }
}

impl Run<'_> {
    fn event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Attached { first: true } if !self.started => self.start(now),
            Event::Attached { .. } => {}
            Event::Cancel { grace } => {
                if self.end.is_some() {
                    return;
                }
                self.cancelled = true;
                if !self.stop(grace, now) {
                    self.end_run(End::Exit(ExitStatus::Signal(libc::SIGTERM as u8)));
                }
            }
            Event::Done => {
                self.acknowledged = true;
                self.finished = true;
            }
            Event::Abandoned => self.finished = true,
            Event::ProtocolError(reason) => {
                sys::console(&reason);
                if self.end.is_some() {
                    return;
                }
                self.failure.get_or_insert(reason.clone());
                if !self.started {
                    self.end_run(End::Fail(reason));
                } else {
                    self.stop(self.options.stop_grace, now);
                }
            }
        }
    }

    fn start(&mut self, now: Instant) {
        self.started = true;
        match self.workload.prepare() {
            Ok(steps) => {
                self.scripts = steps.scripts.into();
                self.job = Some(steps.job);
                self.next(now);
            }
            Err(reason) => self.end_run(End::Fail(reason)),
        }
    }

    /// Starts the next script, or the job.
    fn next(&mut self, now: Instant) {
        if let Some(reason) = self.failure.clone() {
            return self.end_run(End::Fail(reason));
        }
        let (role, launch) = match (self.scripts.pop_front(), self.job.take()) {
            (Some(script), job) => {
                self.job = job;
                (Role::Script(script.name), script.launch)
            }
            (None, Some(job)) => (Role::Job, job),
            (None, None) => return,
        };
        match job::spawn(&launch) {
            Ok(spawned) => {
                self.reaper.watch(spawned.pid);
                self.proc = Some(Proc {
                    role,
                    pid: spawned.pid,
                    pipes: [Some(spawned.stdout), spawned.stderr],
                    status: None,
                    last_data: now,
                    kill_at: None,
                    killed: false,
                    capture: VecDeque::new(),
                });
            }
            Err(e) => {
                let reason = match role {
                    Role::Script(name) => format!("cannot run provision script {name}: {e}"),
                    Role::Job => format!("cannot run the job: {e}"),
                };
                self.end_run(End::Fail(reason));
            }
        }
    }

    /// SIGTERM to the running process's group, SIGKILL after `grace`;
    /// false when no process runs.
    fn stop(&mut self, grace: Duration, now: Instant) -> bool {
        let Some(proc) = self.proc.as_mut().filter(|p| p.status.is_none()) else {
            return self.proc.is_some();
        };
        if proc.kill_at.is_none() {
            job::signal_group(proc.pid, Signal::SIGTERM);
            proc.kill_at = Some(now + grace);
        }
        true
    }

    fn exited(&mut self, pid: i32, status: ExitStatus, now: Instant) {
        let Some(proc) = self.proc.as_mut().filter(|p| p.pid == pid) else {
            return;
        };
        proc.status = Some(status);
        proc.last_data = now;
        if let Role::Job = proc.role {
            // What is left of the job's group would hold its pipes open.
            job::signal_group(pid, Signal::SIGKILL);
            if self.reaper.reaps_all() && nix::unistd::getpid().as_raw() == 1 {
                // As PID 1 the run is over: so is every process that
                // escaped the group (a daemon still writing to the pipes).
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGKILL);
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        let Some(proc) = self.proc.as_mut() else {
            return;
        };
        if proc.status.is_none() && !proc.killed && proc.kill_at.is_some_and(|at| now >= at) {
            job::signal_group(proc.pid, Signal::SIGKILL);
            proc.killed = true;
        }
        if proc.status.is_some() && now >= proc.last_data + self.options.drain_quiet {
            proc.pipes = [None, None];
        }
    }

    fn read_pipes(&mut self, now: Instant) {
        let Some(proc) = self.proc.as_mut() else {
            return;
        };
        let is_job = matches!(proc.role, Role::Job);
        let chunk = &mut self.chunk;
        for (stream, pipe) in Stream::ALL.into_iter().zip(proc.pipes.iter_mut()) {
            let mut turn = 0;
            while let Some(fd) = pipe.as_ref() {
                let room = if is_job {
                    self.channel.room()
                } else {
                    READ_TURN
                };
                let want = room.min(chunk.len()).min(READ_TURN - turn);
                if want == 0 {
                    if is_job && room == 0 && proc.status.is_some() {
                        // Held back by the host, not silent.
                        proc.last_data = now;
                    }
                    break;
                }
                match sys::read(fd.as_fd(), &mut chunk[..want]) {
                    Ok(0) => *pipe = None,
                    Ok(n) => {
                        turn += n;
                        proc.last_data = now;
                        if is_job {
                            self.channel.push(stream, &chunk[..n]);
                        } else {
                            proc.capture.extend(&chunk[..n]);
                            let over = proc.capture.len().saturating_sub(SCRIPT_TAIL);
                            proc.capture.drain(..over);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => *pipe = None,
                }
            }
        }
    }

    /// Moves on once the process has ended and its pipes are closed.
    fn advance(&mut self, now: Instant) {
        if !self.proc.as_ref().is_some_and(Proc::done) {
            return;
        }
        let Some(proc) = self.proc.take() else {
            return;
        };
        let status = proc
            .status
            .unwrap_or(ExitStatus::Signal(libc::SIGKILL as u8));
        match proc.role {
            Role::Script(_) if self.cancelled => {
                let signal = if proc.killed {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                };
                self.end_run(End::Exit(ExitStatus::Signal(signal as u8)));
            }
            Role::Script(_) if self.failure.is_some() => self.next(now),
            Role::Script(_) if status == ExitStatus::Code(0) => self.next(now),
            Role::Script(name) => {
                let capture: Vec<u8> = proc.capture.into_iter().collect();
                self.end_run(End::Fail(script_failure(&name, status, &capture)));
            }
            Role::Job => match self.failure.clone() {
                Some(reason) => self.end_run(End::Fail(reason)),
                None => self.end_run(End::Exit(status)),
            },
        }
    }

    fn end_run(&mut self, end: End) {
        if self.end.is_some() {
            return;
        }
        self.workload.finish();
        self.channel.finish(&end);
        self.end = Some(end);
    }

    /// Polls until something happens or a deadline passes.
    fn sleep(&mut self, now: Instant) {
        let mut waits: Vec<Wait> = self.channel.wait().into_iter().collect();
        let mut deadline = self.channel.deadline();
        let mut at = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if let Some(proc) = &self.proc {
            // The job's pipes wait while the session has no room.
            let poll_pipes = self.channel.room() > 0 || !matches!(proc.role, Role::Job);
            for fd in proc.pipes.iter().flatten().filter(|_| poll_pipes) {
                waits.push(Wait::new(fd.as_raw_fd(), libc::POLLIN));
            }
            match (proc.status, proc.kill_at) {
                (None, Some(kill)) if !proc.killed => at(kill),
                (Some(_), _) => at(proc.last_data + self.options.drain_quiet),
                _ => {}
            }
        }
        if let Some(tick) = self.reaper.max_wait() {
            at(now + tick);
        }
        for fd in self.reaper.fds() {
            waits.push(Wait::new(fd, libc::POLLIN));
        }
        if let Err(e) = sys::poll(&mut waits, deadline) {
            sys::console(&format!("poll failed: {e}"));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The fail reason of a provision script that did not exit 0.
fn script_failure(name: &str, status: ExitStatus, output: &[u8]) -> String {
    let how = match status {
        ExitStatus::Code(code) => format!("failed with exit code {code}"),
        ExitStatus::Signal(signal) => format!("was killed by signal {signal}"),
    };
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(SCRIPT_LINES)..].join("\n");
    let tail = if tail.is_empty() {
        "(no output)"
    } else {
        &tail
    };
    let head = format!("provision script {name} {how}: ");
    let room = fcexec_guest_protocol::MAX_REASON.saturating_sub(head.len() + 3);
    if tail.len() <= room {
        return format!("{head}{tail}");
    }
    let mut cut = tail.len() - room;
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    format!("{head}...{}", &tail[cut..])
}

#[cfg(test)]
#[path = "supervise_tests.rs"]
mod tests;
