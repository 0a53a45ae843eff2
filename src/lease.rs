//! One snapshot per BackupPC dump: `dump-begin`, `dump-end`, and transfers under a lease.
//!
//! BackupPC runs one transfer per share. With `bpc-ovz dump-begin $host` as DumpPreUserCmd, the
//! snapshot is taken once (the usual stop → snapshot → start, at a predictable moment) and held on
//! the HN by a detached *holder* — the same guard steps, driven by a script instead of by stdin —
//! under a lease. Every transfer of that dump reads that snapshot; `bpc-ovz dump-end $host`
//! (DumpPostUserCmd) releases it.
//!
//! The lease lives on the HN: the holder removes the snapshot, mount and locks by itself when the
//! lease is not renewed in time (`lease.ttl`: BackupPC killed, server rebooted). Transfers renew
//! it while they run. A lease is never reused by another dump: `dump-begin` records which process
//! started it (BackupPC_dump: its parent, by PID and start time), and a transfer uses the lease
//! only when that process is among its own ancestors; each lease also has a random id that the HN
//! checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backup::{self, Fail, Job, Request, RunCtx, VeFacts};
use crate::config::Config;
use crate::locate;
use crate::openvz::VeId;
use crate::plan::{Action, Phase, Plan, Step, guard_prelude};
use crate::quote::quote;
use crate::snapshot::HN_STATE_DIR;
use crate::ssh::Session;
use crate::{EXIT_HN_STEP, EXIT_PRECONDITION, EXIT_TORN};

/// What `dump-begin` leaves on the BackupPC server for the transfers of the same dump.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalLease {
    pub host: String,
    pub hn: String,
    pub veid: String,
    pub id: String,
    /// The process that ran `dump-begin` (BackupPC_dump), by PID and start time.
    pub owner_pid: u32,
    pub owner_start: u64,
    pub created: u64,
}

fn lease_file(cfg: &Config, host: &str) -> PathBuf {
    let safe: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    cfg.lease_dir.join(format!("{safe}.json"))
}

fn load(cfg: &Config, host: &str) -> Option<LocalLease> {
    let text = std::fs::read_to_string(lease_file(cfg, host)).ok()?;
    serde_json::from_str(&text).ok()
}

fn store(cfg: &Config, lease: &LocalLease) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.lease_dir)
        .map_err(|e| format!("{}: {e}", cfg.lease_dir.display()))?;
    let path = lease_file(cfg, &lease.host);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let text = serde_json::to_string_pretty(lease).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

fn forget(cfg: &Config, host: &str) {
    let _ = std::fs::remove_file(lease_file(cfg, host));
}

/// `(parent pid, start time)` of a process, from /proc.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')': state(0) ppid(1) ... starttime is field 22 of stat, i.e. index 19 here.
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

/// Our ancestors, nearest first, as `(pid, start time)`.
fn ancestors() -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    for _ in 0..16 {
        let Some((ppid, _)) = stat_of(pid) else { break };
        if ppid <= 1 {
            break;
        }
        let Some((_, start)) = stat_of(ppid) else {
            break;
        };
        out.push((ppid, start));
        pid = ppid;
    }
    out
}

/// The lease of the dump this process belongs to, if `dump-begin` made one for `host`.
pub fn for_this_dump(cfg: &Config, host: &str) -> Option<LocalLease> {
    let l = load(cfg, host)?;
    ancestors()
        .iter()
        .any(|&(p, s)| p == l.owner_pid && s == l.owner_start)
        .then_some(l)
}

fn hn_files(veid: &str) -> (String, String, String, String, String) {
    let base = format!("{HN_STATE_DIR}/lease.{veid}");
    (
        base.clone(),
        format!("{base}.expiry"),
        format!("{base}.end"),
        format!("{base}.status"),
        format!("{base}.log"),
    )
}

/// The holder: the snapshot part of a backup plan, then the lease loop, then verify and unwind.
#[allow(clippy::too_many_arguments)]
fn holder_script(
    plan: &Plan,
    nonce: &str,
    veid: &str,
    lease_id: &str,
    ttl: u64,
    snap_root: &str,
    snap_lv: &str,
    verify_id: u32,
) -> String {
    let (lease, exp, end, status, _) = hn_files(veid);
    let mut s = guard_prelude(plan, nonce);
    let ids: Vec<String> = plan
        .steps
        .iter()
        .filter(|st| st.id != verify_id && matches!(st.action, Action::Hn { .. }))
        .map(|st| st.id.to_string())
        .collect();
    s.push_str(&format!(
        "L={lease}; EXP={exp}; END={end}; ST={status}\n\
         set_status() {{ printf '%s\\n' \"$*\" > \"$ST.tmp\" && mv -f \"$ST.tmp\" \"$ST\"; }}\n\
         trap 'unwind; set_status \"ended signal\"; rm -f \"$L\" \"$EXP\" \"$END\"; exit 0' TERM\n\
         say \"hello $$\"\n\
         rm -f \"$END\"\n\
         for i in {ids}; do\n\
         \x20 run_step $i\n\
         \x20 if [ \"$RC\" != 0 ]; then FAILED=\"$i $RC\"; unwind; set_status \"failed $FAILED\"; rm -f \"$L\" \"$EXP\"; exit 0; fi\n\
         done\n\
         echo $(( $(date +%s) + {ttl} )) > \"$EXP\"\n\
         printf 'id=%s\\npid=%s\\nroot=%s\\nlv=%s\\n' {id} $$ {root} {lv} > \"$L.tmp\" && mv -f \"$L.tmp\" \"$L\"\n\
         set_status \"ready $$\"\n\
         why=ended\n\
         while :; do\n\
         \x20 [ -e \"$END\" ] && break\n\
         \x20 e=$(cat \"$EXP\" 2>/dev/null); case \"$e\" in ''|*[!0-9]*) e=0 ;; esac\n\
         \x20 if [ \"$(date +%s)\" -gt \"$e\" ]; then why=expired; say \"data lease expired\"; break; fi\n\
         \x20 sleep 1\n\
         done\n\
         run_step {verify_id}\n\
         v=$RC\n\
         rm -f \"$L\" \"$EXP\"\n\
         unwind\n\
         rm -f \"$END\"\n\
         set_status \"$why verify=$v\"\n",
        lease = quote(&lease),
        exp = quote(&exp),
        end = quote(&end),
        status = quote(&status),
        ids = ids.join(" "),
        id = quote(lease_id),
        root = quote(snap_root),
        lv = quote(snap_lv),
    ));
    s
}

/// Parse the holder's log (the guard protocol lines) into events for the XferLOG.
fn report_log(
    hn: &str,
    log: &str,
    nonce: &str,
    names: &BTreeMap<u32, String>,
) -> BTreeMap<String, String> {
    let marker = format!("@@{nonce} ");
    let mut data = BTreeMap::new();
    let mut cur = 0u32;
    for line in log.lines() {
        if line.starts_with("@@status ") {
            // The waiting side's own status line, not the holder's output.
            continue;
        }
        if let Some(rest) = line.strip_prefix(&marker) {
            let w: Vec<&str> = rest.splitn(3, ' ').collect();
            match w.first().copied() {
                Some("begin") | Some("undo") => {
                    cur = w.get(1).and_then(|x| x.parse().ok()).unwrap_or(cur)
                }
                Some("data") => {
                    if let (Some(k), Some(v)) = (w.get(1), w.get(2)) {
                        data.insert(k.to_string(), v.to_string());
                    }
                }
                Some("undone") if w.get(2).map(|c| *c != "0").unwrap_or(false) => {
                    tracing::error!(
                        "{hn}: undo of {} failed",
                        names.get(&cur).cloned().unwrap_or_default()
                    );
                }
                _ => {}
            }
        } else if !line.trim().is_empty() {
            tracing::info!(
                "{hn}: [{}] {}",
                names.get(&cur).cloned().unwrap_or_else(|| "lease".into()),
                line
            );
        }
    }
    data
}

fn ctx_err(hn: &str) -> impl Fn(crate::ssh::SshError) -> Fail + '_ {
    move |e| Fail::new(255, format!("{hn}: {e}"))
}

/// `bpc-ovz dump-begin HOST`.
pub async fn dump_begin(cfg: &Config, host: &str) -> Result<(), Fail> {
    cfg.require_hns().map_err(|e| Fail::new(1, e.to_string()))?;
    // A lease left by an earlier dump of this host is ended first: never reused.
    if let Some(old) = load(cfg, host) {
        tracing::warn!(
            "{host}: ending the lease {} of an earlier dump first",
            old.id
        );
        let _ = end_lease(cfg, &old, false).await;
        forget(cfg, host);
    }
    let ppid = std::os::unix::process::parent_id();
    let owner_start = stat_of(ppid)
        .map(|(_, s)| s)
        .ok_or_else(|| Fail::new(1, "cannot read the parent process"))?;
    let (hn, session, facts) = backup::locate_and_probe(cfg, host, |hn, ve| {
        tracing::info!(
            "{host} is VE {} on {} ({}): taking the dump's snapshot",
            ve.veid,
            hn.name,
            ve.status
        )
    })
    .await?;
    let run_id = crate::nonce()[..8].to_string();
    let part = backup::snapshot_part(cfg, &facts, &run_id, true, false)?;
    let verify_id = 9;
    let mut steps = part.steps.clone();
    steps.push(Step {
        id: verify_id,
        name: "verify".into(),
        phase: Phase::Verify,
        summary: "at the end of the lease: did the snapshot overflow during the dump?".into(),
        action: Action::Hn {
            script: part.verify.clone(),
        },
        undo: None,
        holds_locks: false,
    });
    let plan = Plan {
        title: format!(
            "bpc-ovz dump lease for {host} (VE {} on {})",
            facts.veid, hn.name
        ),
        facts: part.facts.clone(),
        warnings: part.warnings.clone(),
        library: part.library.clone(),
        steps,
    };
    let nonce = crate::nonce();
    let lease_id = crate::nonce();
    let ttl = cfg.lease_ttl.as_secs().max(2);
    let script = holder_script(
        &plan,
        &nonce,
        facts.veid.as_str(),
        &lease_id,
        ttl,
        &part.snap_root,
        &part.snap_lv,
        verify_id,
    );
    let (_, _, _, status, log) = hn_files(facts.veid.as_str());
    // Detached: the holder outlives this connection.
    let start = format!(
        "mkdir -p {base} && rm -f {st} && : > {log} && (setsid /bin/sh -c {sc} </dev/null >>{log} 2>&1 &) ; echo started",
        base = HN_STATE_DIR,
        st = quote(&status),
        log = quote(&log),
        sc = quote(&script),
    );
    let o = session.exec(&start, b"").await.map_err(ctx_err(&hn.name))?;
    if !String::from_utf8_lossy(&o.stdout).contains("started") {
        return Err(Fail::new(
            EXIT_HN_STEP,
            format!(
                "{}: could not start the lease holder: {}",
                hn.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ));
    }
    // Wait for ready / failed.
    let wait = format!(
        "i=0; while [ $i -lt 1200 ]; do s=$(cat {st} 2>/dev/null); case \"$s\" in ready*|failed*|ended*) break ;; esac; sleep 0.25; i=$((i+1)); done; cat {log}; echo \"@@status $s\"",
        st = quote(&status),
        log = quote(&log)
    );
    let o = session.exec(&wait, b"").await.map_err(ctx_err(&hn.name))?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let names: BTreeMap<u32, String> = plan.steps.iter().map(|s| (s.id, s.name.clone())).collect();
    let data = report_log(&hn.name, &text, &nonce, &names);
    let status_line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("@@status "))
        .unwrap_or("")
        .trim()
        .to_string();
    session.close().await;
    if let Some(d) = data.get("downtime_ms") {
        let parts = data
            .get("downtime_parts")
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        if facts.running {
            tracing::info!("{}: VE {} was down for {d} ms{parts}", hn.name, facts.veid);
        }
    }
    if let Some(rest) = status_line.strip_prefix("failed ") {
        let mut w = rest.split_whitespace();
        let step: u32 = w.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let name = names.get(&step).cloned().unwrap_or_default();
        let code = match name.as_str() {
            "lock" | "preflight" => EXIT_PRECONDITION,
            _ => EXIT_HN_STEP,
        };
        return Err(Fail::new(
            code,
            format!(
                "{}: dump-begin for VE {} failed at step {name}; nothing is held",
                hn.name, facts.veid
            ),
        ));
    }
    if !status_line.starts_with("ready") {
        return Err(Fail::new(
            EXIT_HN_STEP,
            format!(
                "{}: the lease holder did not get ready (status {status_line:?})",
                hn.name
            ),
        ));
    }
    let lease = LocalLease {
        host: host.to_string(),
        hn: hn.name.clone(),
        veid: facts.veid.to_string(),
        id: lease_id,
        owner_pid: ppid,
        owner_start,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    store(cfg, &lease)
        .map_err(|e| Fail::new(EXIT_HN_STEP, format!("cannot record the lease: {e}")))?;
    tracing::info!(
        "{}: snapshot of VE {} held for this dump (lease {}, expires {}s after the last renewal)",
        hn.name,
        facts.veid,
        &lease.id[..8],
        ttl
    );
    Ok(())
}

fn hn_of<'a>(cfg: &'a Config, lease: &LocalLease) -> Result<&'a crate::config::Hn, Fail> {
    cfg.hns.iter().find(|h| h.name == lease.hn).ok_or_else(|| {
        Fail::new(
            1,
            format!("lease names HN {} which is not in the config", lease.hn),
        )
    })
}

/// Renew the lease on the HN and read it back: `(snapshot root, snapshot LV)`.
async fn renew(
    session: &Session,
    lease: &LocalLease,
    ttl: u64,
) -> Result<Option<(String, String)>, crate::ssh::SshError> {
    let (l, exp, _, _, _) = hn_files(&lease.veid);
    let script = format!(
        "L={l}; [ -f \"$L\" ] || exit 3; [ \"$(sed -n 's/^id=//p' \"$L\")\" = {id} ] || exit 4; \
         p=$(sed -n 's/^pid=//p' \"$L\"); kill -0 \"$p\" 2>/dev/null || exit 5; \
         echo $(( $(date +%s) + {ttl} )) > {exp}.tmp && mv -f {exp}.tmp {exp} && cat \"$L\"",
        l = quote(&l),
        id = quote(&lease.id),
        exp = quote(&exp),
    );
    let o = session.exec(&script, b"").await?;
    if o.outcome.code() != 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    Ok(get("root").zip(get("lv")))
}

/// A transfer of a leased dump: check-paths, transfer, verify on the leased snapshot (restores run
/// confined as usual, without taking the VE lock the holder holds).
pub async fn transfer(
    cfg: &Config,
    req: &Request,
    job: &Job,
    lease: LocalLease,
    cancel: watch::Receiver<bool>,
) -> Result<i32, Fail> {
    let hn = hn_of(cfg, &lease)?;
    let opts =
        locate::ssh_options(cfg).map_err(|e| Fail::new(1, format!("{}: {e}", cfg.source)))?;
    let session = Session::connect(&locate::addr(hn), &opts)
        .await
        .map_err(ctx_err(&hn.name))?;
    let ttl = cfg.lease_ttl.as_secs().max(2);
    let Some((root, lv)) = renew(&session, &lease, ttl)
        .await
        .map_err(ctx_err(&hn.name))?
    else {
        forget(cfg, &lease.host);
        return Err(Fail::new(
            EXIT_PRECONDITION,
            format!(
                "{}: the dump's snapshot lease for VE {} is gone (expired or ended): this dump cannot be completed consistently",
                hn.name, lease.veid
            ),
        ));
    };
    let veid = VeId::parse(&lease.veid).map_err(|e| Fail::new(1, e))?;
    tracing::info!(
        "{}: {} is VE {veid}; using the dump's snapshot (lease {})",
        hn.name,
        req.host,
        &lease.id[..8]
    );
    let restore = job.direction() == crate::rsync_args::Direction::Receive;
    let (plan, prefix, command, running) = if restore {
        // Probe for the restore target; the holder holds the locks.
        let ve = crate::openvz::ListedVe {
            veid: veid.clone(),
            status: crate::openvz::VeStatus::Running,
            hostname: Some(req.host.clone()),
            ips: vec![],
            unusable: None,
        };
        let facts: VeFacts = backup::probe(&session, hn, &ve).await?;
        let (p, pre, cmd) = crate::restore::build_plan(cfg, &facts, job, &crate::nonce()[..8])?;
        let steps: Vec<Step> = p
            .steps
            .into_iter()
            .filter(|s| matches!(s.action, Action::Transfer { .. }))
            .collect();
        (Plan { steps, ..p }, pre, cmd, facts.running)
    } else {
        use crate::snapshot::SnapshotBackend as _;
        let verify = if let Some(uuid) = lv.strip_prefix("ploop:") {
            crate::snapshot::Ploop {
                veid: veid.clone(),
                uuid: uuid.to_string(),
                snap_name: String::new(),
                mount_point: String::new(),
                private: String::new(),
                reserve_bytes: 0,
            }
            .verify()
        } else {
            let (vg, name) = lv
                .split_once('/')
                .ok_or_else(|| Fail::new(EXIT_HN_STEP, "bad lease file"))?;
            let thick = |origin: &str| crate::snapshot::LvmThick {
                vg: vg.into(),
                origin: origin.into(),
                snap_name: name.into(),
                size_bytes: 0,
                fstype: String::new(),
                mount_point: String::new(),
                veid: veid.clone(),
            };
            // The lease file names the snapshot LV, not its backend: a thin snapshot (which
            // lives in its origin's pool) is verified by the pool's usage, a thick one by its COW.
            let thin = crate::snapshot::LvmThin { thick: thick(name) };
            format!(
                "seg=$(lvs --noheadings -o segtype {lv} 2>/dev/null); seg=$(echo $seg)\n\
                 if [ \"$seg\" = thin ]; then\n{}\nfi\n{}",
                thin.verify(),
                thick("").verify(),
                lv = crate::quote::quote(&lv),
            )
        };
        let (steps, pre, cmd) = backup::transfer_steps(job, &root, &verify, 1)?;
        let plan = Plan {
            title: format!(
                "bpc-ovz transfer from the dump's snapshot of VE {veid} on {}",
                hn.name
            ),
            facts: vec![("snapshot".into(), format!("{lv} at {root}"))],
            warnings: vec![],
            library: String::new(),
            steps,
        };
        (plan, pre, cmd, true)
    };
    // Keep the lease alive while the transfer runs.
    let keeper = {
        let session = session.clone();
        let lease = lease.clone();
        let every = Duration::from_secs((ttl / 3).max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = renew(&session, &lease, ttl).await;
            }
        })
    };
    let ctx = RunCtx {
        session: &session,
        upload_channels: cfg.ssh.upload_channels,
        hn: &hn.name,
        veid: &veid,
        running,
        restore,
        tar: matches!(job, Job::Tar(_)),
        caller: req.caller,
    };
    let code = backup::execute(&ctx, &plan, prefix, command, cancel).await;
    keeper.abort();
    let _ = renew(&session, &lease, ttl).await;
    session.close().await;
    code
}

/// Ask the holder to end the lease and wait for it; returns the verify result.
async fn end_lease(cfg: &Config, lease: &LocalLease, wait: bool) -> Result<String, Fail> {
    let hn = hn_of(cfg, lease)?;
    let opts =
        locate::ssh_options(cfg).map_err(|e| Fail::new(1, format!("{}: {e}", cfg.source)))?;
    let session = Session::connect(&locate::addr(hn), &opts)
        .await
        .map_err(ctx_err(&hn.name))?;
    let (l, _, end, status, log) = hn_files(&lease.veid);
    let script = format!(
        "L={l}; if [ -f \"$L\" ] && [ \"$(sed -n 's/^id=//p' \"$L\")\" = {id} ]; then : > {end}; else echo \"@@status gone\"; exit 0; fi; \
         {wait} i=0; while [ $i -lt 600 ]; do s=$(cat {st} 2>/dev/null); case \"$s\" in ended*|failed*) break ;; esac; sleep 0.25; i=$((i+1)); done; \
         cat {log}; echo \"@@status $s\"",
        l = quote(&l),
        id = quote(&lease.id),
        end = quote(&end),
        st = quote(&status),
        log = quote(&log),
        wait = if wait { "" } else { "exit 0;" },
    );
    let o = session
        .exec(&script, b"")
        .await
        .map_err(ctx_err(&hn.name))?;
    session.close().await;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut seen_ready = false;
    for line in text.lines() {
        if line.starts_with("@@") {
            continue;
        }
        if seen_ready && !line.trim().is_empty() {
            tracing::info!("{}: [lease end] {}", hn.name, line);
        }
        if line.contains("data slot") {
            seen_ready = true;
        }
    }
    Ok(text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("@@status "))
        .unwrap_or("")
        .trim()
        .to_string())
}

/// `bpc-ovz dump-end HOST`.
pub async fn dump_end(cfg: &Config, host: &str) -> Result<(), Fail> {
    let Some(lease) = load(cfg, host) else {
        tracing::info!("{host}: no dump lease held: nothing to end");
        return Ok(());
    };
    let status = end_lease(cfg, &lease, true).await?;
    forget(cfg, host);
    if status == "gone" {
        return Err(Fail::new(
            EXIT_PRECONDITION,
            format!(
                "{}: the dump's lease for VE {} had already expired: its snapshot was removed before the dump ended",
                lease.hn, lease.veid
            ),
        ));
    }
    if status.contains("verify=71") {
        return Err(Fail::new(
            EXIT_TORN,
            format!(
                "{}: the snapshot of VE {} overflowed during the dump: the backup is torn",
                lease.hn, lease.veid
            ),
        ));
    }
    if !status.starts_with("ended") {
        return Err(Fail::new(
            EXIT_HN_STEP,
            format!(
                "{}: the lease holder did not finish cleanly (status {status:?})",
                lease.hn
            ),
        ));
    }
    tracing::info!(
        "{}: dump lease of VE {} ended; snapshot removed",
        lease.hn,
        lease.veid
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ancestry_is_found() {
        let a = ancestors();
        assert!(!a.is_empty());
        let (ppid, start) = stat_of(std::process::id())
            .map(|(p, _)| (p, stat_of(p).unwrap().1))
            .unwrap();
        assert_eq!(a[0], (ppid, start));
    }

    #[test]
    fn holder_script_parses() {
        let plan = Plan {
            title: "t".into(),
            facts: vec![],
            warnings: vec![],
            library: String::new(),
            steps: vec![Step {
                id: 1,
                name: "x".into(),
                phase: Phase::Prepare,
                summary: String::new(),
                action: Action::Hn { script: ":".into() },
                undo: None,
                holds_locks: false,
            }],
        };
        let s = holder_script(&plan, "n", "101", "id", 10, "/r", "vg/lv", 9);
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&s)
            .status()
            .unwrap();
        assert!(st.success(), "{s}");
    }
}
