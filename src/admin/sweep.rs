//! `bpc-ovz sweep [HN...] [--dry-run]`: remove what dead bpc-ovz runs left on HNs — snapshot LVs
//! `bpcovz-<VEID>-<run id>`, ploop snapshots of that name (`vzctl snapshot-list`, for every VE
//! whose private area is a ploop image), mounts under `/run/bpc-ovz/mnt/`, state files
//! `/run/bpc-ovz/state.bpcovz-...` — and nothing else.
//!
//! Ownership: everything of a run belongs to the guard that holds `flock` on
//! `/run/bpc-ovz/ve.<VEID>.lock` for the whole run (undos included). If sweep can take that lock,
//! the owner is gone; sweep keeps holding it while it removes that VE's leftovers, so no new run
//! of that VE starts meanwhile (it would be refused with exit 71 and retried by BackupPC). If the
//! lock is held, the run is alive and its things are left alone. Names that look like ours but are
//! not (an LV called `bpcovz-...` that is not a snapshot, an unknown directory under the mount
//! dir) are reported and never touched. A snapshot LV that is still open after its bpc-ovz mount
//! is gone (mounted elsewhere by someone) is left alone too.
//!
//! The removal shell is the snapshot backend's own (`LvmThick::umount` / `LvmThick::remove`,
//! `Ploop::umount`, the same fragments the backup's undos run); a ploop snapshot is deleted with
//! `vzctl snapshot-delete`, tried three times (not the backup's long retry loop: a snapshot
//! mounted by someone else stays mounted, and the next sweep tries again). The snapshot's
//! read-only mount (`NAME.ro`) is unmounted with `vzctl snapshot-umount` first, as vzctl mounted
//! it. `--dry-run` only reads: lock owners come from
//! `/proc/locks`, without taking any lock.
//!
//! Exit codes: 0 nothing failed (things in use are not failures); 74 something could not be
//! removed; 255 an HN could not be reached; 1 usage or config error.

use std::fmt::Write as _;
use std::time::Duration;

use crate::admin::{
    Leftover, LeftoverKind, Limits, Progress, Sections, for_each_hn, holder, leftovers_probe,
    parse_leftovers, parse_proc_locks, parse_snap_name, parse_stat_lines, probe, ve_lock_path,
};
use crate::config::{Config, Hn};
use crate::locate;
use crate::openvz::VeId;
use crate::quote::quote;
use crate::snapshot::{
    HN_STATE_DIR, LvmThick, Ploop, SNAP_PREFIX, SnapshotBackend, is_mounted, ploop_snapshot_list,
};
use crate::{EXIT_CLEANUP, EXIT_REFUSED, EXIT_TRANSPORT};

pub struct Args {
    pub hns: Vec<String>,
    pub dry_run: bool,
    pub jobs: Option<u32>,
    pub timeout: Option<Duration>,
}

/// Default per-HN time limit: removals retry for a while when LVM says "in use".
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct HnSweep {
    lines: Vec<String>,
    removed: usize,
    in_use: usize,
    failed: usize,
}

pub async fn run(cfg: &Config, args: Args) -> i32 {
    let hns = match crate::admin::select_hns(cfg, &args.hns) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bpc-ovz sweep: {e}");
            return EXIT_REFUSED;
        }
    };
    let opts = match locate::ssh_options(cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bpc-ovz sweep: {}: {e}", cfg.source);
            return EXIT_REFUSED;
        }
    };
    let limits = Limits::new(cfg, args.jobs, args.timeout, DEFAULT_TIMEOUT);
    let progress = Progress::new(hns.len(), "sweep", false);
    let dry = args.dry_run;
    let results = for_each_hn(&hns, limits, &progress, move |hn| {
        let opts = opts.clone();
        async move { sweep_hn(&hn, &opts, dry).await }
    })
    .await;
    progress.finish();
    let (mut removed, mut in_use, mut failed, mut unreachable) = (0, 0, 0, 0);
    for (hn, r) in &results {
        match r {
            Ok(s) => {
                for l in &s.lines {
                    println!("{}: {l}", hn.name);
                }
                removed += s.removed;
                in_use += s.in_use;
                failed += s.failed;
            }
            Err(e) => {
                println!("{}: UNREACHABLE: {e}", hn.name);
                unreachable += 1;
            }
        }
    }
    let verb = if dry { "would remove" } else { "removed" };
    let line = format!(
        "bpc-ovz sweep{}: {} HNs, {removed} {verb}, {in_use} in use (left alone), {failed} failed, {unreachable} unreachable",
        if dry { " --dry-run" } else { "" },
        results.len()
    );
    tracing::info!("{line}");
    println!("{line}");
    if unreachable > 0 {
        EXIT_TRANSPORT
    } else if failed > 0 {
        EXIT_CLEANUP
    } else {
        0
    }
}

async fn sweep_hn(hn: &Hn, opts: &crate::ssh::SshOptions, dry: bool) -> Result<HnSweep, String> {
    let session = crate::admin::connect(hn, opts)
        .await
        .map_err(|e| e.to_string())?;
    let res = sweep_on(&session, dry).await;
    session.close().await;
    res
}

/// Everything of bpc-ovz's on one HN (LVM and mount leftovers, ploop snapshots), and the
/// look-alikes that are not.
async fn look(session: &crate::ssh::Session) -> Result<(Vec<Item>, Vec<String>), String> {
    let s = probe(
        session,
        &format!("{}\n{}", leftovers_probe(), ploop_probe(None)),
    )
    .await?;
    let found = parse_leftovers(&s);
    let (ploops, ploop_foreign) = parse_ploop(&s);
    let mut items: Vec<Item> = found.items.into_iter().map(Item::Left).collect();
    items.extend(ploops.into_iter().map(Item::Ploop));
    let mut foreign = found.foreign;
    foreign.extend(ploop_foreign);
    Ok((items, foreign))
}

async fn sweep_on(session: &crate::ssh::Session, dry: bool) -> Result<HnSweep, String> {
    let (found, foreign) = look(session).await?;
    let mut out = HnSweep::default();
    for f in &foreign {
        out.lines.push(format!("not ours, left alone: {f}"));
    }
    for l in found.iter().filter(|l| l.in_use()) {
        out.in_use += 1;
        out.lines.push(format!(
            "in use, left alone: {} (a bpc-ovz run of VE {} holds its lock)",
            l.describe(),
            l.veid()
        ));
    }
    let stale: Vec<&Item> = found.iter().filter(|l| !l.in_use()).collect();
    if dry {
        for l in &stale {
            out.removed += 1;
            out.lines.push(format!("would remove {}", l.describe()));
        }
        return Ok(out);
    }
    if stale.is_empty() {
        return Ok(out);
    }
    let (script, items) = removal_script(&stale);
    let marker = format!("@@{}", crate::nonce());
    let full = format!("M={}\n{script}", quote(&marker));
    let res = session.exec(&full, b"").await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&res.stdout);
    let results = parse_results(&text, &marker);
    for (i, l) in items.iter().enumerate() {
        let id = i + 1;
        match results.iter().find(|r| r.id == id) {
            Some(r) if r.rc == Some(0) => {
                out.removed += 1;
                out.lines.push(format!("removed {}", l.describe()));
            }
            Some(r) if r.busy => {
                out.in_use += 1;
                out.lines.push(format!(
                    "in use, left alone: {} (a bpc-ovz run of VE {} started meanwhile)",
                    l.describe(),
                    l.veid()
                ));
            }
            Some(r) => {
                out.failed += 1;
                out.lines.push(format!(
                    "FAILED to remove {} (exit {}): {}",
                    l.describe(),
                    r.rc.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                    r.output.last().cloned().unwrap_or_default()
                ));
            }
            None => {
                out.failed += 1;
                out.lines.push(format!(
                    "FAILED to remove {}: no result from the HN",
                    l.describe()
                ));
            }
        }
    }
    // What is left now (a second, read-only look).
    let (after, _) = look(session).await?;
    let still: Vec<String> = after
        .iter()
        .filter(|l| !l.in_use())
        .map(|l| l.describe())
        .collect();
    if !still.is_empty() {
        out.lines.push(format!("still there: {}", still.join(", ")));
    }
    Ok(out)
}

/// One removal result read back from the HN.
#[derive(Debug, Default)]
struct ItemResult {
    id: usize,
    rc: Option<i32>,
    /// The VE's lock was held when sweep tried to take it.
    busy: bool,
    output: Vec<String>,
}

fn parse_results(text: &str, marker: &str) -> Vec<ItemResult> {
    let mut out: Vec<ItemResult> = Vec::new();
    let mut cur: Option<usize> = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(marker).map(str::trim) else {
            if let Some(i) = cur
                && let Some(r) = out.iter_mut().find(|r| r.id == i)
                && !line.trim().is_empty()
            {
                r.output.push(line.trim().to_string());
            }
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<usize>().ok());
        match w.first().copied() {
            Some("begin") => {
                if let Some(id) = num(1) {
                    out.push(ItemResult {
                        id,
                        ..Default::default()
                    });
                    cur = Some(id);
                }
            }
            Some("item") => {
                if let (Some(id), Some(rc)) = (num(1), w.get(2).and_then(|s| s.parse().ok())) {
                    if let Some(r) = out.iter_mut().find(|r| r.id == id) {
                        r.rc = Some(rc);
                    }
                    cur = None;
                }
            }
            Some("busy") => {
                for id in w[1..].iter().filter_map(|s| s.parse::<usize>().ok()) {
                    out.push(ItemResult {
                        id,
                        busy: true,
                        ..Default::default()
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The removal script: per VE, take its lock (or report every item busy), unmount its mounts,
/// remove its snapshots (unless still open elsewhere), delete its state files, release the lock.
/// Returns the script and the items in the order of their ids (1-based).
fn removal_script(stale: &[&Item]) -> (String, Vec<Item>) {
    let mut veids: Vec<&VeId> = Vec::new();
    for l in stale {
        if !veids.contains(&l.veid()) {
            veids.push(l.veid());
        }
    }
    let mut s = String::new();
    let mut items: Vec<Item> = Vec::new();
    let _ = writeln!(
        s,
        "mkdir -p {base} || {{ echo \"cannot create {base}\"; exit 1; }}",
        base = HN_STATE_DIR
    );
    for (g, veid) in veids.iter().enumerate() {
        // Order within a VE: mounts (a ploop run's overlay, its tmpfs, its snapshot: the order
        // `parse_leftovers` gives them), then snapshots, then state files.
        let mut mine: Vec<&Item> = stale
            .iter()
            .copied()
            .filter(|l| l.veid() == *veid)
            .collect();
        mine.sort_by_key(|l| match l {
            Item::Left(l) => match l.kind {
                LeftoverKind::Mount { .. } => 0,
                LeftoverKind::Snapshot { .. } => 1,
                LeftoverKind::State { .. } => 2,
            },
            Item::Ploop(_) => 1,
        });
        let first = items.len() + 1;
        let ids: Vec<String> = (first..first + mine.len()).map(|i| i.to_string()).collect();
        let _ = writeln!(s, "g{g}() {{");
        let _ = writeln!(
            s,
            "  exec 9>{lf} || {{ echo \"$M busy {ids}\"; return; }}\n  if ! flock -n 9; then echo \"$M busy {ids}\"; exec 9>&-; return; fi",
            lf = quote(&ve_lock_path(veid)),
            ids = ids.join(" ")
        );
        for l in &mine {
            items.push((*l).clone());
            let id = items.len();
            let body = item_script(l, &mine);
            let _ = writeln!(s, "i{id}() {{\n{body}\n}}");
            let _ = writeln!(
                s,
                "  echo \"$M begin {id}\"; ( i{id} ) 9>&- </dev/null 2>&1; echo \"$M item {id} $?\""
            );
        }
        let _ = writeln!(s, "  exec 9>&-\n}}\ng{g}");
    }
    (s, items)
}

fn backend_for(l: &Leftover, vg: &str, lv: &str, mount_point: &str) -> LvmThick {
    LvmThick {
        vg: vg.to_string(),
        origin: String::new(),
        snap_name: lv.to_string(),
        size_bytes: 0,
        fstype: String::new(),
        mount_point: mount_point.to_string(),
        veid: l.veid.clone(),
    }
}

fn item_script(item: &Item, same_ve: &[&Item]) -> String {
    let l = match item {
        Item::Left(l) => l,
        Item::Ploop(p) => return ploop_item_script(p),
    };
    match &l.kind {
        LeftoverKind::Mount { path, .. } => {
            let plain = backend_for(l, "", "", path).umount();
            // The read-only mount of a ploop snapshot of this run: vzctl's own unmount first.
            let ploop = same_ve.iter().find_map(|i| match i {
                Item::Ploop(p)
                    if p.run_id == l.run_id
                        && *path == format!("{HN_STATE_DIR}/mnt/{}.ro", p.name) =>
                {
                    Some(p)
                }
                _ => None,
            });
            match ploop {
                Some(p) => format!(
                    "if {mounted}; then vzctl --skiplock snapshot-umount {id} --id {u} </dev/null; fi\n{plain}",
                    mounted = is_mounted(&quote(path)),
                    id = quote(p.veid.as_str()),
                    u = quote(&p.uuid),
                ),
                None => plain,
            }
        }
        LeftoverKind::Snapshot { vg, lv, .. } => {
            let b = backend_for(l, vg, lv, "");
            let full = format!("{vg}/{lv}");
            format!(
                "a=$(lvs --noheadings -o lv_attr {q} 2>/dev/null) || return 0\n\
                 a=$(echo $a)\n\
                 case \"$a\" in ?????o*) echo \"snapshot {t} is still open (mounted or used outside bpc-ovz's mount points): left alone\"; return 3 ;; esac\n\
                 {remove}",
                q = quote(&full),
                t = full.replace(['"', '$', '`', '\\'], "_"),
                remove = b.remove(),
            )
        }
        LeftoverKind::State { path } => format!("rm -f -- {}", quote(path)),
    }
}

/// Unmount (the ploop backend's own unmount: overlay, tmpfs, `vzctl snapshot-umount`) and delete
/// one ploop snapshot; `snapshot-delete` is tried three times.
fn ploop_item_script(p: &PloopSnap) -> String {
    let b = Ploop {
        veid: p.veid.clone(),
        uuid: p.uuid.clone(),
        snap_name: p.name.clone(),
        mount_point: format!("{HN_STATE_DIR}/mnt/{}", p.name),
        private: String::new(),
        reserve_bytes: 0,
    };
    let listed = format!(
        "{} 2>/dev/null | grep -qF -- {}",
        ploop_snapshot_list(&quote(p.veid.as_str())),
        quote(&format!("{{{}}}", p.uuid))
    );
    format!(
        "ploop_umount() {{\n{umount}\n}}\n\
         ploop_umount\n\
         n=0\n\
         while {listed}; do\n\
         \x20 out=$(vzctl --skiplock snapshot-delete {id} --id {u} </dev/null 2>&1) && break\n\
         \x20 n=$((n+1)); if [ $n -ge 3 ]; then echo \"vzctl snapshot-delete failed: $out\"; return 1; fi\n\
         \x20 sleep $n\n\
         done\n\
         return 0",
        umount = b.umount(),
        id = quote(p.veid.as_str()),
        u = quote(&p.uuid),
    )
}

/// A ploop snapshot bpc-ovz made (named `bpcovz-VEID-RUNID`), as `vzctl snapshot-list` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PloopSnap {
    pub veid: VeId,
    pub run_id: String,
    /// Without braces.
    pub uuid: String,
    pub name: String,
    /// Its read-only mount `/run/bpc-ovz/mnt/NAME.ro` is mounted.
    pub mounted: bool,
    /// The VE's bpc-ovz lock is held: the run that owns it is alive.
    pub in_use: bool,
}

impl PloopSnap {
    pub fn describe(&self) -> String {
        format!(
            "ploop snapshot {} {{{}}} of VE {}{}",
            self.name,
            self.uuid,
            self.veid,
            if self.mounted { " (mounted)" } else { "" }
        )
    }
}

/// What sweep handles: a leftover of `admin::parse_leftovers`, or a ploop snapshot.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Left(Leftover),
    Ploop(PloopSnap),
}

impl Item {
    fn veid(&self) -> &VeId {
        match self {
            Item::Left(l) => &l.veid,
            Item::Ploop(p) => &p.veid,
        }
    }
    fn in_use(&self) -> bool {
        match self {
            Item::Left(l) => l.in_use,
            Item::Ploop(p) => p.in_use,
        }
    }
    fn describe(&self) -> String {
        match self {
            Item::Left(l) => l.describe(),
            Item::Ploop(p) => p.describe(),
        }
    }
}

/// Probe section `ploop` (read-only; to be run with [`leftovers_probe`], whose lock and mount
/// sections [`parse_ploop`] reads): `VEID {UUID} NAME` for every snapshot of every VE whose private
/// area is a ploop image (`only`: of that one VE, without asking vzlist).
pub fn ploop_probe(only: Option<&VeId>) -> String {
    let list = |id: &str| {
        format!(
            "{} </dev/null 2>/dev/null | while read -r u n; do echo {id} \"$u $n\"; done",
            ploop_snapshot_list(id)
        )
    };
    match only {
        Some(v) => format!("echo \"$M sec ploop\"\n{}", list(&quote(v.as_str()))),
        None => format!(
            "echo \"$M sec ploop\"\n\
             vzlist -a -H -o veid,private 2>/dev/null | while read -r id p rest; do\n\
             \x20 [ -n \"$p\" ] && [ -f \"$p/root.hdd/DiskDescriptor.xml\" ] || continue\n\
             \x20 {}\n\
             done",
            list("\"$id\"")
        ),
    }
}

/// bpc-ovz's ploop snapshots in a probe's `ploop` section (owners from its `locks`/`lockfiles`,
/// mounts from `mountinfo`), and the names that only look like ours.
pub fn parse_ploop(s: &Sections) -> (Vec<PloopSnap>, Vec<String>) {
    let locks = parse_proc_locks(s.get("locks"));
    let lockfiles = parse_stat_lines(s.get("lockfiles"));
    let mounts = crate::lvm::parse_mountinfo(s.get("mountinfo"));
    let mut ours = Vec::new();
    let mut foreign = Vec::new();
    for line in s.get("ploop").lines() {
        let mut w = line.split_whitespace();
        let (Some(id), Some(u)) = (w.next(), w.next()) else {
            continue;
        };
        let name = w.collect::<Vec<_>>().join(" ");
        if !name.starts_with(SNAP_PREFIX) {
            continue; // the admin's own snapshots
        }
        let uuid = u.trim_start_matches('{').trim_end_matches('}').to_string();
        let uuid_ok = !uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let veid = VeId::parse(id).ok();
        match (veid, parse_snap_name(&name)) {
            (Some(veid), Some((of, run_id))) if of == veid && uuid_ok => {
                let p = ve_lock_path(&veid);
                let in_use = lockfiles
                    .iter()
                    .find(|f| f.path == p)
                    .is_some_and(|f| holder(&locks, f).is_some());
                let ro = format!("{HN_STATE_DIR}/mnt/{name}.ro");
                ours.push(PloopSnap {
                    mounted: mounts.iter().any(|m| m.mount_point == ro),
                    veid,
                    run_id,
                    uuid,
                    name,
                    in_use,
                });
            }
            _ => foreign.push(format!(
                "ploop snapshot {u} {name:?} of VE {id} is named like bpc-ovz's but is not one of this VE's runs"
            )),
        }
    }
    (ours, foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(veid: &str, kind: LeftoverKind) -> Leftover {
        Leftover {
            veid: VeId::parse(veid).unwrap(),
            run_id: "0a1b2c3d".into(),
            kind,
            in_use: false,
        }
    }

    #[test]
    fn removal_script_is_valid_sh_and_orders_items() {
        let a = left(
            "101",
            LeftoverKind::Snapshot {
                vg: "vg-data".into(),
                lv: "bpcovz-101-0a1b2c3d".into(),
                open: false,
                usage: None,
            },
        );
        let b = left(
            "101",
            LeftoverKind::Mount {
                path: "/run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d".into(),
                mounted: true,
            },
        );
        let c = left(
            "202",
            LeftoverKind::State {
                path: "/run/bpc-ovz/state.bpcovz-202-0a1b2c3d".into(),
            },
        );
        let (a, b, c) = (Item::Left(a), Item::Left(b), Item::Left(c));
        let (s, items) = removal_script(&[&a, &b, &c]);
        assert!(matches!(&items[0], Item::Left(l) if matches!(l.kind, LeftoverKind::Mount { .. })));
        assert!(
            matches!(&items[1], Item::Left(l) if matches!(l.kind, LeftoverKind::Snapshot { .. }))
        );
        assert!(s.contains("exec 9>/run/bpc-ovz/ve.101.lock"), "{s}");
        assert!(s.contains("lvremove -f vg-data/bpcovz-101-0a1b2c3d"), "{s}");
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(format!("M=x\n{s}"))
            .status()
            .unwrap();
        assert!(st.success(), "{s}");
    }

    /// ploop snapshots are ours by name (`bpcovz-VEID-RUNID` of that very VE) and owned through
    /// the VE's lock; their `.ro` mount is unmounted by vzctl before the plain unmount.
    #[test]
    fn ploop_snapshots_are_recognised_and_removed_by_vzctl() {
        let out = "@@m sec lvs\n\
                   @@m sec mnt\n/run/bpc-ovz/mnt/bpcovz-181-deadbeef\n/run/bpc-ovz/mnt/bpcovz-181-deadbeef.ro\n/run/bpc-ovz/mnt/bpcovz-181-deadbeef.rw\n\
                   @@m sec lockfiles\n26 78 /run/bpc-ovz/ve.182.lock\n\
                   @@m sec locks\n1: FLOCK  ADVISORY  WRITE 500 00:1a:78 0 EOF\n\
                   @@m sec mountinfo\n90 40 7:3 / /run/bpc-ovz/mnt/bpcovz-181-deadbeef.ro ro - ext4 /dev/loop3 ro\n\
                   @@m sec ploop\n\
                   181 {00000000-0000-0000-0000-00000000dead} bpcovz-181-deadbeef\n\
                   181 {11111111-0000-0000-0000-000000000000} nightly by admin\n\
                   181 {22222222-0000-0000-0000-000000000000} bpcovz-999-deadbeef\n\
                   182 {33333333-0000-0000-0000-000000000000} bpcovz-182-0a1b2c3d\n\
                   @@m sec end\n";
        let s = Sections::parse(out, "@@m");
        let (ours, foreign) = parse_ploop(&s);
        let got: Vec<(String, bool)> = ours.iter().map(|p| (p.describe(), p.in_use)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "ploop snapshot bpcovz-181-deadbeef {00000000-0000-0000-0000-00000000dead} of VE 181 (mounted)".to_string(),
                    false
                ),
                (
                    "ploop snapshot bpcovz-182-0a1b2c3d {33333333-0000-0000-0000-000000000000} of VE 182".to_string(),
                    true
                ),
            ]
        );
        assert_eq!(foreign.len(), 1, "{foreign:?}");
        assert!(foreign[0].contains("bpcovz-999-deadbeef"), "{foreign:?}");

        let left = parse_leftovers(&s);
        let mut stale: Vec<Item> = left.items.into_iter().map(Item::Left).collect();
        stale.push(Item::Ploop(ours[0].clone()));
        let refs: Vec<&Item> = stale.iter().collect();
        let (script, items) = removal_script(&refs);
        let order: Vec<String> = items.iter().map(|i| i.describe()).collect();
        assert_eq!(
            order,
            vec![
                "mount point /run/bpc-ovz/mnt/bpcovz-181-deadbeef",
                "mount point /run/bpc-ovz/mnt/bpcovz-181-deadbeef.rw",
                "mount /run/bpc-ovz/mnt/bpcovz-181-deadbeef.ro",
                "ploop snapshot bpcovz-181-deadbeef {00000000-0000-0000-0000-00000000dead} of VE 181 (mounted)",
            ]
        );
        let umount = script
            .find("snapshot-umount 181 --id 00000000-0000-0000-0000-00000000dead")
            .expect(&script);
        let delete = script
            .find("snapshot-delete 181 --id 00000000-0000-0000-0000-00000000dead")
            .expect(&script);
        assert!(umount < delete, "{script}");
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(format!("M=x\n{script}"))
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
        for only in [None, Some(&VeId::parse("181").unwrap())] {
            let p = ploop_probe(only);
            let st = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success(), "{p}");
        }
    }

    /// The lock protocol against a real `sh` and a real `flock`: a held VE lock makes every item
    /// of that VE "busy" and nothing of it runs; a free one is taken and the items run.
    #[test]
    fn held_lock_means_hands_off() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state.bpcovz-101-0a1b2c3d");
        std::fs::write(&state, "1").unwrap();
        let item = left(
            "101",
            LeftoverKind::State {
                path: state.display().to_string(),
            },
        );
        let (s, _) = removal_script(&[&Item::Left(item)]);
        // Point the lock at the temp dir instead of /run/bpc-ovz.
        let lock = d.path().join("ve.101.lock");
        let s = s
            .replace("/run/bpc-ovz/ve.101.lock", &lock.display().to_string())
            .replace("mkdir -p /run/bpc-ovz", ": mkdir");
        let run = |held: bool| {
            let wrapped = if held {
                format!(
                    "exec 5>{l}; flock -n 5 || exit 99; ( M=@@t\n{s}\n) 5>&-",
                    l = lock.display()
                )
            } else {
                format!("M=@@t\n{s}")
            };
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(&wrapped)
                .output()
                .unwrap();
            assert!(o.status.success());
            parse_results(&String::from_utf8_lossy(&o.stdout), "@@t")
        };
        let r = run(true);
        assert!(r[0].busy && r[0].rc.is_none(), "{r:?}");
        assert!(state.exists(), "nothing removed while the lock is held");
        let r = run(false);
        assert_eq!(r[0].rc, Some(0), "{r:?}");
        assert!(!state.exists());
    }
}
