//! Concurrency: many bpc-ovz processes (and two BackupPC servers) against the same simulated HNs.
//!
//! A sampler thread watches every HN from the host while the backups run (nothing is spawned per
//! sample): the snapshot LVs that exist (the simulated LVM's images), and which processes hold a
//! backup slot lock (`/run/bpc-ovz/slot.N` open on fd 7 in the HN's mount namespace, counting only
//! the topmost holder of a process tree: a guard's own subshells share its lock). It proves that
//! no HN ever has more snapshots than `concurrency.per_hn`, and that no slot is ever held by two
//! guards at once (nor by a process that outlived its guard, such as a VE started by a step).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn host(veid: u32) -> String {
    format!("ve{veid}.example.com")
}

/// What the sampler saw, per HN name.
#[derive(Default, Debug, Clone)]
struct Seen {
    max_snapshots: usize,
    max_slots_held: usize,
    /// Most topmost holders seen at once for one slot file.
    max_holders_per_slot: usize,
    samples: usize,
    /// The holders seen the first time a slot had more than one: `pid ppid comm` each.
    double: Option<String>,
}

struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `(pid, ppid)` of every process whose mount namespace is `ns`.
fn procs_in_ns(ns: &std::path::Path) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .as_deref()
            != Some(ns)
        {
            continue;
        }
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, a)| a.split_whitespace().nth(1).and_then(|p| p.parse().ok()))
            })
            .unwrap_or(0);
        out.push((pid, ppid));
    }
    out
}

/// The slot file a process holds locked on fd 7 (a queued guard has fd 7 open on a slot without
/// the lock; fdinfo lists the locks of that open file only).
fn slot_of(p: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{p}/fd/7"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("/run/bpc-ovz/slot."))
        .filter(|_| {
            std::fs::read_to_string(format!("/proc/{p}/fdinfo/7")).is_ok_and(|i| {
                i.lines()
                    .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && !l.contains("->"))
            })
        })
}

/// Per slot file: the topmost processes holding it locked, as `(pid, ppid)` (a guard's subshells
/// share the guard's lock and are not counted).
fn slot_holders(ns: &std::path::Path) -> BTreeMap<String, Vec<(u32, u32)>> {
    let mut holders: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
    for (p, pp) in procs_in_ns(ns) {
        let Some(slot) = slot_of(p) else { continue };
        if slot_of(pp).as_deref() == Some(slot.as_str()) {
            continue;
        }
        holders.entry(slot).or_default().push((p, pp));
    }
    holders
}

fn describe(slot: &str, holders: &[(u32, u32)]) -> String {
    let each: Vec<String> = holders
        .iter()
        .map(|(p, pp)| {
            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd: String = cmd.replace('\0', " ").chars().take(80).collect();
            format!("pid {p} (parent {pp}): {cmd}")
        })
        .collect();
    format!("{slot}: {}", each.join("; "))
}

impl Sampler {
    fn start(hns: &[(String, u32, String)]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::<String, Seen>::new()));
        let hns = hns.to_vec();
        let (s2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                for (name, pid, vg) in &hns {
                    let lvm = format!("/proc/{pid}/root/var/lib/vzsim/lvm/{vg}");
                    let snaps = std::fs::read_dir(&lvm)
                        .map(|d| {
                            d.flatten()
                                .filter(|e| {
                                    let n = e.file_name().to_string_lossy().into_owned();
                                    n.starts_with("bpcovz-") && n.ends_with(".img")
                                })
                                .count()
                        })
                        .unwrap_or(0);
                    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
                        continue;
                    };
                    let first = slot_holders(&ns);
                    // Reading every process is not atomic: a slot handed from one guard to the
                    // next can look held by both. A real double (two processes sharing a locked
                    // slot, one of them not a guard's subshell) persists: look again.
                    let doubled: Vec<&String> = first
                        .iter()
                        .filter(|(_, v)| v.len() > 1)
                        .map(|(k, _)| k)
                        .collect();
                    let mut double = None;
                    let mut max_per_slot =
                        first.values().map(|v| v.len().min(1)).max().unwrap_or(0);
                    if !doubled.is_empty() {
                        std::thread::sleep(Duration::from_millis(30));
                        let again = slot_holders(&ns);
                        for slot in doubled {
                            let same: Vec<(u32, u32)> = again
                                .get(slot)
                                .map(|v| {
                                    v.iter()
                                        .filter(|x| first[slot].contains(x))
                                        .copied()
                                        .collect()
                                })
                                .unwrap_or_default();
                            if same.len() > 1 {
                                max_per_slot = max_per_slot.max(same.len());
                                double.get_or_insert_with(|| describe(slot, &same));
                            }
                        }
                    }
                    let holders = first;
                    let mut g = seen2.lock().expect("sampler lock");
                    let s = g.entry(name.clone()).or_default();
                    s.samples += 1;
                    s.max_snapshots = s.max_snapshots.max(snaps);
                    s.max_slots_held = s.max_slots_held.max(holders.len());
                    s.max_holders_per_slot = s.max_holders_per_slot.max(max_per_slot);
                    if s.double.is_none() {
                        s.double = double;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeMap<String, Seen> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().expect("sampler lock").clone()
    }
}

fn sampler(bed: &Bed) -> Sampler {
    Sampler::start(
        &bed.hns
            .iter()
            .map(|h| (h.name.clone(), h.pid, h.vg.clone()))
            .collect::<Vec<_>>(),
    )
}

/// The backup in `dest` holds the VE's `home/u/big`.
fn check_data(hn: &Hn, veid: u32, dest: &std::path::Path) {
    let want = std::fs::read(hn.path(&format!("/vz/private/{veid}/home/u/big"))).expect("big");
    let got = std::fs::read(dest.join("home/u/big")).expect("backup of big");
    assert!(got == want, "backup of VE {veid} holds its data");
}

fn clean(bed: &Bed) {
    for h in &bed.hns {
        let left = h.leftovers();
        assert!(left.is_empty(), "{}: leftovers {left:?}", h.name);
    }
}

#[test]
fn eight_ves_on_two_hns_eight_concurrent_runs_queued_per_hn() {
    let bed = Bed::new(2);
    bed.write_config("concurrency:\n  per_hn: 2\n");
    info_level(&bed.config);
    let ves: Vec<(usize, u32)> = (0..8).map(|i| (i / 4, 301 + i as u32)).collect();
    for &(h, id) in &ves {
        let hn = &bed.hns[h];
        hn.create_ve(id, &host(id), &format!("10.10.3.{}", id - 300), true);
        hn.exec_ok(&format!(
            "head -c 1500000 /dev/urandom > /vz/private/{id}/home/u/big"
        ));
    }
    let s = sampler(&bed);
    let runs: Vec<(usize, u32, Backup)> = ves
        .iter()
        .map(|&(h, id)| {
            let b = Backup::start(
                &bed,
                &bed.config,
                &host(id),
                &bed.path(&format!("b{id}")),
                &["--bwlimit=1500"],
            );
            (h, id, b)
        })
        .collect();
    let mut queued = 0;
    for (h, id, b) in runs {
        let dest = b.dest.clone();
        let f = b.finish();
        assert_eq!(f.code, Some(0), "VE {id}:\n{}", f.stderr);
        assert!(f.rsync_ok, "VE {id}:\n{}", f.stderr);
        if f.stderr.contains("backup slots of this HN are busy") {
            queued += 1;
        }
        check_data(&bed.hns[h], id, &dest);
        assert!(bed.hns[h].ve_running(id));
    }
    let seen = s.finish();
    eprintln!("sampler: {seen:?}; {queued} runs queued");
    for h in &bed.hns {
        let s = &seen[&h.name];
        assert!(s.samples > 10, "{}: too few samples {s:?}", h.name);
        assert!(
            s.max_snapshots <= 2,
            "{}: more snapshots at once than per_hn=2: {s:?}",
            h.name
        );
        assert_eq!(
            s.max_holders_per_slot, 1,
            "{}: a slot lock held twice: {s:?}",
            h.name
        );
        assert!(s.max_slots_held <= 2, "{}: {s:?}", h.name);
    }
    assert!(
        seen.values().any(|s| s.max_snapshots == 2),
        "the limit was reached: {seen:?}"
    );
    assert!(queued >= 2, "four runs per HN, two slots: some queued");
    clean(&bed);
}

#[test]
fn a_vg_with_room_for_one_snapshot_admits_one_at_a_time() {
    let bed = Bed::new(1);
    bed.write_config("concurrency:\n  per_hn: 4\n");
    info_level(&bed.config);
    let hn = &bed.hns[0];
    let ids = [311u32, 312, 313];
    for id in ids {
        hn.create_ve(id, &host(id), &format!("10.10.3.{}", id - 300), true);
        hn.exec_ok(&format!(
            "head -c 1000000 /dev/urandom > /vz/private/{id}/home/u/big"
        ));
    }
    // Room for one 64 MiB snapshot (96 MiB free), not for two.
    hn.set_vg_free(Some(96 << 20));
    let s = sampler(&bed);
    let runs: Vec<(u32, Backup)> = ids
        .iter()
        .map(|&id| {
            (
                id,
                Backup::start(
                    &bed,
                    &bed.config,
                    &host(id),
                    &bed.path(&format!("b{id}")),
                    &["--bwlimit=1000"],
                ),
            )
        })
        .collect();
    let mut refused = Vec::new();
    for (id, b) in runs {
        let f = b.finish();
        eprintln!("VE {id}: {:?}\n{}", f.code, f.stderr);
        match f.code {
            Some(0) => check_data(hn, id, &bed.path(&format!("b{id}"))),
            // 71: refused by the room check before any downtime; 72: passed the room check while
            // another run's snapshot was not there yet, then lvcreate found no room (the VE was
            // stopped and started again: see `no_room_is_refused_before_any_downtime_...`).
            Some(71) | Some(72) => {
                let last = f.last_line();
                assert!(
                    last.contains("volume group vg-data has")
                        || (last.contains("snapshot creation failed")
                            && f.stderr.contains("insufficient free space")),
                    "{}",
                    f.stderr
                );
                refused.push(id);
            }
            c => panic!("VE {id}: unexpected exit {c:?}:\n{}", f.stderr),
        }
        assert!(hn.ve_running(id));
    }
    let seen = s.finish();
    eprintln!("sampler: {seen:?}; refused {refused:?}");
    assert_eq!(
        seen["hn1"].max_snapshots, 1,
        "one snapshot at a time: {seen:?}"
    );
    assert!(refused.len() < ids.len(), "at least one was admitted");
    clean(&bed);
    // Those refused run once the room is free again.
    for id in refused {
        let f = Backup::start(
            &bed,
            &bed.config,
            &host(id),
            &bed.path(&format!("b{id}")),
            &[],
        )
        .finish();
        assert_eq!(f.code, Some(0), "VE {id} again:\n{}", f.stderr);
        check_data(hn, id, &bed.path(&format!("b{id}")));
    }
    clean(&bed);
}

#[test]
fn two_backuppc_servers_coordinate_through_the_hn_side_lock() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    let ids = [321u32, 322, 323, 324];
    for id in ids.iter().copied().chain([325]) {
        hn.create_ve(id, &host(id), &format!("10.10.3.{}", id - 300), true);
        hn.exec_ok(&format!(
            "head -c 1000000 /dev/urandom > /vz/private/{id}/home/u/big"
        ));
    }
    // Two servers: their own configs, logs and caches; the same HN and per_hn=1.
    bed.write_config("concurrency:\n  per_hn: 1\n");
    info_level(&bed.config);
    let a = bed.path("server-a.yaml");
    let b = bed.path("server-b.yaml");
    let text = std::fs::read_to_string(&bed.config).expect("config");
    let log = bed.log.display().to_string();
    let cache = bed.cache_path().display().to_string();
    for (p, tag) in [(&a, "a"), (&b, "b")] {
        std::fs::write(
            p,
            text.replace(&log, &format!("{log}.{tag}"))
                .replace(&cache, &format!("{cache}.{tag}")),
        )
        .expect("server config");
    }
    let s = sampler(&bed);
    let mut runs: Vec<(u32, Backup)> = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let cfg = if i % 2 == 0 { &a } else { &b };
        runs.push((
            id,
            Backup::start(
                &bed,
                cfg,
                &host(id),
                &bed.path(&format!("b{id}")),
                &["--bwlimit=1500"],
            ),
        ));
    }
    // And both servers back up VE 325 at the same moment: one runs, the other is refused.
    let x = Backup::start(
        &bed,
        &a,
        &host(325),
        &bed.path("b325a"),
        &["--bwlimit=1500"],
    );
    let y = Backup::start(
        &bed,
        &b,
        &host(325),
        &bed.path("b325b"),
        &["--bwlimit=1500"],
    );
    let mut queued = 0;
    for (id, r) in runs {
        let dest = r.dest.clone();
        let f = r.finish();
        assert_eq!(f.code, Some(0), "VE {id}:\n{}", f.stderr);
        queued += f.stderr.contains("backup slots of this HN are busy") as usize;
        check_data(hn, id, &dest);
    }
    let (fx, fy) = (x.finish(), y.finish());
    let codes = [fx.code, fy.code];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(71)),
        "one of the two backups of VE 325 runs, the other is refused: {codes:?}\n{}\n{}",
        fx.stderr,
        fy.stderr
    );
    let refused = if fx.code == Some(71) { &fx } else { &fy };
    assert!(
        refused
            .last_line()
            .contains("already being backed up or restored by another bpc-ovz"),
        "{}",
        refused.stderr
    );
    let stops = hn
        .commands_log()
        .lines()
        .filter(|l| l.contains("vzctl --skiplock stop 325"))
        .count();
    assert_eq!(stops, 1, "VE 325 was stopped once");
    let seen = s.finish();
    eprintln!("sampler: {seen:?}; {queued} queued");
    assert_eq!(
        seen["hn1"].max_snapshots, 1,
        "per_hn=1 across both servers: {seen:?}"
    );
    assert_eq!(seen["hn1"].max_holders_per_slot, 1, "{seen:?}");
    assert!(queued >= 2, "the servers' runs waited for each other");
    for id in ids.iter().copied().chain([325]) {
        assert!(hn.ve_running(id));
    }
    clean(&bed);
}

/// Known bug (reported): the room check (preflight) and `lvcreate` (downtime step) are not atomic
/// across concurrent runs on one HN. Two runs both see room for one snapshot; the second stops its
/// VE, `lvcreate` fails for lack of room and the VE is started again: a needless downtime where
/// the README promises "refused before any downtime: ... no room in the VG". `slow-stop-ms` makes
/// the window wide enough to hit every time. Run with `--ignored` to reproduce.
#[test]
fn no_room_is_refused_before_any_downtime_even_for_concurrent_runs() {
    let bed = Bed::new(1);
    bed.write_config("concurrency:\n  per_hn: 2\n");
    info_level(&bed.config);
    let hn = &bed.hns[0];
    for id in [331u32, 332] {
        hn.create_ve(id, &host(id), &format!("10.10.3.{}", id - 300), true);
    }
    hn.set_vg_free(Some(96 << 20));
    hn.exec_ok("echo 1000 > /etc/vzsim/faults/slow-stop-ms");
    let a = Backup::start(&bed, &bed.config, &host(331), &bed.path("b331"), &[]);
    let b = Backup::start(&bed, &bed.config, &host(332), &bed.path("b332"), &[]);
    let (fa, fb) = (a.finish(), b.finish());
    for (id, f) in [(331, &fa), (332, &fb)] {
        eprintln!("VE {id}: {:?}\n{}", f.code, f.stderr);
        if f.code != Some(0) {
            assert_eq!(
                f.code,
                Some(71),
                "VE {id}: no room must be refused before any downtime:\n{}",
                f.stderr
            );
        }
    }
    clean(&bed);
}

/// The sampler itself can see what the tests above rule out: a slot lock shared by a process
/// that is not a guard's subshell (here a detached grandchild holding the guard's open slot file,
/// as a VE started with the guard's fd 7 would) counts as held twice, and a snapshot LV is
/// counted.
#[test]
fn the_sampler_sees_a_leaked_slot_lock_and_every_snapshot() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    let s = sampler(&bed);
    let mut holder = std::process::Command::new(simhn().join("hn-exec"))
        .arg(&hn.dir)
        .args([
            "sh",
            "-c",
            "mkdir -p /run/bpc-ovz; exec 7>/run/bpc-ovz/slot.1; flock 7; ( sleep 3 & ); exec sleep 3",
        ])
        .spawn()
        .expect("holder");
    hn.exec_ok(&format!(
        "lvcreate -q -L 8M -s -n bpcovz-999-selftest {}/vz >/dev/null",
        hn.vg
    ));
    std::thread::sleep(Duration::from_millis(1500));
    hn.exec_ok(&format!(
        "lvremove -f {}/bpcovz-999-selftest >/dev/null",
        hn.vg
    ));
    let seen = s.finish();
    let _ = holder.kill();
    let _ = holder.wait();
    eprintln!("{seen:?}");
    assert_eq!(seen["hn1"].max_holders_per_slot, 2, "{seen:?}");
    assert!(seen["hn1"].double.is_some());
    assert_eq!(seen["hn1"].max_snapshots, 1, "{seen:?}");
}
