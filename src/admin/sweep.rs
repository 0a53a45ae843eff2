//! `bpc-ovz sweep [HN...] [--dry-run]`: remove what dead bpc-ovz runs left on HNs — snapshot LVs
//! `bpcovz-<VEID>-<run id>`, mounts under `/run/bpc-ovz/mnt/`, state files
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
//! The removal shell is the snapshot backend's own (`LvmThick::umount` / `LvmThick::remove`, the
//! same fragments the backup's undos run). `--dry-run` only reads: lock owners come from
//! `/proc/locks`, without taking any lock.
//!
//! Exit codes: 0 nothing failed (things in use are not failures); 74 something could not be
//! removed; 255 an HN could not be reached; 1 usage or config error.

use std::fmt::Write as _;
use std::time::Duration;

use crate::admin::{
    Leftover, LeftoverKind, Limits, Progress, for_each_hn, leftovers_probe, parse_leftovers, probe,
    ve_lock_path,
};
use crate::config::{Config, Hn};
use crate::locate;
use crate::openvz::VeId;
use crate::quote::quote;
use crate::snapshot::{HN_STATE_DIR, LvmThick, SnapshotBackend};
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

async fn sweep_on(session: &crate::ssh::Session, dry: bool) -> Result<HnSweep, String> {
    let found = parse_leftovers(&probe(session, &leftovers_probe()).await?);
    let mut out = HnSweep::default();
    for f in &found.foreign {
        out.lines.push(format!("not ours, left alone: {f}"));
    }
    for l in found.in_use() {
        out.in_use += 1;
        out.lines.push(format!(
            "in use, left alone: {} (a bpc-ovz run of VE {} holds its lock)",
            l.describe(),
            l.veid
        ));
    }
    let stale: Vec<&Leftover> = found.stale().collect();
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
                    l.veid
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
    let after = parse_leftovers(&probe(session, &leftovers_probe()).await?);
    let still: Vec<String> = after.stale().map(|l| l.describe()).collect();
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
fn removal_script(stale: &[&Leftover]) -> (String, Vec<Leftover>) {
    let mut veids: Vec<&VeId> = Vec::new();
    for l in stale {
        if !veids.contains(&&l.veid) {
            veids.push(&l.veid);
        }
    }
    let mut s = String::new();
    let mut items: Vec<Leftover> = Vec::new();
    let _ = writeln!(
        s,
        "mkdir -p {base} || {{ echo \"cannot create {base}\"; exit 1; }}",
        base = HN_STATE_DIR
    );
    for (g, veid) in veids.iter().enumerate() {
        // Order within a VE: mounts, then snapshots, then state files.
        let mut mine: Vec<&Leftover> = stale.iter().copied().filter(|l| &l.veid == *veid).collect();
        mine.sort_by_key(|l| match l.kind {
            LeftoverKind::Mount { .. } => 0,
            LeftoverKind::Snapshot { .. } => 1,
            LeftoverKind::State { .. } => 2,
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
        for l in mine {
            items.push(l.clone());
            let id = items.len();
            let body = item_script(l);
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

fn item_script(l: &Leftover) -> String {
    match &l.kind {
        LeftoverKind::Mount { path, .. } => backend_for(l, "", "", path).umount(),
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
        let (s, items) = removal_script(&[&a, &b, &c]);
        assert!(matches!(items[0].kind, LeftoverKind::Mount { .. }));
        assert!(matches!(items[1].kind, LeftoverKind::Snapshot { .. }));
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
        let (s, _) = removal_script(&[&item]);
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
