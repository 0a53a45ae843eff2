//! `bpc-ovz check [HN...]`: is every HN fit for backups? Per HN: SSH reachable, host key known,
//! authentication works, rsync (version), lvm2, vzctl and vzlist present, every VE's private area on
//! an LV, room in those VGs for a snapshot, no stale bpc-ovz snapshots or mounts.
//!
//! Read-only: one connection and one probe script per HN. A table for people (stdout), `--json`
//! for scripts; exit 0 when everything passed (warnings allowed), [`EXIT_CHECK_FAILED`] when a
//! check failed on some HN, 1 on a usage or config error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::EXIT_REFUSED;
use crate::admin::{
    EXIT_CHECK_FAILED, Limits, Progress, Sections, for_each_hn, human, leftovers_probe,
    parse_leftovers, probe,
};
use crate::config::{Config, Hn};
use crate::locate;
use crate::lvm;
use crate::quote::RemoteCmd;
use crate::ssh::SshError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not checked (an earlier check failed).
    Skip,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// Short value for the table (`3.2.7`, `2/2`, `ok`).
    pub value: String,
    /// What is wrong and what to do (empty when fine).
    pub detail: String,
}

/// The checks in table order.
pub const COLUMNS: [(&str, &str); 10] = [
    ("ssh", "SSH"),
    ("host-key", "HOSTKEY"),
    ("auth", "AUTH"),
    ("rsync", "RSYNC"),
    ("lvm2", "LVM2"),
    ("vzctl", "VZCTL"),
    ("vzlist", "VZLIST"),
    ("ve-on-lv", "VE-ON-LV"),
    ("vg-room", "VG-ROOM"),
    ("leftovers", "LEFTOVERS"),
];

#[derive(Clone, Debug, Serialize)]
pub struct HnReport {
    pub hn: String,
    pub address: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

fn mk(
    name: &'static str,
    status: Status,
    value: impl Into<String>,
    detail: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        value: value.into(),
        detail: detail.into(),
    }
}

pub struct Args {
    pub hns: Vec<String>,
    pub json: bool,
    pub jobs: Option<u32>,
    pub timeout: Option<Duration>,
}

pub async fn run(cfg: &Config, args: Args) -> i32 {
    let hns = match crate::admin::select_hns(cfg, &args.hns) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bpc-ovz check: {e}");
            return EXIT_REFUSED;
        }
    };
    let opts = match locate::ssh_options(cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bpc-ovz check: {}: {e}", cfg.source);
            return EXIT_REFUSED;
        }
    };
    let limits = Limits::new(cfg, args.jobs, args.timeout, cfg.locate_timeout);
    let progress = Progress::new(hns.len(), "check", args.json);
    let snap = cfg.snapshot_size;
    let per_hn = cfg.per_hn;
    let results = for_each_hn(&hns, limits, &progress, move |hn| {
        let opts = opts.clone();
        async move { Ok(check_hn(&hn, &opts, snap, per_hn).await) }
    })
    .await;
    progress.finish();
    let reports: Vec<HnReport> = results
        .into_iter()
        .map(|(hn, r)| match r {
            Ok(rep) => rep,
            // The per-HN time limit: nothing more is known.
            Err(e) => report(&hn, vec![mk("ssh", Status::Fail, "FAIL", e)]),
        })
        .collect();
    let failed = reports.iter().filter(|r| !r.ok).count();
    if args.json {
        let v = serde_json::json!({
            "ok": failed == 0,
            "hns": reports,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", render_table(&reports));
        println!(
            "bpc-ovz check: {} HNs, {} passed, {failed} failed",
            reports.len(),
            reports.len() - failed
        );
    }
    if failed > 0 { EXIT_CHECK_FAILED } else { 0 }
}

fn report(hn: &Hn, mut checks: Vec<Check>) -> HnReport {
    // Every column is present; what could not be checked is `skip`.
    for (name, _) in COLUMNS {
        if !checks.iter().any(|c| c.name == name) {
            checks.push(mk(name, Status::Skip, "-", ""));
        }
    }
    checks.sort_by_key(|c| COLUMNS.iter().position(|(n, _)| *n == c.name));
    HnReport {
        hn: hn.name.clone(),
        address: format!("{}@{}:{}", hn.user, hn.host, hn.port),
        ok: !checks.iter().any(|c| c.status == Status::Fail),
        checks,
    }
}

async fn check_hn(hn: &Hn, opts: &crate::ssh::SshOptions, snap: u64, per_hn: u32) -> HnReport {
    let mut checks = Vec::new();
    let session = match crate::admin::connect(hn, opts).await {
        Ok(s) => s,
        Err(e) => {
            let text = e.to_string();
            match e {
                SshError::UnknownHostKey { .. }
                | SshError::ChangedHostKey { .. }
                | SshError::KnownHosts { .. } => {
                    checks.push(mk("ssh", Status::Ok, "ok", ""));
                    checks.push(mk("host-key", Status::Fail, "FAIL", text));
                }
                SshError::Auth { .. } | SshError::Key { .. } => {
                    checks.push(mk("ssh", Status::Ok, "ok", ""));
                    checks.push(mk("host-key", Status::Ok, "ok", ""));
                    checks.push(mk("auth", Status::Fail, "FAIL", text));
                }
                _ => checks.push(mk("ssh", Status::Fail, "FAIL", text)),
            }
            return report(hn, checks);
        }
    };
    checks.push(mk("ssh", Status::Ok, "ok", ""));
    checks.push(mk("host-key", Status::Ok, "ok", ""));
    checks.push(mk("auth", Status::Ok, "ok", ""));
    let r = probe(&session, &check_probe()).await;
    session.close().await;
    match r {
        Ok(s) => checks.extend(evaluate(&s, snap, per_hn)),
        Err(e) => checks.push(mk(
            "rsync",
            Status::Fail,
            "FAIL",
            format!("probe failed: {e}"),
        )),
    }
    report(hn, checks)
}

/// The read-only probe: tools, versions, VE private areas, storage, bpc-ovz leftovers.
pub fn check_probe() -> String {
    let lvs = RemoteCmd::new("lvs").args(&lvm::lvs_args()[1..]);
    let vgs = RemoteCmd::new("vgs").args(&lvm::vgs_args()[1..]);
    format!(
        "echo \"$M sec tools\"; for t in rsync lvs vgs lvcreate lvremove vzctl vzlist flock sed mktemp mkfifo; do if command -v \"$t\" >/dev/null 2>&1; then echo \"$t yes\"; else echo \"$t no\"; fi; done\n\
         echo \"$M sec rsync\"; rsync --version 2>&1 | head -n 1\n\
         echo \"$M sec lvm\"; lvm version 2>/dev/null | head -n 1\n\
         echo \"$M sec vzctl\"; vzctl --version 2>&1 | head -n 1\n\
         echo \"$M sec private\"; out=$(vzlist -a -H -o veid,private 2>&1); rc=$?\n\
         printf '%s\\n' \"$out\" | while read -r id p; do if [ -n \"$p\" ] && r=$(readlink -f -- \"$p\" 2>/dev/null) && [ -n \"$r\" ]; then if [ -f \"$r/root.hdd/DiskDescriptor.xml\" ]; then printf '%s ploop %s\\n' \"$id\" \"$r\"; else printf '%s dir %s\\n' \"$id\" \"$r\"; fi; else printf '%s - %s\\n' \"$id\" \"$p\"; fi; done\n\
         echo \"$M rc private $rc\"\n\
         echo \"$M sec vzlist_err\"; [ $rc = 0 ] || printf '%s\\n' \"$out\"\n\
         echo \"$M sec lvs_all\"; {lvs} 2>&1; echo \"$M rc lvs_all $?\"\n\
         echo \"$M sec vgs\"; {vgs} 2>&1; echo \"$M rc vgs $?\"\n\
         {left}\n\
         {ploop}",
        left = leftovers_probe(),
        ploop = crate::admin::sweep::ploop_probe(None),
    )
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Turn the probe's output into checks.
pub fn evaluate(s: &Sections, snap: u64, per_hn: u32) -> Vec<Check> {
    let mut out = Vec::new();
    let tools: BTreeMap<&str, bool> = s
        .get("tools")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, y)| (t, y == "yes"))
        .collect();
    let has = |t: &str| tools.get(t).copied().unwrap_or(false);

    // rsync
    if has("rsync") {
        let line = first_line(s.get("rsync"));
        let ver = line
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .unwrap_or("?")
            .to_string();
        // The other tools a run needs besides rsync: the guard's locks and the probe's `sed`
        // (without them every run fails), and those of a restore spread over several channels
        // (without them it uses one).
        let needed: Vec<&str> = ["flock", "sed"].into_iter().filter(|t| !has(t)).collect();
        let upload: Vec<&str> = ["mktemp", "mkfifo"]
            .into_iter()
            .filter(|t| !has(t))
            .collect();
        if !needed.is_empty() {
            out.push(mk(
                "rsync",
                Status::Fail,
                "FAIL",
                format!(
                    "missing {}: every run needs it (install util-linux and sed)",
                    needed.join(", ")
                ),
            ));
        } else if !upload.is_empty() {
            out.push(mk(
                "rsync",
                Status::Warn,
                ver,
                format!(
                    "missing {}: a restore over a WAN goes over one SSH channel (install coreutils)",
                    upload.join(", ")
                ),
            ));
        } else {
            out.push(mk("rsync", Status::Ok, ver, ""));
        }
    } else {
        out.push(mk(
            "rsync",
            Status::Fail,
            "FAIL",
            "rsync is not in the login PATH: install it (apt-get install rsync)",
        ));
    }
    // lvm2
    let missing: Vec<&str> = ["lvs", "vgs", "lvcreate", "lvremove"]
        .into_iter()
        .filter(|t| !has(t))
        .collect();
    if missing.is_empty() {
        let v = first_line(s.get("lvm"));
        let ver = v
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(|w| w.split('(').next().unwrap_or(w).to_string())
            .unwrap_or_else(|| "ok".into());
        out.push(mk("lvm2", Status::Ok, ver, ""));
    } else {
        out.push(mk(
            "lvm2",
            Status::Fail,
            "FAIL",
            format!("missing {}: install lvm2", missing.join(", ")),
        ));
    }
    // vzctl
    if has("vzctl") {
        let v = first_line(s.get("vzctl"));
        let ver = v
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .unwrap_or("ok")
            .to_string();
        out.push(mk("vzctl", Status::Ok, ver, ""));
    } else {
        out.push(mk(
            "vzctl",
            Status::Fail,
            "FAIL",
            "vzctl is not in the login PATH: is this an OpenVZ HN?",
        ));
    }
    // vzlist and the VEs' private areas
    let rc = s.rc.get("private").copied().unwrap_or(-1);
    let err = s.get("vzlist_err");
    let vzlist_ok = has("vzlist") && (rc == 0 || (rc == 1 && err.contains("not found")));
    // (VEID, resolved private area, ploop layout)
    let mut ves: Vec<(String, Option<String>, bool)> = Vec::new();
    if vzlist_ok {
        for l in s.get("private").lines() {
            // `VEID KIND PATH`: KIND is ploop, dir (PATH resolved) or - (PATH as listed, not
            // resolvable); PATH is the rest of the line, blanks and all.
            let mut w = l.splitn(3, ' ');
            let (Some(id), Some(kind), Some(p)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            if crate::openvz::VeId::parse(id).is_err() {
                continue;
            }
            ves.push((
                id.to_string(),
                (kind != "-").then(|| p.to_string()),
                kind == "ploop",
            ));
        }
        out.push(mk("vzlist", Status::Ok, format!("{} VEs", ves.len()), ""));
    } else if !has("vzlist") {
        out.push(mk(
            "vzlist",
            Status::Fail,
            "FAIL",
            "vzlist is not in the login PATH: is this an OpenVZ HN?",
        ));
    } else {
        out.push(mk(
            "vzlist",
            Status::Fail,
            "FAIL",
            format!("vzlist -a failed (exit {rc}): {}", first_line(err)),
        ));
    }

    let (lvs, _) = lvm::parse_lvs(s.get("lvs_all"));
    let vgs = lvm::parse_vgs(s.get("vgs"));
    let mounts = lvm::parse_mountinfo(s.get("mountinfo"));
    let lvm_ok = s.rc.get("lvs_all") == Some(&0) && s.rc.get("vgs") == Some(&0);
    // VE private areas on LVs
    let mut vgs_used: Vec<String> = Vec::new();
    if !vzlist_ok || !lvm_ok {
        let why = if !vzlist_ok {
            "vzlist failed".to_string()
        } else {
            format!("lvs/vgs failed: {}", first_line(s.get("lvs_all")))
        };
        out.push(mk("ve-on-lv", Status::Skip, "-", why));
    } else if ves.is_empty() {
        out.push(mk("ve-on-lv", Status::Ok, "no VEs", ""));
    } else {
        let mut bad = Vec::new();
        for (id, path, ploop) in &ves {
            // The same rule a backup applies: a path bpc-ovz would refuse is a failed check.
            if let Some(why) = path
                .as_deref()
                .and_then(|p| crate::openvz::check_ve_path(p).err())
            {
                bad.push(format!(
                    "VE {id}: VE_PRIVATE {} refused: {why}",
                    crate::openvz::shown(path.as_deref().unwrap_or_default())
                ));
                continue;
            }
            if *ploop && path.is_some() {
                // Snapshotted by ploop itself (the ploop backend), wherever the image lives.
                continue;
            }
            let lv = path.as_deref().and_then(|p| {
                let m = lvm::mount_for(&mounts, p)?;
                lvm::lv_for_mount(&lvs, m).map(|lv| (lv, m))
            });
            match (path, lv) {
                (Some(_), Some((lv, _))) if !crate::admin::is_snapshot(lv) => {
                    if !vgs_used.contains(&lv.vg) {
                        vgs_used.push(lv.vg.clone());
                    }
                }
                (Some(p), Some((lv, _))) => bad.push(format!(
                    "VE {id}: {p} is on snapshot LV {}/{}",
                    lv.vg, lv.name
                )),
                (Some(p), None) => {
                    let on = lvm::mount_for(&mounts, p)
                        .map(|m| format!("{} ({})", m.source, m.fstype))
                        .unwrap_or_else(|| "no mount".into());
                    bad.push(format!("VE {id}: {p} is on {on}, not an LVM LV"))
                }
                (None, _) => bad.push(format!("VE {id}: private area cannot be resolved")),
            }
        }
        let good = ves.len() - bad.len();
        out.push(mk(
            "ve-on-lv",
            if bad.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            format!("{good}/{}", ves.len()),
            if bad.is_empty() {
                String::new()
            } else {
                format!(
                    "{}; these VEs cannot be backed up from a snapshot",
                    bad.join("; ")
                )
            },
        ));
    }
    // VG room
    if vgs_used.is_empty() {
        out.push(mk("vg-room", Status::Skip, "-", ""));
    } else {
        let mut status = Status::Ok;
        let mut notes = Vec::new();
        let mut value = Vec::new();
        for name in &vgs_used {
            match vgs.iter().find(|v| &v.name == name) {
                None => {
                    status = Status::Fail;
                    notes.push(format!("VG {name} is not listed by vgs"));
                }
                Some(vg) => {
                    value.push(format!("{}:{}", vg.name, human(vg.free)));
                    if vg.free < snap {
                        status = Status::Fail;
                        notes.push(format!(
                            "VG {name} has {} free, a snapshot needs {} (snapshot.size): backups of its VEs are refused; free space or lower snapshot.size",
                            human(vg.free),
                            human(snap)
                        ));
                    } else if vg.free < snap * per_hn as u64 {
                        if status == Status::Ok {
                            status = Status::Warn;
                        }
                        notes.push(format!(
                            "VG {name} has room for {} snapshot(s) of {}, concurrency.per_hn allows {per_hn} at once: later ones are refused",
                            vg.free / snap,
                            human(snap)
                        ));
                    }
                }
            }
        }
        out.push(mk("vg-room", status, value.join(" "), notes.join("; ")));
    }
    // bpc-ovz's own leftovers
    let left = parse_leftovers(s);
    let (ploops, ploop_foreign) = crate::admin::sweep::parse_ploop(s);
    let stale: Vec<String> = left
        .stale()
        .map(|l| l.describe())
        .chain(ploops.iter().filter(|p| !p.in_use).map(|p| p.describe()))
        .collect();
    let in_use = left.in_use().count() + ploops.iter().filter(|p| p.in_use).count();
    let (status, value) = if !stale.is_empty() {
        (Status::Fail, format!("{} stale", stale.len()))
    } else if in_use > 0 {
        (Status::Ok, format!("{in_use} in use"))
    } else {
        (Status::Ok, "none".to_string())
    };
    let mut detail = Vec::new();
    if !stale.is_empty() {
        detail.push(format!(
            "left by runs that are gone: {} (run `bpc-ovz sweep`)",
            stale.join(", ")
        ));
    }
    detail.extend(left.foreign.iter().cloned());
    detail.extend(ploop_foreign);
    out.push(mk("leftovers", status, value, detail.join("; ")));
    out
}

/// The table for people, then one line per problem.
pub fn render_table(reports: &[HnReport]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["HN".to_string()];
    head.extend(COLUMNS.iter().map(|(_, h)| h.to_string()));
    head.push("RESULT".into());
    rows.push(head);
    for r in reports {
        let mut row = vec![r.hn.clone()];
        for c in &r.checks {
            row.push(match c.status {
                Status::Fail => "FAIL".to_string(),
                Status::Warn => format!("{} (!)", c.value),
                _ => c.value.clone(),
            });
        }
        row.push(if r.ok { "ok" } else { "FAIL" }.into());
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = String::new();
    for r in &rows {
        let line: Vec<String> = (0..cols)
            .map(|i| {
                format!(
                    "{:<w$}",
                    r.get(i).map(String::as_str).unwrap_or(""),
                    w = widths[i]
                )
            })
            .collect();
        o.push_str(line.join("  ").trim_end());
        o.push('\n');
    }
    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| matches!(c.status, Status::Fail | Status::Warn) && !c.detail.is_empty())
                .map(move |c| {
                    format!(
                        "  {}: {} {}: {}",
                        r.hn,
                        c.name,
                        if c.status == Status::Fail {
                            "FAILED"
                        } else {
                            "warning"
                        },
                        c.detail
                    )
                })
        })
        .collect();
    if !problems.is_empty() {
        o.push_str("problems:\n");
        for p in problems {
            o.push_str(&p);
            o.push('\n');
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "@@m sec tools\nrsync yes\nlvs yes\nvgs yes\nlvcreate yes\nlvremove yes\nvzctl yes\nvzlist yes\nflock yes\nsed yes\nmktemp yes\nmkfifo yes\n\
        @@m sec rsync\nrsync  version 3.2.7  protocol version 31\n\
        @@m sec lvm\n  LVM version:     2.03.16(2) (2022-05-18)\n\
        @@m sec vzctl\nvzctl version 4.9.4\n\
        @@m sec private\n101 dir /vz/private/101\n102 dir /srv/private/102\n103 ploop /srv/private/103\n104 dir /vz/private/a b\n@@m rc private 0\n@@m sec vzlist_err\n\
        @@m sec lvs_all\n  vg-data:vz:536870912:-wi-ao----::::\n@@m rc lvs_all 0\n\
        @@m sec vgs\n  vg-data:2147483648:104857600\n@@m rc vgs 0\n\
        @@m sec lvs\n@@m sec mnt\n@@m sec state\n@@m sec lockfiles\n@@m sec locks\n\
        @@m sec mountinfo\n22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 253:3 / /vz rw - ext4 /dev/mapper/vg--data-vz rw\n\
        @@m sec end\n";

    #[test]
    fn evaluation_finds_what_is_wrong() {
        let s = Sections::parse(OK, "@@m");
        let c = evaluate(&s, 64 << 20, 2);
        let get = |n: &str| c.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(get("rsync").value, "3.2.7");
        assert_eq!(get("lvm2").value, "2.03.16");
        assert_eq!(get("vzctl").value, "4.9.4");
        assert_eq!(get("vzlist").value, "4 VEs");
        let v = get("ve-on-lv");
        // 103 is a ploop VE: snapshotted by ploop, wherever its image is.
        assert_eq!((v.status, v.value.as_str()), (Status::Fail, "2/4"));
        assert!(
            v.detail
                .contains("VE 104: VE_PRIVATE \"/vz/private/a b\" refused: it holds ' '"),
            "{}",
            v.detail
        );
        assert!(
            v.detail
                .contains("VE 102: /srv/private/102 is on /dev/sda1 (ext4)"),
            "{}",
            v.detail
        );
        let r = get("vg-room");
        assert_eq!(r.status, Status::Warn, "{r:?}");
        let c = evaluate(&s, 1 << 30, 2);
        assert_eq!(
            c.iter().find(|x| x.name == "vg-room").unwrap().status,
            Status::Fail
        );
        assert_eq!(get("leftovers").value, "none");

        let missing = OK
            .replace("rsync yes", "rsync no")
            .replace("vgs yes", "vgs no");
        let c = evaluate(&Sections::parse(&missing, "@@m"), 64 << 20, 1);
        let get = |n: &str| c.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(get("rsync").status, Status::Fail);
        assert!(get("lvm2").detail.contains("missing vgs"));

        let c = evaluate(
            &Sections::parse(&OK.replace("flock yes", "flock no"), "@@m"),
            64 << 20,
            1,
        );
        let r = c.iter().find(|x| x.name == "rsync").unwrap();
        assert_eq!(r.status, Status::Fail);
        assert!(
            r.detail.contains("missing flock: every run needs it"),
            "{r:?}"
        );
        let c = evaluate(
            &Sections::parse(&OK.replace("mkfifo yes", "mkfifo no"), "@@m"),
            64 << 20,
            1,
        );
        let r = c.iter().find(|x| x.name == "rsync").unwrap();
        assert_eq!((r.status, r.value.as_str()), (Status::Warn, "3.2.7"));
        assert!(
            r.detail.contains("missing mkfifo: a restore over a WAN"),
            "{r:?}"
        );
    }

    #[test]
    fn table_has_every_column_and_the_problems() {
        let hn = Hn {
            name: "hn1".into(),
            host: "h".into(),
            port: 22,
            user: "root".into(),
        };
        let r = report(
            &hn,
            vec![mk("ssh", Status::Fail, "FAIL", "cannot connect to h:22")],
        );
        assert_eq!(r.checks.len(), COLUMNS.len());
        assert!(!r.ok);
        let t = render_table(&[r]);
        assert!(t.starts_with("HN   SSH   HOSTKEY"), "{t}");
        assert!(t.contains("hn1: ssh FAILED: cannot connect to h:22"), "{t}");
    }
}
