//! The fault matrix: bpc-ovz killed, the SSH connection cut, HN tools failing, BackupPC aborting —
//! at each point of a backup — against simulated HNs (tests/simhn/SPEC.md).
//!
//! After every fault the invariants of the README's "What bpc-ovz guarantees" are checked:
//! the VE is back in its original run state within seconds, without any later run; nothing of
//! bpc-ovz (snapshot, mount, mount point, lock, vzctl lock) is left once the HN-side cleanup is
//! done; where bpc-ovz survives, its exit code is non-zero and its last line names the cause; a
//! backup of another VE on the same HN, running at the same time, succeeds with the right data;
//! and the next run of the victim succeeds and leaves nothing either.
//!
//! Covered elsewhere, not repeated here: SIGKILL inside the downtime window and BackupPC's abort
//! (SIGINT, SIGKILL 1 s later) during the transfer (tests/backup.rs), a VG without room, a
//! vzctl-locked VE, the per-HN queue, an unknown host key and a bad config (tests/backup.rs).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const VICTIM: u32 = 201;
const OTHER: u32 = 202;

/// The bed's config at log level info: what BackupPC's XferLOG gets by default (the bed's own is
/// debug, whose transport chatter would follow the closing line).
fn write_config(bed: &Bed, snapshot_size: &str, extra: &str) {
    bed.write_config_with(snapshot_size, extra);
    info_level(&bed.config);
}

fn host(veid: u32) -> String {
    format!("ve{veid}.example.com")
}

/// One HN with the victim VE and another VE (both running, each with a file that makes a
/// transfer last).
struct Scene {
    bed: Bed,
    /// Config of the other VE's backup (the victim's is `bed.config`).
    other_config: PathBuf,
}

impl Scene {
    fn new(victim_mb: u32, extra_config: &str) -> Scene {
        let bed = Bed::new(1);
        write_config(&bed, "64M", extra_config);
        let hn = &bed.hns[0];
        hn.create_ve(VICTIM, &host(VICTIM), "10.10.2.1", true);
        hn.create_ve(OTHER, &host(OTHER), "10.10.2.2", true);
        if victim_mb > 0 {
            hn.exec_ok(&format!(
                "head -c {}000000 /dev/urandom > /vz/private/{VICTIM}/home/u/big",
                victim_mb
            ));
        }
        hn.exec_ok(&format!(
            "head -c 2000000 /dev/urandom > /vz/private/{OTHER}/home/u/big"
        ));
        let other_config = bed.path("other.yaml");
        std::fs::copy(&bed.config, &other_config).expect("other config");
        Scene { bed, other_config }
    }

    fn hn(&self) -> &Hn {
        &self.bed.hns[0]
    }

    /// The other VE's backup (2 MB at 1 MB/s), started; on return its snapshot is mounted, its
    /// transfer has begun and its rsync client is paused (SIGSTOP, a slow BackupPC) so that it
    /// runs for as long as the victim's scenario does. [`Scene::check_other`] resumes it.
    fn start_other(&self) -> Backup {
        let b = Backup::start(
            &self.bed,
            &self.other_config,
            &host(OTHER),
            &self.bed.path("b-other"),
            &["--bwlimit=1000"],
        );
        let dest = b.dest.clone();
        wait_until("the other VE's transfer is running", 60, || {
            dest.join("etc").exists()
        });
        signal_rsync(&b, libc::SIGSTOP);
        b
    }

    fn start_victim(&self, extra: &[&str]) -> Backup {
        Backup::start(
            &self.bed,
            &self.bed.config,
            &host(VICTIM),
            &self.bed.path("b-victim"),
            extra,
        )
    }

    /// Mount points of the victim's snapshots right now (read from the host, no process spawned).
    fn victim_mount_dirs(&self) -> Vec<String> {
        let prefix = format!("bpcovz-{VICTIM}-");
        std::fs::read_dir(self.hn().path("/run/bpc-ovz/mnt"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The victim's snapshot is mounted (the HN's mount table, read from the host).
    fn victim_mounted(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/mounts", self.hn().pid))
            .is_ok_and(|m| m.contains(&format!("/run/bpc-ovz/mnt/bpcovz-{VICTIM}-")))
    }

    /// What bpc-ovz left for the victim (its snapshot, mount, locks, vzctl lock).
    fn victim_leftovers(&self) -> Vec<String> {
        let snap = format!("bpcovz-{VICTIM}-");
        let lock = format!("ve.{VICTIM}.lock");
        let vzlock = format!("lock/{VICTIM}.lck");
        self.hn()
            .leftovers()
            .into_iter()
            .filter(|l| l.contains(&snap) || l.contains(&lock) || l.contains(&vzlock))
            .collect()
    }

    /// The victim is back in its original run state within `secs`, with no later run, and the
    /// HN-side cleanup leaves nothing of it.
    fn settle_victim(&self, running: bool, secs: u64) {
        let t = Instant::now();
        wait_until(
            "the victim VE is back in its original run state",
            secs,
            || self.hn().ve_running(VICTIM) == running,
        );
        eprintln!("victim back in its run state after {:?}", t.elapsed());
        wait_until("the HN cleaned up after the victim by itself", 40, || {
            self.victim_leftovers().is_empty()
        });
    }

    /// The other VE's backup, resumed, succeeds with the right data and its VE runs.
    fn check_other(&self, other: Backup) {
        signal_rsync(&other, libc::SIGCONT);
        let f = other.finish();
        assert_eq!(
            f.code,
            Some(0),
            "the other VE's backup must be unaffected:\n{}",
            f.stderr
        );
        assert!(f.rsync_ok, "{}", f.stderr);
        let want = std::fs::read(self.hn().path(&format!("/vz/private/{OTHER}/home/u/big")))
            .expect("other big");
        let got = std::fs::read(self.bed.path("b-other/home/u/big")).expect("other backup");
        assert!(got == want, "the other VE's backup holds its data");
        assert!(self.hn().ve_running(OTHER));
    }

    /// Nothing is left on the HN, and the victim's next backup succeeds and leaves nothing.
    fn next_run_is_clean(&self) {
        let left = self.hn().leftovers();
        assert!(left.is_empty(), "leftovers: {left:?}");
        let b = Backup::start(
            &self.bed,
            &self.bed.config,
            &host(VICTIM),
            &self.bed.path("b-next"),
            &[],
        );
        let f = b.finish();
        assert_eq!(f.code, Some(0), "next run:\n{}", f.stderr);
        assert!(self.hn().ve_running(VICTIM));
        let left = self.hn().leftovers();
        assert!(left.is_empty(), "leftovers after the next run: {left:?}");
        let want = std::fs::read(self.hn().path(&format!("/vz/private/{VICTIM}/home/u/file")))
            .expect("file");
        assert_eq!(
            std::fs::read(self.bed.path("b-next/home/u/file")).expect("next backup"),
            want
        );
    }

    fn stops_of_victim(&self) -> usize {
        self.hn()
            .commands_log()
            .lines()
            .filter(|l| l.contains(&format!("vzctl --skiplock stop {VICTIM}")))
            .count()
    }

    /// A process in the HN whose cwd is inside the victim's snapshot mount (so `umount` is busy)
    /// until `release_busy` is called (at most 30 s).
    fn hold_mount_busy(&self) -> Child {
        let dir = self.victim_mount_dirs().pop().expect("victim mount dir");
        let rel = format!("/tmp/release-busy-{VICTIM}");
        let _ = std::fs::remove_file(self.hn().path(&rel));
        Command::new(simhn().join("hn-exec"))
            .arg(&self.hn().dir)
            .args([
                "sh",
                "-c",
                &format!(
                    "cd /run/bpc-ovz/mnt/{dir} || exit 1; n=0; while [ ! -e {rel} ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done"
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busy process")
    }

    fn release_busy(&self, mut busy: Child) {
        std::fs::write(self.hn().path(&format!("/tmp/release-busy-{VICTIM}")), "")
            .expect("release");
        let _ = busy.wait();
    }

    /// The victim's verify step (after the transfer, right before the cleanup) has run.
    fn victim_verified(&self) -> bool {
        self.hn()
            .commands_log()
            .lines()
            .any(|l| l.contains("lv_attr,snap_percent") && l.contains(&format!("bpcovz-{VICTIM}-")))
    }
}

/// Send `sig` to the rsync client processes of a backup (not to bpc-ovz).
fn signal_rsync(b: &Backup, sig: i32) {
    for p in process_tree(b.rsync.id()) {
        if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "rsync") {
            kill(p, sig);
        }
    }
}

/// Where in the run the fault hits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    /// Queued for a backup slot, before anything changed (the VE was never stopped).
    BeforeStop,
    /// Inside the downtime window: the VE is stopped, `lvcreate` runs.
    Downtime,
    /// Mounting the snapshot (the kill lands as soon as the mount point appears).
    Mounting,
    /// During the rsync relay while the VE's start (slowed down) still runs in the background.
    Starting,
    /// During the rsync relay.
    Relay,
    /// During the cleanup (`umount` busy and retried).
    Cleanup,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut {
    /// bpc-ovz killed with SIGKILL.
    Sigkill,
    /// The SSH connection cut: the HN-side sshd serving it killed with SIGKILL.
    Connection,
}

/// Kill the HN-side sshd process serving bpc-ovz's connection: its per-connection child of the
/// HN's listener (found by parent PID and by the socket it holds, never by name).
fn cut_connection(hn: &Hn, bpc_ovz: u32) {
    let sshd = hn
        .sshd_serving(bpc_ovz)
        .expect("the HN-side sshd serving bpc-ovz's connection");
    assert_ne!(sshd, hn.pid, "never the listener");
    kill(sshd, libc::SIGKILL);
}

fn cut_at(at: At, cut: Cut) {
    // The victim's transfer is slow where the cut lands just before or in it, so that a test
    // thread that is late (a loaded machine) still cuts a running backup.
    let slow = matches!(at, At::Mounting | At::Relay | At::Starting);
    let scene = Scene::new(
        if slow { 3 } else { 0 },
        if at == At::BeforeStop {
            "concurrency:\n  per_hn: 2\n"
        } else {
            ""
        },
    );
    let hn = scene.hn();
    hn.exec_ok("mkdir -p /run/bpc-ovz");
    // BeforeStop: a process holds slot 1, the other VE takes slot 2, the victim queues.
    let mut slot_holder = (at == At::BeforeStop).then(|| {
        let c = Command::new(simhn().join("hn-exec"))
            .arg(&hn.dir)
            .args([
                "sh",
                "-c",
                "exec 7>/run/bpc-ovz/slot.1; flock 7; exec sleep 120",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("slot holder");
        wait_until("slot 1 held", 10, || {
            hn.leftovers().iter().any(|l| l.contains("slot.1"))
        });
        c
    });
    let mut other = scene.start_other();
    if at == At::Downtime {
        hn.exec_ok("echo 2500 > /etc/vzsim/faults/slow-lvcreate-ms");
    }
    if at == At::Starting {
        hn.exec_ok("echo 4000 > /etc/vzsim/faults/slow-start-ms");
    }
    let victim = scene.start_victim(if slow { &["--bwlimit=500"] } else { &[] });
    let pid = victim.wait_bpc_ovz();
    let mut busy = None;
    match at {
        At::BeforeStop => wait_until("the victim queued for a slot", 60, || {
            scene
                .bed
                .log_text()
                .contains("backup slots of this HN are busy")
        }),
        At::Downtime => wait_until("the victim VE stopped by the downtime step", 60, || {
            !hn.ve_running(VICTIM)
        }),
        At::Mounting => {
            let t = Instant::now();
            while scene.victim_mount_dirs().is_empty() {
                assert!(t.elapsed() < Duration::from_secs(30), "no mount point");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        At::Starting => {
            let dest = scene.bed.path("b-victim");
            wait_until("the victim's transfer is running", 60, || {
                dest.join("etc").exists()
            });
            assert!(
                !hn.ve_running(VICTIM),
                "the VE's start still runs while its snapshot is read"
            );
        }
        At::Relay => {
            let dest = scene.bed.path("b-victim");
            wait_until("the victim's transfer is running", 60, || {
                dest.join("etc").exists()
            });
            std::thread::sleep(Duration::from_millis(500));
        }
        At::Cleanup => {
            wait_until("the victim's snapshot is mounted", 60, || {
                scene.victim_mounted()
            });
            busy = Some(scene.hold_mount_busy());
            wait_until("the victim's transfer and verify are done", 60, || {
                scene.victim_verified()
            });
            // The first umount has failed; the guard is retrying.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    assert!(
        other.running(),
        "the other VE's backup runs at the time of the fault"
    );
    match cut {
        Cut::Sigkill => kill(pid, libc::SIGKILL),
        Cut::Connection => cut_connection(hn, pid),
    }
    if let Some(b) = busy {
        std::thread::sleep(Duration::from_millis(1500));
        scene.release_busy(b);
    }
    let f = victim.finish();
    eprintln!("victim ({at:?}, {cut:?}):\n{}", f.stderr);
    match cut {
        Cut::Sigkill => assert_eq!(f.code, Some(128 + libc::SIGKILL), "{}", f.stderr),
        Cut::Connection => {
            assert_eq!(f.code, Some(255), "{}", f.stderr);
            assert!(
                f.last_line().contains("connection lost")
                    || f.last_line().contains("connection to the HN"),
                "the last line names the cause: {}",
                f.stderr
            );
        }
    }
    scene.settle_victim(true, 20);
    if at == At::BeforeStop {
        assert_eq!(scene.stops_of_victim(), 0, "the victim was never stopped");
        if let Some(mut h) = slot_holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
    let _ = std::fs::remove_file(hn.path("/etc/vzsim/faults/slow-lvcreate-ms"));
    let _ = std::fs::remove_file(hn.path("/etc/vzsim/faults/slow-start-ms"));
    scene.check_other(other);
    scene.next_run_is_clean();
}

#[test]
fn sigkill_before_the_stop_while_queued() {
    cut_at(At::BeforeStop, Cut::Sigkill);
}

// SIGKILL inside the downtime window: tests/backup.rs
// (sigkill_inside_the_downtime_window_hn_restarts_and_cleans_up).

#[test]
fn sigkill_while_mounting() {
    cut_at(At::Mounting, Cut::Sigkill);
}

#[test]
fn sigkill_during_the_relay() {
    cut_at(At::Relay, Cut::Sigkill);
}

#[test]
fn sigkill_while_the_ve_starts_during_the_relay() {
    cut_at(At::Starting, Cut::Sigkill);
}

#[test]
fn connection_cut_while_the_ve_starts_during_the_relay() {
    cut_at(At::Starting, Cut::Connection);
}

#[test]
fn sigkill_during_cleanup() {
    cut_at(At::Cleanup, Cut::Sigkill);
}

#[test]
fn connection_cut_before_the_stop_while_queued() {
    cut_at(At::BeforeStop, Cut::Connection);
}

#[test]
fn connection_cut_inside_the_downtime_window() {
    cut_at(At::Downtime, Cut::Connection);
}

#[test]
fn connection_cut_while_mounting() {
    cut_at(At::Mounting, Cut::Connection);
}

#[test]
fn connection_cut_during_the_relay() {
    cut_at(At::Relay, Cut::Connection);
}

#[test]
fn connection_cut_during_cleanup() {
    cut_at(At::Cleanup, Cut::Connection);
}

/// Runs the victim's backup with `fault` set up by `arm` after the other VE's backup has done
/// its own stop and snapshot (so the fault hits the victim); returns how the victim ended.
fn with_fault(scene: &Scene, arm: impl FnOnce(&Hn)) -> Finished {
    let other = scene.start_other();
    arm(scene.hn());
    let f = scene.start_victim(&[]).finish();
    eprintln!("victim:\n{}", f.stderr);
    scene.settle_victim(true, 15);
    scene.check_other(other);
    f
}

#[test]
fn vzctl_stop_fails_the_ve_keeps_running() {
    let scene = Scene::new(0, "");
    let f = with_fault(&scene, |hn| hn.fault("vzctl-stop", Some(1)));
    assert_eq!(f.code, Some(72), "{}", f.stderr);
    assert!(
        f.stderr.contains("Unable to stop container"),
        "vzctl's own message is relayed: {}",
        f.stderr
    );
    let last = f.last_line();
    assert!(
        last.contains("downtime") && (last.contains("stop") || last.contains("quiesce")),
        "{}",
        f.stderr
    );
    assert!(
        !scene
            .hn()
            .commands_log()
            .contains(&format!("--name bpcovz-{VICTIM}-")),
        "no snapshot without a stopped VE"
    );
    scene.next_run_is_clean();
}

#[test]
fn the_ve_starts_while_its_snapshot_is_read() {
    // A start that takes 2 s: the transfer does not wait for it, the run does (step `started`),
    // and the downtime reported includes it.
    let scene = Scene::new(2, "");
    let hn = scene.hn();
    hn.exec_ok("echo 2000 > /etc/vzsim/faults/slow-start-ms");
    let victim = scene.start_victim(&["--bwlimit=500"]);
    wait_until("the victim's snapshot is mounted", 60, || {
        scene.victim_mounted()
    });
    assert!(
        !hn.ve_running(VICTIM),
        "the snapshot is mounted while the VE's start still runs"
    );
    let f = victim.finish();
    let _ = std::fs::remove_file(hn.path("/etc/vzsim/faults/slow-start-ms"));
    eprintln!("victim:\n{}", f.stderr);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(f.rsync_ok, "{}", f.stderr);
    assert!(hn.ve_running(VICTIM));
    assert!(
        f.stderr.contains("[started] Container start in progress")
            && !f.stderr.contains("[downtime] Starting container"),
        "the start's output is reported by step `started`, after the transfer:\n{}",
        f.stderr
    );
    let down: u64 = f
        .stderr
        .split("was down for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no downtime line:\n{}", f.stderr));
    assert!(
        down >= 2000,
        "the downtime reported includes the slow start: {down} ms"
    );
    scene.next_run_is_clean();
}

#[test]
fn vzctl_start_fails_once_then_works() {
    let scene = Scene::new(0, "");
    let f = with_fault(&scene, |hn| hn.fault("vzctl-start", Some(1)));
    assert_eq!(f.code, Some(0), "a retried start succeeds: {}", f.stderr);
    assert!(f.stderr.contains("retrying"), "{}", f.stderr);
    assert!(f.stderr.contains("was down for"), "{}", f.stderr);
    scene.next_run_is_clean();
}

#[test]
fn vzctl_start_fails_three_times_the_cleanup_starts_the_ve() {
    let scene = Scene::new(0, "");
    let f = with_fault(&scene, |hn| hn.fault("vzctl-start", Some(3)));
    assert_eq!(f.code, Some(72), "{}", f.stderr);
    assert!(
        f.last_line().contains("did not start again"),
        "{}",
        f.stderr
    );
    scene.next_run_is_clean();
}

#[test]
fn lvcreate_fails_the_ve_is_restarted() {
    let scene = Scene::new(0, "");
    let f = with_fault(&scene, |hn| hn.fault("lvcreate", Some(1)));
    assert_eq!(f.code, Some(72), "{}", f.stderr);
    assert!(
        f.last_line().contains("snapshot creation failed"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("insufficient free space"), "{}", f.stderr);
    scene.next_run_is_clean();
}

#[test]
fn overflow_during_the_transfer_fails_only_that_backup() {
    // The victim's snapshot is 8 MiB; the other VE's backup (its own config, as a second
    // BackupPC server could have) uses 256 MiB, which the same writes do not fill.
    let scene = Scene::new(3, "");
    write_config(&scene.bed, "8M", "");
    let other_cfg = std::fs::read_to_string(&scene.bed.config)
        .expect("config")
        .replace("size: 8M", "size: 256M");
    std::fs::write(&scene.other_config, other_cfg).expect("other config");
    let other = scene.start_other();
    let victim = scene.start_victim(&["--bwlimit=600"]);
    let dest = scene.bed.path("b-victim");
    wait_until("the victim's transfer is running", 60, || {
        dest.join("etc").exists()
    });
    scene.hn().exec_ok(&format!(
        "dd if=/dev/urandom of=/vz/root/{VICTIM}/home/u/churn bs=1M count=24 conv=fsync 2>/dev/null"
    ));
    let f = victim.finish();
    eprintln!("victim:\n{}", f.stderr);
    assert_eq!(f.code, Some(73), "{}", f.stderr);
    assert!(f.last_line().contains("overflowed"), "{}", f.stderr);
    scene.settle_victim(true, 15);
    scene.check_other(other);
    scene
        .hn()
        .exec_ok(&format!("rm -f /vz/root/{VICTIM}/home/u/churn"));
    write_config(&scene.bed, "64M", "");
    scene.next_run_is_clean();
}

#[test]
fn umount_busy_for_a_while_is_retried() {
    let scene = Scene::new(0, "");
    let other = scene.start_other();
    let victim = scene.start_victim(&[]);
    wait_until("the victim's snapshot is mounted", 60, || {
        scene.victim_mounted()
    });
    let busy = scene.hold_mount_busy();
    wait_until("the victim's verify ran", 60, || scene.victim_verified());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(scene.victim_mounted(), "still mounted while busy");
    scene.release_busy(busy);
    let f = victim.finish();
    eprintln!("victim:\n{}", f.stderr);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(f.stderr.contains("failed; retrying"), "{}", f.stderr);
    scene.settle_victim(true, 5);
    scene.check_other(other);
    scene.next_run_is_clean();
}

#[test]
fn lvremove_in_use_for_a_while_is_retried() {
    let scene = Scene::new(0, "");
    let f = with_fault(&scene, |hn| hn.fault("lvremove-busy", Some(2)));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(
        f.stderr.contains("lvremove") && f.stderr.contains("retrying"),
        "{}",
        f.stderr
    );
    scene.next_run_is_clean();
}

/// BackupPC's abort: SIGINT, then SIGKILL one second later.
fn backuppc_abort(pid: u32) {
    kill(pid, libc::SIGINT);
    std::thread::sleep(Duration::from_secs(1));
    kill(pid, libc::SIGKILL);
}

#[test]
fn backuppc_abort_inside_the_downtime_window() {
    let scene = Scene::new(0, "");
    let hn = scene.hn();
    let other = scene.start_other();
    hn.exec_ok("echo 2500 > /etc/vzsim/faults/slow-lvcreate-ms");
    let victim = scene.start_victim(&[]);
    let pid = victim.wait_bpc_ovz();
    wait_until("the victim VE stopped", 60, || !hn.ve_running(VICTIM));
    backuppc_abort(pid);
    let f = victim.finish();
    eprintln!("victim:\n{}", f.stderr);
    // bpc-ovz waits for the step to end (the VE is started again by the HN either way); it is
    // killed 1 s after SIGINT, before lvcreate's 2.5 s are over.
    assert!(f.code != Some(0), "{}", f.stderr);
    assert!(f.stderr.contains("aborting"), "{}", f.stderr);
    scene.settle_victim(true, 15);
    hn.exec_ok("rm -f /etc/vzsim/faults/slow-lvcreate-ms");
    scene.check_other(other);
    scene.next_run_is_clean();
}

/// Aborting a backup that is queued for a backup slot (the other VE holds the only one).
/// `sig_only`: the signal alone, no SIGKILL after it: bpc-ovz must still end at once (exit 20)
/// rather than wait for a slot for up to `queue_timeout`.
fn abort_while_queued(sig: i32, sig_only: bool) {
    let scene = Scene::new(0, "concurrency:\n  per_hn: 1\n");
    let other = scene.start_other();
    let mut victim = scene.start_victim(&[]);
    let pid = victim.wait_bpc_ovz();
    wait_until("the victim queued for a slot", 60, || {
        scene
            .bed
            .log_text()
            .contains("backup slots of this HN are busy")
    });
    let t = Instant::now();
    if sig_only {
        kill(pid, sig);
    } else {
        backuppc_abort(pid);
    }
    // The other VE holds the slot until it is resumed: bpc-ovz must not wait for it.
    while victim.running() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = t.elapsed();
    signal_rsync(&other, libc::SIGCONT);
    let f = victim.finish();
    eprintln!("victim:\n{}", f.stderr);
    assert!(
        ended < Duration::from_secs(8),
        "bpc-ovz ended {ended:?} after the signal"
    );
    if sig_only {
        assert_eq!(f.code, Some(20), "{}", f.stderr);
        assert!(f.last_line().contains("aborted"), "{}", f.stderr);
    }
    assert!(f.stderr.contains("aborting"), "{}", f.stderr);
    assert_eq!(scene.stops_of_victim(), 0, "the victim was never stopped");
    scene.settle_victim(true, 10);
    scene.check_other(other);
    scene.next_run_is_clean();
}

#[test]
fn backuppc_abort_while_queued() {
    abort_while_queued(libc::SIGINT, false);
}

#[test]
fn sigterm_while_queued_ends_at_once() {
    abort_while_queued(libc::SIGTERM, true);
}

#[test]
fn rsync_bpc_sigusr1_during_the_relay() {
    let scene = Scene::new(3, "");
    let other = scene.start_other();
    let victim = scene.start_victim(&["--bwlimit=500"]);
    let pid = victim.wait_bpc_ovz();
    let dest = scene.bed.path("b-victim");
    wait_until("the victim's transfer is running", 60, || {
        dest.join("etc").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    kill(pid, libc::SIGUSR1);
    let f = victim.finish();
    eprintln!("victim:\n{}", f.stderr);
    assert_eq!(f.code, Some(20), "{}", f.stderr);
    assert!(f.last_line().contains("aborted"), "{}", f.stderr);
    scene.settle_victim(true, 10);
    scene.check_other(other);
    scene.next_run_is_clean();
}
