//! A BackupPC transfer through bpc-ovz: parse the request, locate the VE, probe the HN, build the
//! plan, run it, and turn the result into one exit code and a few clear log lines.
//!
//! This is the glue; the knowledge lives in `rsync_args` (what BackupPC asked), `locate`/`openvz`
//! (where the VE is), `lvm`/`snapshot` (how to snapshot it), `plan`/`exec` (how steps run) and
//! `ssh`/`relay` (how bytes move).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use tokio::sync::watch;

use crate::config::{Config, Hn};
use crate::exec::{Event, Executor, GuardIo, Outcome, TransferResult};
use crate::locate::{self, Located};
use crate::lvm::{self, Lv, Mount, Vg};
use crate::openvz::{self, ListedVe, VeId};
use crate::plan::{Action, Phase, Plan, Step, guard_command};
use crate::quote::{RemoteCmd, quote};
use crate::relay::{Input, StderrSink, relay};
use crate::rsync_args::{self, Direction, ProtectedArgs, RsyncServer};
use crate::snapshot::{
    BackendChoice, HN_STATE_DIR, LvmThick, ModeChain, Ploop, Quiesce, SNAP_PREFIX, SnapshotBackend,
    Storage, choose_backend,
};
use crate::ssh::{ExitOutcome, RemoteProc, Session};
use crate::{
    EXIT_CLEANUP, EXIT_HN_STEP, EXIT_NOT_FOUND, EXIT_PRECONDITION, EXIT_REFUSED, EXIT_SIGNAL,
    EXIT_TORN,
};

/// Who called us; decides where diagnostics and the remote stderr may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// BackupPC 4 (`bpc-ovz ssh` as the `-e` program): fd 2 goes to the XferLOG.
    Ssh,
    /// BackupPC 3 (`bpc-ovz server ...`): fds 0, 1, 2 are one socket; fd 2 is protocol.
    Server,
}

/// One transfer request.
pub struct Request {
    pub host: String,
    /// The remote command words, split as the remote shell would split them.
    pub words: Vec<String>,
    pub caller: Caller,
    /// `server restore` was given (BackupPC 3 form).
    pub restore_keyword: bool,
}

/// An error that ends the run: one line for the admin, and the exit code.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
}

impl Fail {
    pub fn new(code: i32, msg: impl Into<String>) -> Fail {
        Fail {
            code,
            msg: msg.into(),
        }
    }
}

/// Everything the plan is built from, read from the HN before anything changes there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VeFacts {
    pub hn: Hn,
    pub listed: ListedVe,
    pub veid: VeId,
    pub running: bool,
    pub private: String,
    pub private_resolved: String,
    pub ve_root: String,
    pub lockdir: String,
    pub conf_file: String,
    pub action_scripts: Vec<String>,
    pub mount: Mount,
    /// The LV holding VE_PRIVATE and its VG (`None`: not on LVM; backups are refused then).
    pub lv: Option<Lv>,
    pub vg: Option<Vg>,
    pub warnings: Vec<String>,
    /// `ploop` (VE_LAYOUT=ploop or a root.hdd in the private area) or `simfs`.
    pub layout: String,
}

/// Split marker-delimited sections (`M sec NAME` lines) of a probe's output.
fn sections(text: &str, marker: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<String> = None;
    let mut buf = String::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix(marker)
            .and_then(|r| r.strip_prefix(" sec "))
        {
            if let Some(c) = cur.take() {
                out.insert(c, std::mem::take(&mut buf));
            }
            cur = Some(rest.trim().to_string());
        } else if cur.is_some() {
            buf.push_str(line);
            buf.push('\n');
        }
    }
    if let Some(c) = cur {
        out.insert(c, buf);
    }
    out
}

/// The storage half of the probe for the VE_PRIVATE in the shell variable `$p` (never expanded
/// unquoted): its resolved path, the mounts, LVs, VGs, the layout and the action scripts.
fn storage_probe(mq: &str, id: &str) -> String {
    format!(
        "echo {mq} sec private; readlink -f -- \"$p\" 2>&1; echo {mq} sec mountinfo; cat /proc/self/mountinfo; \
         echo {mq} sec lvs; {lvs} 2>&1; echo {mq} sec vgs; {vgs} 2>&1; echo {mq} sec layout; [ -f \"$p/root.hdd/DiskDescriptor.xml\" ] && echo ploop; echo {mq} sec scripts; \
         for x in start stop mount umount; do [ -f /etc/vz/conf/{id}.$x ] && echo $x; done; echo {mq} sec end",
        lvs = RemoteCmd::new("lvs").args(&lvm::lvs_args()[1..]),
        vgs = RemoteCmd::new("vgs").args(&lvm::vgs_args()[1..]),
    )
}

/// HN-side shell that sets `$p` to the VE_PRIVATE the configs name, read the way
/// [`openvz::parse_conf`] reads them (the VE's own config over vz.conf; quotes; `$VEID`). It only
/// lets the probe read the storage in the same exec: bpc-ovz parses the configs itself and uses
/// what this read only when `$p` (printed in section `guess`) is exactly that value.
fn private_guess(mq: &str, veid: &VeId, cf: &str, global: &str) -> String {
    format!(
        "g() {{ sed -n 's/^[[:space:]]*VE_PRIVATE=[[:space:]]*//p' \"$1\" 2>/dev/null | tail -n 1; }}; \
         p=$(g {cf}); [ -n \"$p\" ] || p=$(g {global}); \
         case $p in '\"'*) p=${{p#?}}; p=${{p%'\"'*}} ;; \"'\"*) p=${{p#?}}; p=${{p%\"'\"*}} ;; \
         *) p=${{p%%#*}}; p=$(printf '%s\\n' \"$p\" | sed 's/[[:space:]]*$//') ;; esac; \
         [ -n \"$p\" ] || p={default}; \
         p=$(printf '%s\\n' \"$p\" | sed {subst}); \
         echo {mq} sec guess; printf '%s\\n' \"$p\"; ",
        default = quote(&format!("/var/lib/vz/private/{veid}")),
        subst = quote(&format!("s/\\${{VEID}}/{veid}/g; s/\\$VEID/{veid}/g")),
    )
}

/// The probe's (first) exec for VE `veid`: read-only; its sections are marked with `m`.
fn probe_script(veid: &VeId, m: &str) -> String {
    let id = quote(veid.as_str());
    let mq = quote(m);
    let cf = quote(&format!("/etc/vz/conf/{veid}.conf"));
    format!(
        "echo {mq} sec status; vzctl status {id} 2>&1; echo {mq} sec vzconf; cat /etc/vz/vz.conf 2>&1; \
         echo {mq} sec conf; cat {cf} 2>&1; {guess}{storage}",
        guess = private_guess(&mq, veid, &cf, "/etc/vz/vz.conf"),
        storage = storage_probe(&mq, &id),
    )
}

/// Find HOST and read its VE's facts ([`probe`]; the VE as listed is [`VeFacts::listed`]). When the VE → HN cache names the HN, the
/// probe runs there on a second channel while `vzlist` confirms the VE (its output is used only
/// if the cache was right): one round of HN commands less. `found` is told where the VE is
/// before the probe's result is looked at.
pub async fn locate_and_probe(
    cfg: &Config,
    host: &str,
    found: impl FnOnce(&Hn, &ListedVe),
) -> Result<(Hn, Session, VeFacts), Fail> {
    let opts =
        locate::ssh_options(cfg).map_err(|e| Fail::new(1, format!("{}: {e}", cfg.source)))?;
    let m = format!("@@{}", crate::nonce());
    let rider = |veid: &VeId| probe_script(veid, &m);
    let Located {
        hn,
        ve,
        session,
        rider,
    } = locate::locate_with(cfg, &opts, host, Some(&rider))
        .await
        .map_err(|e| Fail::new(e.exit_code(), e.to_string()))?;
    found(&hn, &ve);
    let early = rider.and_then(|(veid, out)| (veid == ve.veid).then_some(out));
    if early.is_some() {
        tracing::debug!("{}: VE {}: probed next to vzlist", hn.name, ve.veid);
    }
    let facts = probe_with(&session, &hn, &ve, &m, early).await?;
    Ok((hn, session, facts))
}

/// Read the VE's configuration, run state and storage from its HN: one exec, plus a second one
/// only when the HN-side read of VE_PRIVATE differs from bpc-ovz's own.
pub async fn probe(session: &Session, hn: &Hn, listed: &ListedVe) -> Result<VeFacts, Fail> {
    probe_with(session, hn, listed, &format!("@@{}", crate::nonce()), None).await
}

/// [`probe`], its first exec's output already at hand (`early`, run with marker `m`) or not.
async fn probe_with(
    session: &Session,
    hn: &Hn,
    listed: &ListedVe,
    m: &str,
    early: Option<crate::ssh::Output>,
) -> Result<VeFacts, Fail> {
    let veid = listed.veid.clone();
    let id = quote(veid.as_str());
    let mq = quote(m);
    let conf_file = format!("/etc/vz/conf/{veid}.conf");
    let hn_err = |e: crate::ssh::SshError| Fail::new(255, format!("{}: {e}", hn.name));
    let out = match early {
        Some(out) => out,
        None => session
            .exec(&probe_script(&veid, m), b"")
            .await
            .map_err(hn_err)?,
    };
    let mut sec = sections(&String::from_utf8_lossy(&out.stdout), m);
    let status = sec
        .get("status")
        .and_then(|s| openvz::parse_vzctl_status(s))
        .ok_or_else(|| {
            Fail::new(
                EXIT_HN_STEP,
                format!(
                    "{}: cannot read `vzctl status {veid}`: {}",
                    hn.name,
                    first_line(sec.get("status"))
                ),
            )
        })?;
    if !status.exists {
        return Err(Fail::new(
            EXIT_NOT_FOUND,
            format!("{}: VE {veid} does not exist (vzctl status)", hn.name),
        ));
    }
    let global = openvz::parse_conf(sec.get("vzconf").map(String::as_str).unwrap_or(""), &veid);
    let own = openvz::parse_conf(sec.get("conf").map(String::as_str).unwrap_or(""), &veid);
    let get = |k: &str, default: String| {
        own.get(k)
            .or_else(|| global.get(k))
            .cloned()
            .unwrap_or(default)
    };
    let private = get("VE_PRIVATE", format!("/var/lib/vz/private/{veid}"));
    let ve_root = get("VE_ROOT", format!("/var/lib/vz/root/{veid}"));
    let lockdir = get("LOCKDIR", "/var/lib/vz/lock".into());
    for (k, v) in [
        ("VE_PRIVATE", &private),
        ("VE_ROOT", &ve_root),
        ("LOCKDIR", &lockdir),
    ] {
        // Untrusted (the HN's config): refused unless plain; quoting stays as a second guard.
        if let Err(why) = openvz::check_ve_path(v) {
            return Err(Fail::new(
                EXIT_PRECONDITION,
                format!(
                    "{}: VE {veid}: refused, nothing was changed there: {k} {} is not a clean absolute path ({why})",
                    hn.name,
                    openvz::shown(v)
                ),
            ));
        }
    }

    // The storage sections read for the HN's own guess are used only if it named this path.
    let guessed = sec.get("guess").map(|g| g.strip_suffix('\n').unwrap_or(g));
    if guessed != Some(private.as_str()) || !sec.contains_key("end") {
        tracing::debug!(
            "{}: VE {veid}: the HN read VE_PRIVATE as {:?}, bpc-ovz as {private:?}: probing its storage again",
            hn.name,
            guessed.unwrap_or("")
        );
        let script = format!("p={}; {}", quote(&private), storage_probe(&mq, &id));
        let out = session.exec(&script, b"").await.map_err(hn_err)?;
        sec = sections(&String::from_utf8_lossy(&out.stdout), m);
    }
    let resolved = sec
        .get("private")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !resolved.starts_with('/') || resolved.contains('\n') {
        return Err(Fail::new(
            EXIT_HN_STEP,
            format!(
                "{}: VE {veid}: VE_PRIVATE {private} cannot be resolved: {resolved}",
                hn.name
            ),
        ));
    }
    if let Err(why) = openvz::check_ve_path(&resolved) {
        return Err(Fail::new(
            EXIT_PRECONDITION,
            format!(
                "{}: VE {veid}: refused, nothing was changed there: VE_PRIVATE {private} resolves to {}, not a clean absolute path ({why})",
                hn.name,
                openvz::shown(&resolved)
            ),
        ));
    }
    let mounts = lvm::parse_mountinfo(sec.get("mountinfo").map(String::as_str).unwrap_or(""));
    let (lvs, mut warnings) = lvm::parse_lvs(sec.get("lvs").map(String::as_str).unwrap_or(""));
    let vgs = lvm::parse_vgs(sec.get("vgs").map(String::as_str).unwrap_or(""));
    let mount = lvm::mount_for(&mounts, &resolved).cloned().ok_or_else(|| {
        Fail::new(
            EXIT_HN_STEP,
            format!("{}: VE {veid}: no mount holds {resolved}", hn.name),
        )
    })?;
    let lv = lvm::lv_for_mount(&lvs, &mount).cloned();
    let layout = if own
        .get("VE_LAYOUT")
        .or_else(|| global.get("VE_LAYOUT"))
        .map(String::as_str)
        == Some("ploop")
        || sec
            .get("layout")
            .map(|s| s.trim() == "ploop")
            .unwrap_or(false)
    {
        "ploop".to_string()
    } else {
        "simfs".to_string()
    };
    let vg = lv
        .as_ref()
        .and_then(|lv| vgs.iter().find(|v| v.name == lv.vg).cloned());
    let action_scripts = sec
        .get("scripts")
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| ["start", "stop", "mount", "umount"].contains(l))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    warnings.retain(|w| !w.is_empty());
    Ok(VeFacts {
        hn: hn.clone(),
        listed: listed.clone(),
        veid,
        running: status.running,
        private,
        private_resolved: resolved,
        ve_root,
        lockdir,
        conf_file,
        action_scripts,
        mount,
        lv,
        vg,
        warnings,
        layout,
    })
}

fn first_line(s: Option<&String>) -> String {
    s.and_then(|s| s.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// What the transfer will do, once the paths are known.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub server: RsyncServer,
    pub protected: Option<ProtectedArgs>,
    /// Bytes read from stdin past the protect-args block (start of the rsync protocol).
    pub leftover: Vec<u8>,
}

/// What BackupPC asked for: an rsync server, or tar (the tar XferMethod).
#[derive(Debug, Clone)]
pub enum Job {
    Rsync(Transfer),
    Tar(crate::tar_args::TarCmd),
}

impl Job {
    pub fn direction(&self) -> Direction {
        match self {
            Job::Rsync(t) => t.server.direction,
            Job::Tar(t) => t.direction,
        }
    }
    /// The VE paths the transfer reads or writes (rsync's paths; tar's `-C` dir and file list).
    pub fn ve_paths(&self) -> Vec<String> {
        match self {
            Job::Rsync(t) => t.paths().to_vec(),
            Job::Tar(t) => {
                let mut v = vec![t.dir.clone()];
                v.extend(t.file_paths());
                v
            }
        }
    }
    pub fn tool(&self) -> &'static str {
        match self {
            Job::Rsync(_) => "rsync",
            Job::Tar(_) => "tar",
        }
    }
}

impl Transfer {
    pub fn paths(&self) -> &[String] {
        match &self.protected {
            Some(p) => &p.paths,
            None => &self.server.paths,
        }
    }
    /// Options from argv and from the protect-args block.
    pub fn all_options(&self) -> Vec<String> {
        let mut o = self.server.options.clone();
        if let Some(p) = &self.protected {
            o.extend(p.options.iter().cloned());
        }
        o
    }
}

/// Step 1 of every plan: the bpc-ovz lock of the VE and one of the HN's backup slots, held on the
/// guard's own fds 7 and 8 (never inherited by children) for the whole run.
pub fn lock_step(cfg: &Config, veid: &VeId) -> Step {
    let lock_file = format!("{HN_STATE_DIR}/ve.{veid}.lock");
    let per_hn = cfg.per_hn;
    let qt = cfg.queue_timeout.as_secs();
    Step {
        id: 1,
        name: "lock".into(),
        phase: Phase::Prepare,
        summary: format!(
            "take the bpc-ovz lock of VE {veid} and one of {per_hn} slots of this HN (wait up to {qt}s)"
        ),
        action: Action::Hn {
            script: format!(
                "mkdir -p {base}/mnt || return 30\n\
                 exec 8>{lf}\n\
                 if ! flock -n 8; then echo \"VE {veid} is already being backed up or restored by another bpc-ovz\"; exec 8>&-; return 21; fi\n\
                 waited=0\n\
                 while :; do\n\
                 \x20 k=1; got=\n\
                 \x20 while [ $k -le {per_hn} ]; do exec 7>{base}/slot.$k; if flock -n 7; then got=$k; break; fi; k=$((k+1)); done\n\
                 \x20 [ -n \"$got\" ] && break\n\
                 \x20 exec 7>&-\n\
                 \x20 [ $waited = 0 ] && echo \"all {per_hn} backup slots of this HN are busy; waiting (up to {qt}s)\"\n\
                 \x20 if orphaned; then exec 8>&-; return 31; fi\n\
                 \x20 if [ $waited -ge {qt} ]; then echo \"no backup slot of this HN became free within {qt}s (concurrency.per_hn={per_hn})\"; exec 8>&-; return 22; fi\n\
                 \x20 sleep 1; waited=$((waited+1))\n\
                 done\n\
                 say \"data slot $got\"\n\
                 [ $waited -gt 0 ] && say \"data queued_s $waited\"\n\
                 return 0",
                base = HN_STATE_DIR,
                lf = quote(&lock_file),
            ),
        },
        undo: Some("exec 7>&- 8>&-".into()),
        holds_locks: true,
    }
}

/// vzctl's own lock of the VE must be free (a live PID there is a migration or another vzctl
/// job); bpc-ovz then takes it, vzdump-style, for the whole run and calls vzctl with `--skiplock`.
/// `checks` run after the lock test and before taking it; `undo_extra` runs before releasing it.
pub fn preflight_step(
    id: u32,
    facts: &VeFacts,
    summary: String,
    checks: &str,
    undo_extra: &str,
) -> Step {
    let veid = &facts.veid;
    let vzlock = format!("{}/{veid}.lck", facts.lockdir.trim_end_matches('/'));
    Step {
        id,
        name: "preflight".into(),
        phase: Phase::Prepare,
        summary,
        action: Action::Hn {
            script: format!(
                "pid_alive() {{ s=$(cat /proc/$1/stat 2>/dev/null) || return 1; st=${{s##*) }}; case \"$st\" in Z*|X*) return 1 ;; esac; return 0; }}\n\
                 L={l}\n\
                 if [ -f \"$L\" ]; then\n\
                 \x20 p=$(cat \"$L\" 2>/dev/null); p=$(echo $p)\n\
                 \x20 if [ -n \"$p\" ] && pid_alive \"$p\"; then echo \"VE {veid} is locked by vzctl (pid $p): a migration or another vzctl job is running\"; return 22; fi\n\
                 \x20 echo \"removing stale vzctl lock $L (pid $p is gone)\"; rm -f \"$L\"\n\
                 fi\n\
                 {checks}\n\
                 mkdir -p {ld} && echo $$ > \"$L.bpcovz.$$\" && ln \"$L.bpcovz.$$\" \"$L\"; rc=$?\n\
                 rm -f \"$L.bpcovz.$$\"\n\
                 [ $rc = 0 ] || {{ echo \"cannot take vzctl's lock $L\"; return 22; }}\n\
                 return 0",
                l = quote(&vzlock),
                ld = quote(&facts.lockdir),
            ),
        },
        undo: Some(format!(
            "{undo_extra}\nL={}\n[ \"$(cat \"$L\" 2>/dev/null)\" = \"$$\" ] && rm -f \"$L\"\nreturn 0",
            quote(&vzlock)
        )),
        holds_locks: false,
    }
}

/// The snapshot half of a backup plan: steps 1-6 (lock .. add-config), ready to be followed by
/// transfer steps reading `snap_root`. Shared by a per-transfer backup and a dump lease.
pub struct SnapshotPart {
    pub steps: Vec<Step>,
    /// The VE's `/` inside the mounted snapshot.
    pub snap_root: String,
    pub snap_lv: String,
    pub verify: String,
    /// The last step's script when the VE's start runs in the background (`started`).
    pub await_started: Option<String>,
    pub library: String,
    pub facts: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// How the VE's private area is stored (what `snapshot.backend: auto` picks from).
pub fn storage_of(facts: &VeFacts) -> Storage {
    if facts.layout == "ploop" {
        return Storage::Ploop;
    }
    match (&facts.lv, &facts.vg) {
        (Some(lv), Some(_)) if !(lv.attr.starts_with('s') || lv.attr.starts_with('S')) => {
            if lv.attr.starts_with('V') {
                Storage::ThinLv
            } else {
                Storage::ThickLv
            }
        }
        (Some(_), _) => Storage::Other("a snapshot LV or its VG is not listed by vgs".into()),
        (None, _) => Storage::Other(format!(
            "{} ({} at {}), which is not an LVM logical volume (nor a ploop image)",
            facts.mount.source, facts.mount.fstype, facts.mount.mount_point
        )),
    }
}

pub fn snapshot_part(
    cfg: &Config,
    facts: &VeFacts,
    run_id: &str,
    add_config: bool,
    background_start: bool,
) -> Result<SnapshotPart, Fail> {
    let veid = &facts.veid;
    let snap_name = format!("{SNAP_PREFIX}{veid}-{run_id}");
    let mount_point = format!("{HN_STATE_DIR}/mnt/{snap_name}");
    let mode = ModeChain {
        veid: veid.clone(),
        state_file: format!("{HN_STATE_DIR}/state.{snap_name}"),
        modes: cfg.modes_for(facts.listed.hostname.as_deref(), veid.as_str()),
    };
    let mut warnings = facts.warnings.clone();
    let mut storage_facts = Vec::new();
    let (choice, key) = cfg.backend_for(facts.listed.hostname.as_deref(), veid.as_str());
    let (chosen, chosen_how) =
        choose_backend(choice, &key, &facts.private_resolved, &storage_of(facts)).map_err(|e| {
            let when = if choice == BackendChoice::Auto {
                String::new()
            } else {
                format!("; refused before any downtime (config {})", cfg.source)
            };
            Fail::new(
                EXIT_PRECONDITION,
                format!("{}: VE {veid}: {e}{when}", facts.hn.name),
            )
        })?;
    let (backend, snap_root, snap_ref): (Box<dyn SnapshotBackend>, String, String) = if chosen
        == BackendChoice::Ploop
    {
        // The snapshot's filesystem is the VE's `/`.
        let u = crate::nonce();
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &u[0..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..32]
        );
        let b = Ploop {
            veid: veid.clone(),
            uuid: uuid.clone(),
            snap_name: snap_name.clone(),
            mount_point: mount_point.clone(),
            private: facts.private_resolved.clone(),
            reserve_bytes: cfg.snapshot_size,
        };
        storage_facts.push((
            "storage".to_string(),
            format!("ploop image in {}/root.hdd", facts.private_resolved),
        ));
        (Box::new(b), mount_point.clone(), format!("ploop:{uuid}"))
    } else {
        let (lv, vg) = match (&facts.lv, &facts.vg) {
            (Some(lv), Some(vg)) if !(lv.attr.starts_with('s') || lv.attr.starts_with('S')) => {
                (lv, vg)
            }
            (Some(_), _) => {
                return Err(Fail::new(
                    EXIT_PRECONDITION,
                    format!(
                        "{}: VE {veid}: {} is on a snapshot LV or its VG is not listed by vgs",
                        facts.hn.name, facts.private_resolved
                    ),
                ));
            }
            (None, _) => {
                return Err(Fail::new(
                    EXIT_PRECONDITION,
                    format!(
                        "{}: VE {veid}: {} is on {} ({} at {}), which is not an LVM logical volume (nor a ploop image): no snapshot possible",
                        facts.hn.name,
                        facts.private_resolved,
                        facts.mount.source,
                        facts.mount.fstype,
                        facts.mount.mount_point
                    ),
                ));
            }
        };
        let thick = LvmThick {
            vg: lv.vg.clone(),
            origin: lv.name.clone(),
            snap_name: snap_name.clone(),
            size_bytes: cfg.snapshot_size,
            fstype: facts.mount.fstype.clone(),
            mount_point: mount_point.clone(),
            veid: veid.clone(),
        };
        // The VE's private area inside the mounted snapshot.
        let lvmp = facts.mount.mount_point.trim_end_matches('/');
        let rel = facts
            .private_resolved
            .strip_prefix(lvmp)
            .unwrap_or("")
            .trim_start_matches('/');
        let root = if rel.is_empty() {
            mount_point.clone()
        } else {
            format!("{mount_point}/{rel}")
        };
        if chosen == BackendChoice::LvmThick && vg.free < cfg.snapshot_size {
            warnings.push(format!(
                "VG {} has {} MiB free, the snapshot needs {} MiB: the run will be refused before the VE is stopped",
                vg.name,
                vg.free >> 20,
                cfg.snapshot_size >> 20
            ));
        }
        storage_facts.push((
            "LV".to_string(),
            format!(
                "{}/{} ({} MiB, {} on {})",
                lv.vg,
                lv.name,
                lv.size >> 20,
                facts.mount.fstype,
                facts.mount.mount_point
            ),
        ));
        storage_facts.push((
            "VG free".to_string(),
            format!("{} MiB of {} MiB", vg.free >> 20, vg.size >> 20),
        ));
        // A thin volume (attr `V...`) gets a thin snapshot in its pool (unless lvm-thick is forced:
        // then a COW snapshot of it, see `choose_backend`).
        let b: Box<dyn SnapshotBackend> = if chosen == BackendChoice::LvmThin {
            Box::new(crate::snapshot::LvmThin { thick })
        } else {
            Box::new(thick)
        };
        (b, root, format!("{}/{snap_name}", lv.vg))
    };

    if !facts.running {
        warnings.push(format!(
            "VE {veid} is not running: no downtime; it stays stopped"
        ));
    }

    let mut steps = vec![
        lock_step(cfg, veid),
        Step {
            id: 2,
            name: "clear-stale".into(),
            phase: Phase::Prepare,
            summary: format!(
                "remove snapshots and mounts that earlier, dead runs left for VE {veid}"
            ),
            action: Action::Hn {
                // The run-state files of dead runs (`state.NAME`, `state.NAME.start`) go too.
                script: format!(
                    "for f in {base}/state.{pat} {base}/state.{pat}.start; do
                       [ -e \"$f\" ] || continue
                       echo \"removing stale state file $f\"; rm -f \"$f\"
                     done
{}",
                    backend.clear_stale(),
                    base = HN_STATE_DIR,
                    pat = crate::snapshot::snap_name_pattern(veid),
                ),
            },
            undo: None,
            holds_locks: false,
        },
        preflight_step(
            3,
            facts,
            format!(
                "check that vzctl's lock of VE {veid} is free and take it; check room for the {} snapshot",
                backend.name()
            ),
            &backend.check_room(),
            "",
        ),
        Step {
            id: 4,
            name: "downtime".into(),
            phase: Phase::Downtime,
            summary: format!(
                "quiesce VE {veid} if it runs ({}), create {} snapshot {snap_name}, bring it back at once (one script: no round trip while the VE is down){}",
                mode.describe(),
                backend.name(),
                if background_start {
                    "; its start runs on in the background while the next steps run, and step `started` waits for it"
                } else {
                    ""
                }
            ),
            action: Action::Hn {
                script: format!(
                    "exec 6>{slock} && flock 6 || return 30\n\
                     {{\n{room}\n}} 6>&-\n\
                     {before}\n{{\n{create}\n}} 6>&-; crc=$?\n\
                     exec 6>&-\n\
                     {bg}{after}\n\
                     [ $crc = 0 ] || {{ echo \"snapshot creation failed (exit $crc)\"; return 41; }}\n\
                     [ $src = 0 ] || {{ echo \"VE {veid} did not start again (exit $src)\"; return 42; }}\n\
                     return 0",
                    // Snapshot creations on one HN are serialised, and the room is checked again
                    // under that lock: two runs cannot both pass the check and then have the
                    // second stop its VE for an lvcreate that fails.
                    slock = quote(&format!("{HN_STATE_DIR}/snapshot.lock")),
                    room = backend.check_room(),
                    before = mode.before(),
                    create = backend.create(),
                    after = mode.after(),
                    // With a snapshot made, the VE's start runs on in the background while the
                    // snapshot is mounted and read; the `started` step waits for it.
                    bg = if background_start {
                        format!(
                            "bg_after() {{\n{}\n}}\nif [ $crc = 0 ] && bg_after; then return 0; fi\n",
                            mode.after_background()
                        )
                    } else {
                        String::new()
                    },
                ),
            },
            undo: Some(format!("{}\n{}", mode.ensure(), backend.remove())),
            holds_locks: false,
        },
        Step {
            id: 5,
            name: "mount".into(),
            phase: Phase::Snapshot,
            summary: format!("mount the snapshot on {mount_point}"),
            action: Action::Hn {
                script: backend.mount(),
            },
            undo: Some(backend.umount()),
            holds_locks: false,
        },
    ];
    if add_config {
        let etc = format!("{snap_root}/etc");
        let mut copy = format!(
            "cp {} \"$E/vzdump/\"{} || return 51\n",
            quote(&facts.conf_file),
            quote(&format!("{veid}.conf"))
        );
        for x in &facts.action_scripts {
            let src = format!("/etc/vz/conf/{veid}.{x}");
            copy.push_str(&format!(
                "if [ -f {s} ]; then cp {s} \"$E/vzdump/\"{d} || return 51; fi\n",
                s = quote(&src),
                d = quote(&format!("{veid}.{x}"))
            ));
        }
        steps.push(Step {
            id: 6,
            name: "add-config".into(),
            phase: Phase::Snapshot,
            summary: format!("put the HN-side config of VE {veid} into etc/vzdump/ of the snapshot"),
            action: Action::Hn {
                script: format!(
                    "E={e}\n\
                     if [ -L \"$E\" ] || [ ! -d \"$E\" ]; then echo \"the VE's /etc is not a plain directory in the snapshot: etc/vzdump not added\"; return 0; fi\n\
                     rm -rf \"$E/vzdump\" && mkdir \"$E/vzdump\" || return 50\n\
                     {copy}return 0",
                    e = quote(&etc),
                ),
            },
            undo: None,
            holds_locks: false,
        });
    }
    let mut facts_out = vec![
        (
            "HN".to_string(),
            format!("{} ({}:{})", facts.hn.name, facts.hn.host, facts.hn.port),
        ),
        (
            "VE".into(),
            format!(
                "{veid} ({}, {})",
                facts.listed.hostname.as_deref().unwrap_or("-"),
                if facts.running {
                    "running"
                } else {
                    "not running"
                }
            ),
        ),
        (
            "VE_PRIVATE".into(),
            format!("{} -> {}", facts.private, facts.private_resolved),
        ),
        ("VE_ROOT".into(), facts.ve_root.clone()),
    ];
    let mode_pos = facts_out.len();
    facts_out.extend(mode.facts(facts.running));
    for (k, v) in storage_facts.into_iter().rev() {
        facts_out.insert(mode_pos, (k, v));
    }
    facts_out.extend(backend.describe().into_iter().map(|(k, v)| {
        if k == "backend" {
            (k, format!("{v} ({chosen_how})"))
        } else {
            (k, v)
        }
    }));
    Ok(SnapshotPart {
        steps,
        snap_root,
        snap_lv: snap_ref,
        verify: backend.verify(),
        await_started: background_start.then(|| mode.await_started()),
        library: mode.library(),
        facts: facts_out,
        warnings,
    })
}

/// Whether the job reads the VE's `/etc` (then etc/vzdump is added to the snapshot).
pub fn covers_etc(job: &Job) -> bool {
    match job {
        Job::Rsync(t) => t.paths().iter().any(|p| rsync_args::covers_etc(p)),
        Job::Tar(t) => t.file_paths().iter().any(|p| rsync_args::covers_etc(p)),
    }
}

/// The transfer half: check-paths, transfer, verify, numbered from `first_id`, reading the VE
/// tree at `snap_root`. Returns the steps, the stdin prefix and the transfer command.
pub fn transfer_steps(
    job: &Job,
    snap_root: &str,
    verify: &str,
    first_id: u32,
) -> Result<(Vec<Step>, Vec<u8>, String), Fail> {
    let refused = |e: rsync_args::ArgsError| Fail::new(EXIT_REFUSED, e.to_string());
    // rsync: every path mapped into the snapshot; tar: its -C directory (and, for the symlink
    // check, every file-list entry).
    let (mapped, checked) = match job {
        Job::Rsync(t) => {
            let relative = rsync_args::is_relative(&t.all_options());
            let mut mapped = Vec::new();
            for p in t.paths() {
                mapped.push(rsync_args::map_path(p, snap_root, relative).map_err(refused)?);
            }
            (mapped.clone(), mapped)
        }
        Job::Tar(t) => {
            let dir = rsync_args::map_path(&t.dir, snap_root, false).map_err(refused)?;
            let mut checked = vec![dir.clone()];
            for f in t.file_paths() {
                checked.push(rsync_args::map_path(&f, snap_root, false).map_err(refused)?);
            }
            (vec![dir], checked)
        }
    };
    let mut check = format!("R={}\n", quote(snap_root));
    check.push_str("for p in");
    for m in &checked {
        check.push(' ');
        check.push_str(&quote(m));
    }
    check.push_str(
        "; do\n  r=$(readlink -f -- \"$p\") || continue\n  case \"$r\" in \"$R\"|\"$R\"/*) ;; *) echo \"refusing $p: it leads outside the VE (to $r) through a symlink\"; return 60 ;; esac\ndone\nreturn 0",
    );
    // The transfer: the HN's own rsync (or tar), reading the snapshot.
    let (command, prefix, note) = match job {
        Job::Tar(tc) => {
            let c = RemoteCmd::new("env")
                .args(&tc.env)
                .arg("tar")
                .args(tc.args_with_dir(&mapped[0]));
            (format!("exec {c}"), Vec::new(), None)
        }
        Job::Rsync(t) => match &t.protected {
            None => {
                let c = RemoteCmd::new("rsync")
                    .args(&t.server.options)
                    .arg(".")
                    .args(&mapped);
                (format!("exec {c}"), t.leftover.clone(), None)
            }
            Some(p) => {
                let c = RemoteCmd::new("rsync").args(&t.server.options);
                let np = ProtectedArgs {
                    argv0: p.argv0.clone(),
                    options: p.options.clone(),
                    paths: mapped.clone(),
                };
                let mut bytes = np.encode();
                bytes.extend_from_slice(&t.leftover);
                let shown: Vec<String> = np.paths.iter().map(|x| quote(x)).collect();
                let note = format!(
                    "protect-args block rewritten: {} . {}",
                    p.options.join(" "),
                    shown.join(" ")
                );
                (format!("exec {c}"), bytes, Some(note))
            }
        },
    };
    let steps = vec![
        Step {
            id: first_id,
            name: "check-paths".into(),
            phase: Phase::Snapshot,
            summary: "check that every path stays inside the VE (no symlink leads out)".into(),
            action: Action::Hn { script: check },
            undo: None,
            holds_locks: false,
        },
        Step {
            id: first_id + 1,
            name: "transfer".into(),
            phase: Phase::Transfer,
            summary: format!(
                "relay BackupPC's {} to the HN's {} reading the snapshot",
                job.tool(),
                job.tool()
            ),
            action: Action::Transfer {
                command: command.clone(),
                stdin_note: note,
            },
            undo: None,
            holds_locks: false,
        },
        Step {
            id: first_id + 2,
            name: "verify".into(),
            phase: Phase::Verify,
            summary: "fail the backup if the snapshot overflowed during the transfer".into(),
            action: Action::Hn {
                script: verify.to_string(),
            },
            undo: None,
            holds_locks: false,
        },
    ];
    Ok((steps, prefix, command))
}

/// Build the backup plan (stop mode, thick LVM snapshot): snapshot part, then transfer part.
pub fn build_plan(
    cfg: &Config,
    facts: &VeFacts,
    job: &Job,
    run_id: &str,
) -> Result<(Plan, Vec<u8>, String), Fail> {
    let etc = covers_etc(job);
    let part = snapshot_part(cfg, facts, run_id, etc, true)?;
    let (tsteps, prefix, command) = transfer_steps(job, &part.snap_root, &part.verify, 7)?;
    let mut steps = part.steps;
    steps.extend(tsteps);
    if let Some(script) = part.await_started {
        let id = steps.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        steps.push(Step {
            id,
            name: "started".into(),
            phase: Phase::Snapshot,
            summary: format!(
                "wait for the start of VE {} that step 4 left running in the background; report its output and fail (42) if the VE did not come back",
                facts.veid
            ),
            action: Action::Hn { script },
            undo: None,
            holds_locks: false,
        });
    }
    let mut facts_out = part.facts;
    facts_out.push(("paths".into(), job.ve_paths().join(" ")));
    facts_out.push((
        "etc/vzdump".into(),
        if etc {
            "added".into()
        } else {
            "not covered".into()
        },
    ));
    let plan = Plan {
        title: format!(
            "bpc-ovz backup plan for {} (VE {} on {})",
            facts.listed.hostname.as_deref().unwrap_or("-"),
            facts.veid,
            facts.hn.name
        ),
        facts: facts_out,
        warnings: part.warnings,
        library: part.library,
        steps,
    };
    Ok((plan, prefix, command))
}

/// Adapter: an SSH channel as the guard's byte stream.
struct ChannelGuard(RemoteProc);

impl GuardIo for ChannelGuard {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0
            .send(bytes)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
    async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.0.next_event().await? {
                crate::ssh::Event::Stdout(b) | crate::ssh::Event::Stderr(b) => {
                    return Some(b.to_vec());
                }
                crate::ssh::Event::Exit(_) => continue,
            }
        }
    }
}

/// Parse and check the request; read the protect-args block if there is one.
pub fn prepare_transfer(req: &Request, stdin_fd: RawFd) -> Result<Job, Fail> {
    let server = match rsync_args::parse(&req.words) {
        Ok(s) => s,
        Err(rsync_args::ArgsError::NotRsyncServer(_))
            if crate::tar_args::parse(&req.words).is_ok() =>
        {
            let t = crate::tar_args::parse(&req.words)
                .map_err(|e| Fail::new(EXIT_REFUSED, e.to_string()))?;
            if req.restore_keyword && t.direction == Direction::Send {
                return Err(Fail::new(
                    EXIT_REFUSED,
                    "`server restore` was given, but the tar command creates an archive (a backup)",
                ));
            }
            for p in Job::Tar(t.clone()).ve_paths() {
                rsync_args::ve_relative(&p).map_err(|e| Fail::new(EXIT_REFUSED, e.to_string()))?;
            }
            if t.direction == Direction::Receive {
                crate::restore::check_tar_restore_options(&t)?;
            }
            return Ok(Job::Tar(t));
        }
        Err(rsync_args::ArgsError::NotRsyncServer(_)) => {
            // Say why tar was refused when it looks like tar.
            if let Err(e) = crate::tar_args::parse(&req.words)
                && req
                    .words
                    .iter()
                    .any(|w| w.rsplit('/').next() == Some("tar"))
            {
                return Err(Fail::new(EXIT_REFUSED, e.to_string()));
            }
            return Err(Fail::new(
                EXIT_REFUSED,
                format!(
                    "remote command is neither an rsync server nor a BackupPC tar command: {}",
                    crate::openvz::shown(&req.words.join(" "))
                ),
            ));
        }
        Err(e) => return Err(Fail::new(EXIT_REFUSED, e.to_string())),
    };
    if req.restore_keyword && server.direction == Direction::Send {
        return Err(Fail::new(
            EXIT_REFUSED,
            "`server restore` was given, but the rsync command is a sender (a backup)",
        ));
    }
    let (protected, leftover) = if server.protect_args {
        let mut f = FdReader(stdin_fd);
        let (p, rest) = rsync_args::read_protected(&mut f)
            .map_err(|e| Fail::new(EXIT_REFUSED, e.to_string()))?;
        (Some(p), rest)
    } else {
        (None, Vec::new())
    };
    let t = Transfer {
        server,
        protected,
        leftover,
    };
    for p in t.paths() {
        rsync_args::ve_relative(p).map_err(|e| Fail::new(EXIT_REFUSED, e.to_string()))?;
    }
    if t.server.direction == Direction::Receive {
        crate::restore::check_restore_options(&t)?;
    }
    Ok(Job::Rsync(t))
}

/// Run one backup transfer end to end. Returns the exit code.
pub async fn run(cfg: &Config, req: Request, cancel: watch::Receiver<bool>) -> i32 {
    match run_inner(cfg, req, cancel).await {
        Ok(code) => code,
        Err(f) => {
            tracing::error!("{}", f.msg);
            f.code
        }
    }
}

async fn run_inner(cfg: &Config, req: Request, cancel: watch::Receiver<bool>) -> Result<i32, Fail> {
    let t = prepare_transfer(&req, 0)?;
    cfg.require_hns().map_err(|e| Fail::new(1, e.to_string()))?;
    // A transfer of a dump that `dump-begin` prepared reads that dump's snapshot.
    if let Some(lease) = crate::lease::for_this_dump(cfg, &req.host) {
        return crate::lease::transfer(cfg, &req, &t, lease, cancel).await;
    }
    let (hn, session, facts) = locate_and_probe(cfg, &req.host, |hn, ve| {
        tracing::info!(
            "{} is VE {} on {} ({})",
            req.host,
            ve.veid,
            hn.name,
            ve.status
        )
    })
    .await?;
    for w in &facts.warnings {
        tracing::warn!("{}: {}", hn.name, w);
    }
    let run_id = crate::nonce()[..8].to_string();
    let restore = t.direction() == Direction::Receive;
    let tar = matches!(t, Job::Tar(_));
    let (plan, prefix, command) = if restore {
        crate::restore::build_plan(cfg, &facts, &t, &run_id)?
    } else {
        build_plan(cfg, &facts, &t, &run_id)?
    };
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let ctx = RunCtx {
        session: &session,
        upload_channels: cfg.ssh.upload_channels,
        hn: &hn.name,
        veid: &facts.veid,
        running: facts.running,
        restore,
        tar,
        caller: req.caller,
    };
    let code = execute(&ctx, &plan, prefix, command, cancel).await?;
    session.close().await;
    Ok(code)
}

/// What `execute` needs to know about the run it executes.
pub struct RunCtx<'a> {
    pub session: &'a Session,
    /// `ssh.upload_channels`: the channels a restore's upload is spread over.
    pub upload_channels: u8,
    pub hn: &'a str,
    pub veid: &'a VeId,
    pub running: bool,
    pub restore: bool,
    pub tar: bool,
    pub caller: Caller,
}

/// Run `plan` through a guard on `ctx.session`, relaying the transfer step; returns the exit code.
pub async fn execute(
    ctx: &RunCtx<'_>,
    plan: &Plan,
    prefix: Vec<u8>,
    command: String,
    cancel: watch::Receiver<bool>,
) -> Result<i32, Fail> {
    let (session, tar, caller) = (ctx.session, ctx.tar, ctx.caller);
    // Only a restore sends much: a backup's stdin is rsync's small requests, on one channel.
    let input = Input {
        prefix,
        channels: if ctx.restore { ctx.upload_channels } else { 1 },
        label: format!("{}: ", ctx.hn),
    };
    let nonce = crate::nonce();
    let guard = session
        .open(&guard_command(plan, &nonce))
        .await
        .map_err(|e| Fail::new(255, format!("{}: {e}", ctx.hn)))?;
    let hn_name = ctx.hn.to_string();
    let cancel2 = cancel.clone();
    let session_ref = &session;
    let transfer = move |_: &Step| async move {
        let sink = match caller {
            Caller::Ssh => StderrSink::Fd2,
            Caller::Server => {
                let hn = hn_name.clone();
                StderrSink::Callback(Box::new(move |b: &[u8]| {
                    for l in String::from_utf8_lossy(b).lines() {
                        tracing::info!("{hn}: rsync: {l}");
                    }
                }))
            }
        };
        match relay(session_ref, &command, input, 0, 1, sink, cancel2).await {
            Ok((ExitOutcome::Exited(c), stats)) => {
                let c = c as i32;
                TransferResult {
                    code: c,
                    // rsync's 23/24 and tar's 1 are BackupPC's "partial" results.
                    proceed: if tar {
                        matches!(c, 0 | 1)
                    } else {
                        matches!(c, 0 | 23 | 24)
                    },
                    note: Some(format!(
                        "{} exit {c}, {} bytes to BackupPC, {} bytes from it",
                        if tar { "tar" } else { "rsync" },
                        stats.bytes_out,
                        stats.bytes_in
                    )),
                }
            }
            Ok((o, _)) => TransferResult {
                code: 255,
                proceed: false,
                note: Some(format!("transfer ended: {o}")),
            },
            Err(e) => TransferResult {
                code: 255,
                proceed: false,
                note: Some(e.to_string()),
            },
        }
    };
    let name = ctx.hn.to_string();
    let names: BTreeMap<u32, String> = plan.steps.iter().map(|s| (s.id, s.name.clone())).collect();
    let mut report = move |e: Event| log_event(&name, &names, e);
    let out = Executor::new(plan, ChannelGuard(guard), &nonce)
        .run(transfer, cancel, &mut report)
        .await;
    Ok(summarize(ctx, plan, &out))
}

fn log_event(hn: &str, names: &BTreeMap<u32, String>, e: Event) {
    let n = |id: u32| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    match e {
        Event::StepBegin { id, name } => tracing::debug!("{hn}: step {id} {name}"),
        Event::Output { id, line } => tracing::info!("{hn}: [{}] {}", n(id), line),
        Event::Data { .. } => {}
        Event::StepEnd { id, rc } if rc != 0 => tracing::debug!("{hn}: step {} exited {rc}", n(id)),
        Event::StepEnd { .. } => {}
        Event::Undo { id } => tracing::debug!("{hn}: undo {}", n(id)),
        Event::Undone { id, rc } if rc != 0 => {
            tracing::error!("{hn}: undo of {} failed (exit {rc})", n(id))
        }
        Event::Undone { .. } => {}
        Event::Cancelled => tracing::warn!("{hn}: aborted by signal or EOF; the HN cleans up"),
        Event::GuardLost => tracing::error!(
            "{hn}: connection to the HN-side guard lost; the HN cleans up by itself"
        ),
    }
}

/// One exit code and the closing lines.
fn summarize(ctx: &RunCtx<'_>, plan: &Plan, out: &Outcome) -> i32 {
    let (veid, restore, running) = (ctx.veid, ctx.restore, ctx.running);
    let what = if restore { "restore" } else { "backup" };
    if let Some((_, b)) = plan.facts.iter().find(|(k, _)| k == "backend")
        && out.datum("mode").is_some()
    {
        tracing::info!("{}: snapshot backend: {b}", ctx.hn);
    }
    if out.datum("mode") == Some("live") {
        tracing::info!(
            "{}: live mode: VE {veid} kept running; the snapshot is crash-consistent",
            ctx.hn
        );
    }
    if out.datum("resume_failed").is_some() {
        tracing::warn!(
            "{}: resuming VE {veid} failed: it was stopped and started instead",
            ctx.hn
        );
    }
    if let Some(d) = out
        .datum("downtime_ms")
        .filter(|_| out.datum("mode") != Some("live"))
    {
        let parts = out
            .datum("downtime_parts")
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        if running || d != "0" {
            tracing::info!("{}: VE {veid} was down for {d} ms{parts}", ctx.hn);
        } else {
            tracing::info!("{}: VE {veid} was not running: no downtime", ctx.hn);
        }
    }
    if let Some(u) = out.datum("snapshot_usage") {
        tracing::info!("{}: snapshot usage at the end: {u}%", ctx.hn);
    }
    if let Some(t) = &out.transfer
        && let Some(n) = &t.note
    {
        tracing::info!("{}: {n}", ctx.hn);
    }
    let cleanup_ok = out.unwound && out.undo_failures.is_empty();
    if !out.undo_failures.is_empty() {
        tracing::error!(
            "{}: cleanup incomplete (undo of steps {:?} failed): a snapshot or mount of VE {veid} may be left; the next run or `bpc-ovz sweep` removes it",
            ctx.hn,
            out.undo_failures
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>()
        );
    }
    if out.cancelled {
        tracing::error!("{}: {what} of VE {veid} aborted", ctx.hn);
        return EXIT_SIGNAL;
    }
    if out.guard_lost && !out.unwound {
        tracing::error!(
            "{}: connection lost; the HN cleans up by itself (VE restarted, snapshot removed)",
            ctx.hn
        );
        return 255;
    }
    if let Some(f) = &out.failed {
        let why = f
            .output
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        // After a failed transfer the verify step still ran (exec.rs). It names a torn snapshot
        // only once it could read the snapshot's state (its usage datum); when it could not (the
        // snapshot is gone, lvs failed), the transfer's own failure is what is reported.
        let failed_transfer = out.transfer.as_ref().filter(|t| !t.proceed);
        if let Some(t) = failed_transfer
            && f.name == "verify"
        {
            let tool = if ctx.tar { "tar" } else { "rsync" };
            if !out.data.iter().any(|(id, _, _)| *id == f.id) {
                tracing::warn!(
                    "{}: the snapshot could not be checked after the failed transfer: {why}",
                    ctx.hn
                );
                tracing::error!("{}: {tool} failed (exit {})", ctx.hn, t.code);
                return t.code;
            }
            tracing::error!(
                "{}: {tool} failed (exit {}) reading a snapshot that did not hold: {why}",
                ctx.hn,
                t.code
            );
        }
        let code = match f.name.as_str() {
            // 23: no room for the snapshot, found before the VE was touched.
            "downtime" if f.rc == 23 => EXIT_PRECONDITION,
            "lock" | "preflight" => EXIT_PRECONDITION,
            "verify" => EXIT_TORN,
            "check-paths" => EXIT_REFUSED,
            _ => EXIT_HN_STEP,
        };
        let step = plan.step(f.id).map(|s| s.name.clone()).unwrap_or_default();
        tracing::error!(
            "{}: {what} of VE {veid} failed at step {step} (exit {}): {why}",
            ctx.hn,
            f.rc
        );
        return code;
    }
    if let Some(t) = &out.transfer {
        if t.code != 0 {
            tracing::error!("{}: rsync failed (exit {})", ctx.hn, t.code);
            return t.code;
        }
    } else {
        tracing::error!("{}: the transfer did not run", ctx.hn);
        return EXIT_HN_STEP;
    }
    if !cleanup_ok {
        return EXIT_CLEANUP;
    }
    let state = if running {
        "running"
    } else {
        "stopped as before"
    };
    if restore {
        tracing::info!("{}: restore into VE {veid} complete; VE {state}", ctx.hn);
    } else {
        tracing::info!(
            "{}: backup of VE {veid} complete; snapshot removed, VE {state}",
            ctx.hn
        );
    }
    0
}

/// Blocking reads from a raw fd that may have been handed over with `O_NONBLOCK` (rsync does that
/// to its `-e` child): waits with poll(2) on EAGAIN. Never closes the fd.
pub struct FdReader(pub RawFd);

impl std::io::Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd {
                        fd: self.0,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, -1) };
                }
                _ => return Err(e),
            }
        }
    }
}

/// `bpc-ovz plan`: locate and probe read-only, then print the plan a backup would run.
pub async fn show_plan(
    cfg: &Config,
    host: &str,
    paths: &[String],
    json: bool,
    script: bool,
    restore: bool,
) -> Result<(), Fail> {
    cfg.require_hns().map_err(|e| Fail::new(1, e.to_string()))?;
    for p in paths {
        rsync_args::ve_relative(p).map_err(|e| Fail::new(EXIT_REFUSED, e.to_string()))?;
    }
    let (_, session, facts) = locate_and_probe(cfg, host, |_, _| {}).await?;
    let hn_state = crate::admin::plan::probe_state(&session, cfg, &facts).await;
    session.close().await;
    // What BackupPC 4 sends by default: protect-args, paths on stdin.
    let t = Transfer {
        server: RsyncServer {
            direction: if restore {
                Direction::Receive
            } else {
                Direction::Send
            },
            options: if restore {
                vec!["--server".into(), "-slHogDtpre.iLsfxC".into()]
            } else {
                vec![
                    "--server".into(),
                    "--sender".into(),
                    "-slHogDtprxe.iLsfxC".into(),
                ]
            },
            protect_args: true,
            paths: vec![],
        },
        protected: Some(ProtectedArgs {
            argv0: "rsync".into(),
            options: vec!["--timeout=72000".into(), "--numeric-ids".into()],
            paths: paths.to_vec(),
        }),
        leftover: Vec::new(),
    };
    let run_id = "RUNID000".to_string();
    let (mut plan, _, _) = if restore {
        crate::restore::build_plan(cfg, &facts, &Job::Rsync(t), &run_id)?
    } else {
        build_plan(cfg, &facts, &Job::Rsync(t), &run_id)?
    };
    crate::admin::plan::augment(&mut plan, cfg, &facts, &hn_state);
    if json {
        let v = serde_json::json!({ "plan": plan, "facts": facts, "hn_state": hn_state,
            "remote_commands": crate::admin::plan::remote_commands(&plan) });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", plan.render_text());
        println!("(RUNID000 stands for the random run id of a real run.)");
        if script {
            println!(
                "guard script:\n{}",
                crate::plan::guard_script(&plan, "NONCE")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HN-side read of VE_PRIVATE (run by dash and bash here) agrees with bpc-ovz's own
    /// (`openvz::parse_conf`) on the forms configs use; where it could differ, the probe reads
    /// the storage again with bpc-ovz's value.
    #[test]
    fn private_guess_agrees_with_parse_conf() {
        let veid = VeId::parse("101").unwrap();
        let cases: &[(&str, &str)] = &[
            ("VE_PRIVATE=\"/vz/private/101\"\n", ""),
            ("", "VE_PRIVATE=/vz/private/$VEID\n"),
            ("", "VE_PRIVATE=\"/srv/vz/${VEID}/p\"  # comment\n"),
            ("OSTEMPLATE=x\n", "VE_PRIVATE='/vz/private/$VEID'\n"),
            ("  VE_PRIVATE=/a/b # the area\n", "VE_PRIVATE=/c\n"),
            ("VE_PRIVATE=/one\nVE_PRIVATE=/two\n", ""),
            ("# VE_PRIVATE=/commented\n", ""),
            ("", ""),
            ("VE_PRIVATE=\"/with space/101\"\n", ""),
        ];
        let d = std::env::temp_dir().join(format!("bpcovz-guess-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (own_f, global_f) = (d.join("101.conf"), d.join("vz.conf"));
        for sh in ["dash", "bash"] {
            for (own, global) in cases {
                std::fs::write(&own_f, own).unwrap();
                std::fs::write(&global_f, global).unwrap();
                let script = private_guess(
                    "@@m",
                    &veid,
                    &quote(own_f.to_str().unwrap()),
                    &quote(global_f.to_str().unwrap()),
                );
                let out = std::process::Command::new(sh)
                    .arg("-c")
                    .arg(format!("{script}echo @@m sec end"))
                    .output()
                    .unwrap();
                let sec = sections(&String::from_utf8_lossy(&out.stdout), "@@m");
                let (o, g) = (
                    openvz::parse_conf(own, &veid),
                    openvz::parse_conf(global, &veid),
                );
                let want = o
                    .get("VE_PRIVATE")
                    .or_else(|| g.get("VE_PRIVATE"))
                    .cloned()
                    .unwrap_or_else(|| "/var/lib/vz/private/101".into());
                assert_eq!(
                    sec.get("guess").map(String::as_str),
                    Some(format!("{want}\n").as_str()),
                    "{sh}: own {own:?}, global {global:?}"
                );
            }
        }
        // A form the HN-side read does not follow (a space before `=`): the guess differs, so
        // the probe does not use what it read and asks again with bpc-ovz's value.
        std::fs::write(&own_f, "VE_PRIVATE =/x\n").unwrap();
        std::fs::write(&global_f, "").unwrap();
        let script = private_guess(
            "@@m",
            &veid,
            &quote(own_f.to_str().unwrap()),
            &quote(global_f.to_str().unwrap()),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{script}echo @@m sec end"))
            .output()
            .unwrap();
        let sec = sections(&String::from_utf8_lossy(&out.stdout), "@@m");
        assert_eq!(
            openvz::parse_conf("VE_PRIVATE =/x\n", &veid)
                .get("VE_PRIVATE")
                .map(String::as_str),
            Some("/x")
        );
        assert_eq!(
            sec.get("guess").map(String::as_str),
            Some("/var/lib/vz/private/101\n")
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
