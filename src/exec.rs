//! The executor: runs a [`Plan`] through the guard shell, one step at a time.
//!
//! It sends `run N` for each HN step and waits for `rc N CODE`; it runs the transfer step through a
//! caller-supplied future; on the first failure, on cancellation, and at the end of a successful
//! run it asks the guard to `unwind` (run the registered undos in reverse). After a failed transfer
//! only the plan's verify steps still run (a torn snapshot is the better explanation of a failed
//! transfer), unless the run was cancelled or the guard is gone. If bpc-ovz dies, the
//! guard unwinds by itself on EOF. The executor is the only code that drives the guard; it does not
//! know what the steps do.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::plan::{Action, Phase, Plan, Step};

/// Byte stream to and from a running guard (an SSH channel, or a local `sh` in tests).
pub trait GuardIo {
    fn send(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Next bytes of the guard's output (stdout and stderr); `None` once it is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send;
}

/// What happened, reported as it happens (the caller logs it). `StepBegin` is reported for the
/// transfer step too.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    StepBegin { id: u32, name: String },
    Output { id: u32, line: String },
    Data { id: u32, key: String, value: String },
    StepEnd { id: u32, rc: i32 },
    Undo { id: u32 },
    Undone { id: u32, rc: i32 },
    Cancelled,
    GuardLost,
}

/// Result of the transfer step, as the caller's future reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferResult {
    /// The exit code to pass on (rsync's, or 255 for a lost connection).
    pub code: i32,
    /// Whether the plan may go on (rsync's 0, 23 or 24). If not, only its verify steps run.
    pub proceed: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub id: u32,
    pub name: String,
    pub rc: i32,
    /// The step's last output lines (its own explanation).
    pub output: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub failed: Option<StepFailure>,
    pub transfer: Option<TransferResult>,
    pub data: Vec<(u32, String, String)>,
    pub undo_failures: Vec<(u32, i32)>,
    pub unwound: bool,
    pub cancelled: bool,
    pub guard_lost: bool,
    /// Ids of the HN steps that were started, in order (for comparing a run with its plan).
    pub started: Vec<u32>,
}

impl Outcome {
    pub fn datum(&self, key: &str) -> Option<&str> {
        self.data
            .iter()
            .rev()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
    }
}

enum Msg {
    Hello,
    Begin,
    Rc(u32, i32),
    Data(String, String),
    Undo(u32),
    Undone(u32, i32),
    Unwound,
    Bye,
    Output(String),
}

struct Lines<G> {
    io: G,
    buf: Vec<u8>,
    marker: String,
    closed: bool,
}

impl<G: GuardIo> Lines<G> {
    async fn next(&mut self) -> Option<Msg> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&raw[..raw.len() - 1])
                    .trim_end_matches('\r')
                    .to_string();
                if line.is_empty() {
                    continue;
                }
                return Some(self.classify(line));
            }
            if self.closed {
                if self.buf.is_empty() {
                    return None;
                }
                let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).to_string();
                return Some(self.classify(line));
            }
            match self.io.recv().await {
                Some(b) => self.buf.extend_from_slice(&b),
                None => self.closed = true,
            }
        }
    }

    fn classify(&self, line: String) -> Msg {
        let Some(rest) = line
            .strip_prefix(&self.marker)
            .and_then(|r| r.strip_prefix(' '))
        else {
            return Msg::Output(line);
        };
        let w: Vec<&str> = rest.splitn(3, ' ').collect();
        let num = |i: usize| w.get(i).and_then(|s| s.trim().parse::<i64>().ok());
        match w.first().copied() {
            Some("hello") => Msg::Hello,
            Some("begin") => Msg::Begin,
            Some("rc") => match (num(1), num(2)) {
                (Some(a), Some(b)) => Msg::Rc(a as u32, b as i32),
                _ => Msg::Output(line.clone()),
            },
            Some("data") => {
                let kv = rest.strip_prefix("data ").unwrap_or("");
                let (k, v) = kv.split_once(' ').unwrap_or((kv, ""));
                Msg::Data(k.to_string(), v.to_string())
            }
            Some("undo") => num(1)
                .map(|n| Msg::Undo(n as u32))
                .unwrap_or(Msg::Output(line.clone())),
            Some("undone") => match (num(1), num(2)) {
                (Some(a), Some(b)) => Msg::Undone(a as u32, b as i32),
                _ => Msg::Output(line.clone()),
            },
            Some("unwound") => Msg::Unwound,
            Some("bye") => Msg::Bye,
            _ => Msg::Output(line.clone()),
        }
    }
}

/// How long to wait for the guard to finish unwinding after a cancel (BackupPC sends SIGKILL one
/// second after SIGINT; the guard finishes the job by itself anyway).
pub const CANCEL_GRACE: Duration = Duration::from_millis(800);

pub struct Executor<'p, G> {
    plan: &'p Plan,
    lines: Lines<G>,
    current: u32,
    tail: Vec<String>,
}

impl<'p, G: GuardIo> Executor<'p, G> {
    pub fn new(plan: &'p Plan, io: G, nonce: &str) -> Self {
        Executor {
            plan,
            lines: Lines {
                io,
                buf: Vec::new(),
                marker: format!("@@{nonce}"),
                closed: false,
            },
            current: 0,
            tail: Vec::new(),
        }
    }

    /// Run the whole plan. `transfer` is called for the transfer step with that step.
    pub async fn run<T, F>(
        mut self,
        transfer: T,
        mut cancel: watch::Receiver<bool>,
        report: &mut (dyn FnMut(Event) + Send),
    ) -> Outcome
    where
        T: FnOnce(&Step) -> F,
        F: Future<Output = TransferResult>,
    {
        let mut out = Outcome::default();
        let mut transfer = Some(transfer);
        // Wait for the guard to say hello.
        if !self
            .wait_for(&mut out, report, &mut cancel, |m| matches!(m, Msg::Hello))
            .await
        {
            return self.finish(out, report).await;
        }
        let steps: Vec<Step> = self.plan.steps.clone();
        // Set by a failed transfer: from then on only the verify steps run.
        let mut verify_only = false;
        for step in &steps {
            if *cancel.borrow() {
                out.cancelled = true;
                report(Event::Cancelled);
                break;
            }
            if verify_only && step.phase != Phase::Verify {
                continue;
            }
            match &step.action {
                Action::Hn { .. } => {
                    self.current = step.id;
                    self.tail.clear();
                    out.started.push(step.id);
                    report(Event::StepBegin {
                        id: step.id,
                        name: step.name.clone(),
                    });
                    if self
                        .lines
                        .io
                        .send(format!("run {}\n", step.id).as_bytes())
                        .await
                        .is_err()
                    {
                        out.guard_lost = true;
                        report(Event::GuardLost);
                        break;
                    }
                    let id = step.id;
                    let mut rc = None;
                    let ok = self
                        .wait_for(&mut out, report, &mut cancel, |m| match m {
                            Msg::Rc(i, c) if *i == id => {
                                rc = Some(*c);
                                true
                            }
                            _ => false,
                        })
                        .await;
                    if !ok {
                        break;
                    }
                    let rc = rc.unwrap_or(-1);
                    report(Event::StepEnd { id, rc });
                    if rc != 0 {
                        out.failed = Some(StepFailure {
                            id,
                            name: step.name.clone(),
                            rc,
                            output: self.tail.clone(),
                        });
                        break;
                    }
                }
                Action::Transfer { .. } => {
                    let Some(t) = transfer.take() else { break };
                    report(Event::StepBegin {
                        id: step.id,
                        name: step.name.clone(),
                    });
                    let res = t(step).await;
                    let proceed = res.proceed;
                    out.transfer = Some(res);
                    if *cancel.borrow() {
                        out.cancelled = true;
                        report(Event::Cancelled);
                        break;
                    }
                    if !proceed {
                        verify_only = true;
                    }
                }
            }
        }
        self.finish(out, report).await
    }

    /// Ask the guard to unwind and quit, and collect the undo results.
    async fn finish(mut self, mut out: Outcome, report: &mut (dyn FnMut(Event) + Send)) -> Outcome {
        if out.guard_lost || self.lines.closed {
            return out;
        }
        if self.lines.io.send(b"unwind\nquit\n").await.is_err() {
            out.guard_lost = true;
            report(Event::GuardLost);
            return out;
        }
        let deadline = if out.cancelled {
            Some(tokio::time::Instant::now() + CANCEL_GRACE)
        } else {
            None
        };
        loop {
            let msg = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.lines.next()).await {
                    Ok(m) => m,
                    Err(_) => break,
                },
                None => self.lines.next().await,
            };
            match msg {
                None => {
                    if !out.unwound {
                        out.guard_lost = true;
                        report(Event::GuardLost);
                    }
                    break;
                }
                Some(Msg::Bye) => break,
                Some(m) => self.handle(m, &mut out, report),
            }
        }
        out
    }

    async fn wait_for(
        &mut self,
        out: &mut Outcome,
        report: &mut (dyn FnMut(Event) + Send),
        cancel: &mut watch::Receiver<bool>,
        mut done: impl FnMut(&Msg) -> bool,
    ) -> bool {
        // Set on cancel: how long we still wait for the step in progress.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let msg = tokio::select! {
                m = self.lines.next() => m,
                _ = cancel.changed(), if !*cancel.borrow() && !out.cancelled => {
                    if *cancel.borrow() {
                        out.cancelled = true;
                        report(Event::Cancelled);
                        // The guard finishes the step it is in (a VE is never left stopped), then
                        // unwinds; queue that now so it happens even if we are killed.
                        let _ = self.lines.io.send(b"unwind\nquit\n").await;
                        deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                    }
                    continue;
                }
                // A step may wait long (for a backup slot, up to queue_timeout): do not wait for
                // it after a cancel. The guard ends the step and unwinds by itself, with or
                // without us (it is orphaned or reads EOF once we are gone).
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    return false;
                }
            };
            match msg {
                None => {
                    out.guard_lost = true;
                    report(Event::GuardLost);
                    return false;
                }
                Some(m) => {
                    if done(&m) {
                        return true;
                    }
                    if out.cancelled && matches!(m, Msg::Unwound | Msg::Bye) {
                        self.handle(m, out, report);
                        return false;
                    }
                    self.handle(m, out, report);
                }
            }
        }
    }

    fn handle(&mut self, m: Msg, out: &mut Outcome, report: &mut (dyn FnMut(Event) + Send)) {
        match m {
            Msg::Output(line) => {
                self.tail.push(line.clone());
                if self.tail.len() > 8 {
                    self.tail.remove(0);
                }
                report(Event::Output {
                    id: self.current,
                    line,
                });
            }
            Msg::Data(k, v) => {
                out.data.push((self.current, k.clone(), v.clone()));
                report(Event::Data {
                    id: self.current,
                    key: k,
                    value: v,
                });
            }
            Msg::Undo(id) => {
                self.current = id;
                report(Event::Undo { id });
            }
            Msg::Undone(id, rc) => {
                if rc != 0 {
                    out.undo_failures.push((id, rc));
                }
                report(Event::Undone { id, rc });
            }
            Msg::Unwound => out.unwound = true,
            Msg::Begin | Msg::Hello | Msg::Rc(..) | Msg::Bye => {}
        }
    }
}

/// A guard running as a local `sh` (the executor's own unit tests).
#[cfg(test)]
pub struct LocalGuard {
    pub child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

#[cfg(test)]
impl LocalGuard {
    pub fn spawn(script: &str) -> std::io::Result<LocalGuard> {
        use std::process::Stdio;
        use tokio::io::AsyncReadExt;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let stdin = child.stdin.take();
        if let Some(mut o) = child.stdout.take() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut b = vec![0u8; 8192];
                while let Ok(n) = o.read(&mut b).await {
                    if n == 0 || tx.send(b[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            });
        }
        if let Some(mut e) = child.stderr.take() {
            tokio::spawn(async move {
                let mut b = vec![0u8; 8192];
                while let Ok(n) = e.read(&mut b).await {
                    if n == 0 || tx.send(b[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(LocalGuard { child, stdin, rx })
    }

    /// Simulate a lost connection: close the guard's stdin.
    pub fn hang_up(&mut self) {
        self.stdin = None;
    }
}

#[cfg(test)]
impl GuardIo for LocalGuard {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self.stdin.as_mut() {
            Some(s) => s.write_all(bytes).await,
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "guard stdin closed",
            )),
        }
    }
    async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Phase, guard_script};

    fn hn(id: u32, script: &str, undo: Option<&str>) -> Step {
        Step {
            id,
            name: format!("step{id}"),
            phase: Phase::Prepare,
            summary: String::new(),
            action: Action::Hn {
                script: script.into(),
            },
            undo: undo.map(String::from),
            holds_locks: false,
        }
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            title: "t".into(),
            facts: vec![],
            warnings: vec![],
            library: String::new(),
            steps,
        }
    }

    async fn run_plan(p: &Plan, code: i32) -> (Outcome, Vec<Event>) {
        let g = LocalGuard::spawn(&guard_script(p, "n1")).unwrap();
        let (_tx, rx) = watch::channel(false);
        let mut ev = Vec::new();
        let out = Executor::new(p, g, "n1")
            .run(
                |_| async move {
                    TransferResult {
                        code,
                        proceed: code == 0,
                        note: None,
                    }
                },
                rx,
                &mut |e| ev.push(e),
            )
            .await;
        (out, ev)
    }

    #[tokio::test]
    async fn success_unwinds_in_reverse() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let l = log.display();
        let p = plan(vec![
            hn(1, &format!("echo a >>{l}"), Some(&format!("echo ua >>{l}"))),
            hn(2, "say \"data downtime_ms 42\"", None),
            transfer_step(3),
            hn(4, &format!("echo b >>{l}"), Some(&format!("echo ub >>{l}"))),
        ]);
        let (out, _) = run_plan(&p, 0).await;
        assert!(out.failed.is_none());
        assert!(out.unwound);
        assert_eq!(out.datum("downtime_ms"), Some("42"));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\nub\nua\n");
        assert_eq!(out.started, vec![1, 2, 4]);
    }

    #[tokio::test]
    async fn failure_stops_and_undoes_the_failed_step_too() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let l = log.display();
        let p = plan(vec![
            hn(1, &format!("echo a >>{l}"), Some(&format!("echo ua >>{l}"))),
            hn(
                2,
                "echo 'VG has no room'; exit 23",
                Some(&format!("echo u2 >>{l}")),
            ),
            hn(3, &format!("echo never >>{l}"), None),
        ]);
        let (out, _) = run_plan(&p, 0).await;
        let f = out.failed.unwrap();
        assert_eq!((f.id, f.rc), (2, 23));
        assert_eq!(f.output, vec!["VG has no room"]);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nu2\nua\n");
    }

    fn transfer_step(id: u32) -> Step {
        Step {
            id,
            name: "transfer".into(),
            phase: Phase::Transfer,
            summary: String::new(),
            action: Action::Transfer {
                command: "x".into(),
                stdin_note: None,
            },
            undo: None,
            holds_locks: false,
        }
    }

    #[tokio::test]
    async fn failed_transfer_skips_later_steps_but_unwinds() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let l = log.display();
        let p = plan(vec![
            hn(1, ":", Some(&format!("echo u1 >>{l}"))),
            transfer_step(2),
            hn(3, &format!("echo later >>{l}"), None),
        ]);
        let (out, ev) = run_plan(&p, 12).await;
        assert_eq!(out.transfer.unwrap().code, 12);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "u1\n");
        assert_eq!(out.started, vec![1]);
        assert!(ev.contains(&Event::StepBegin {
            id: 2,
            name: "transfer".into()
        }));
    }

    #[tokio::test]
    async fn failed_transfer_still_runs_the_verify_steps() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let l = log.display();
        let mut verify = hn(4, &format!("echo verify >>{l}; echo torn; exit 71"), None);
        verify.phase = Phase::Verify;
        let p = plan(vec![
            hn(1, ":", Some(&format!("echo u1 >>{l}"))),
            transfer_step(2),
            hn(3, &format!("echo later >>{l}"), None),
            verify,
        ]);
        let (out, _) = run_plan(&p, 12).await;
        assert_eq!(out.transfer.unwrap().code, 12);
        let f = out.failed.unwrap();
        assert_eq!((f.id, f.rc, f.output), (4, 71, vec!["torn".to_string()]));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "verify\nu1\n");
        assert_eq!(out.started, vec![1, 4]);
    }

    #[tokio::test]
    async fn guard_unwinds_by_itself_on_eof() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let l = log.display();
        let p = plan(vec![hn(
            1,
            &format!("echo a >>{l}"),
            Some(&format!("echo ua >>{l}")),
        )]);
        let mut g = LocalGuard::spawn(&guard_script(&p, "n2")).unwrap();
        g.send(b"run 1\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        g.hang_up();
        let st = g.child.wait().await.unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nua\n");
    }

    #[tokio::test]
    async fn lock_fds_are_not_inherited_by_steps() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join("lock");
        let out_f = d.path().join("fds");
        let mut lock_step = hn(
            1,
            &format!("exec 8>{}; flock -n 8", lock.display()),
            Some("exec 8>&-"),
        );
        lock_step.holds_locks = true;
        // A step that would keep the lock forever if it inherited fd 8 (like a VE started by vzctl).
        let p = plan(vec![
            lock_step,
            hn(2, &format!("ls /proc/self/fd > {}", out_f.display()), None),
            hn(
                3,
                &format!(
                    "flock -n {} true && echo still-held-by-guard || echo held",
                    lock.display()
                ),
                None,
            ),
        ]);
        let (out, ev) = run_plan(&p, 0).await;
        assert!(out.failed.is_none());
        let fds = std::fs::read_to_string(&out_f).unwrap();
        assert!(
            !fds.lines().any(|l| l == "8"),
            "fd 8 leaked into a step: {fds}"
        );
        assert!(
            ev.contains(&Event::Output {
                id: 3,
                line: "held".into()
            }),
            "{ev:?}"
        );
        // After unwinding the lock is free.
        let free = std::process::Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        assert!(free.success());
    }

    #[tokio::test]
    async fn cancel_during_a_step_lets_it_finish_then_unwinds() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let l = log.display();
        let p = plan(vec![
            hn(1, ":", Some(&format!("echo u1 >>{l}"))),
            hn(2, &format!("sleep 0.5; echo restarted >>{l}"), None),
            hn(3, &format!("echo never >>{l}"), None),
        ]);
        let g = LocalGuard::spawn(&guard_script(&p, "n3")).unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = tx.send(true);
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut ev = Vec::new();
        let out = Executor::new(&p, g, "n3")
            .run(
                |_| async {
                    TransferResult {
                        code: 0,
                        proceed: true,
                        note: None,
                    }
                },
                rx,
                &mut |e| ev.push(e),
            )
            .await;
        assert!(out.cancelled);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "restarted\nu1\n");
    }

    #[tokio::test]
    async fn cancel_during_a_step_that_waits_long_does_not_wait_for_it() {
        // Like the lock step queued for a backup slot: the step does not end by itself soon.
        let p = plan(vec![hn(1, "sleep 8", None)]);
        let g = LocalGuard::spawn(&guard_script(&p, "n4")).unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = tx.send(true);
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let t = std::time::Instant::now();
        let out = Executor::new(&p, g, "n4")
            .run(
                |_| async {
                    TransferResult {
                        code: 0,
                        proceed: true,
                        note: None,
                    }
                },
                rx,
                &mut |_| {},
            )
            .await;
        assert!(out.cancelled);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn forged_markers_without_nonce_are_plain_output() {
        let p = plan(vec![hn(
            1,
            "echo '@@other rc 1 0'; echo '@@n1x rc 1 0'",
            None,
        )]);
        let (out, ev) = run_plan(&p, 0).await;
        assert!(out.failed.is_none());
        assert!(
            ev.iter()
                .filter(|e| matches!(e, Event::Output { .. }))
                .count()
                == 2
        );
    }
}
