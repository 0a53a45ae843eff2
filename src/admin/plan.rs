//! The HN's live state for `bpc-ovz plan`: what a backup started now would meet. Read-only: lock
//! owners come from `/proc/locks` (the locks are never taken), the rest from `cat`, `lvs`,
//! `vzctl snapshot-list` (a ploop VE) and `/proc/self/mountinfo`.
//!
//! `backup::show_plan` builds the plan (the very object the executor runs) and calls [`probe_state`]
//! and [`augment`] to add these facts and warnings, and [`remote_commands`] for `--json`.

use serde::Serialize;

use crate::admin::sweep::{parse_ploop, ploop_probe};
use crate::admin::{
    Sections, holder, leftovers_probe, parse_leftovers, parse_proc_locks, parse_stat_lines, probe,
    ve_lock_path,
};
use crate::backup::VeFacts;
use crate::config::Config;
use crate::plan::{Action, Plan, guard_command};
use crate::quote::quote;
use crate::snapshot::HN_STATE_DIR;
use crate::ssh::Session;

#[derive(Debug, Clone, Default, Serialize)]
pub struct HnState {
    /// Mount options of the filesystem holding VE_PRIVATE (per-mount, then superblock).
    pub mount_options: Option<String>,
    /// The VE's bpc-ovz lock is held: a backup (or restore) of this VE is running.
    pub ve_lock_held: bool,
    /// Backup slots of this HN held now, of `concurrency.per_hn`.
    pub slots_busy: u32,
    pub slots: u32,
    /// vzctl's own lock of the VE: `None` free, else (pid, alive).
    pub vzctl_lock: Option<(String, bool)>,
    /// bpc-ovz leftovers of this VE whose run is gone (clear-stale removes them).
    pub stale: Vec<String>,
    /// Snapshots, mounts and state files of the run of this VE that is alive now.
    pub in_use: Vec<String>,
    /// Why the state could not be read, if it could not.
    pub error: Option<String>,
}

/// Read the state; never fails (an error is recorded and becomes a warning).
pub async fn probe_state(session: &Session, cfg: &Config, facts: &VeFacts) -> HnState {
    let vzlock = format!("{}/{}.lck", facts.lockdir.trim_end_matches('/'), facts.veid);
    let mut body = format!(
        "{left}\n\
         echo \"$M sec vzlock\"; L={l}; if [ -f \"$L\" ]; then p=$(head -n 1 \"$L\" 2>/dev/null | tr -cd 0-9); if [ -n \"$p\" ] && [ -d \"/proc/$p\" ]; then echo \"alive $p\"; else echo \"dead $p\"; fi; fi",
        left = leftovers_probe(),
        l = quote(&vzlock),
    );
    if facts.layout == "ploop" {
        body.push('\n');
        body.push_str(&ploop_probe(Some(&facts.veid)));
    }
    match probe(session, &body).await {
        Ok(s) => evaluate(&s, cfg, facts),
        Err(e) => HnState {
            slots: cfg.per_hn,
            error: Some(e),
            ..Default::default()
        },
    }
}

pub fn evaluate(s: &Sections, cfg: &Config, facts: &VeFacts) -> HnState {
    let locks = parse_proc_locks(s.get("locks"));
    let files = parse_stat_lines(s.get("lockfiles"));
    let held = |path: &str| {
        files
            .iter()
            .find(|f| f.path == path)
            .and_then(|f| holder(&locks, f))
    };
    let slots_busy = (1..=cfg.per_hn)
        .filter(|k| held(&format!("{HN_STATE_DIR}/slot.{k}")).is_some())
        .count() as u32;
    let vzctl_lock = s.get("vzlock").lines().next().and_then(|l| {
        let (state, pid) = l.split_once(' ').unwrap_or((l, ""));
        match state {
            "alive" => Some((pid.to_string(), true)),
            "dead" => Some((pid.to_string(), false)),
            _ => None,
        }
    });
    let left = parse_leftovers(s);
    let (ploops, _) = parse_ploop(s);
    let mine = |in_use: bool| {
        left.items
            .iter()
            .filter(|l| l.veid == facts.veid && l.in_use == in_use)
            .map(|l| l.describe())
            .chain(
                ploops
                    .iter()
                    .filter(|p| p.veid == facts.veid && p.in_use == in_use)
                    .map(|p| p.describe()),
            )
            .collect()
    };
    HnState {
        mount_options: mount_options(s.get("mountinfo"), &facts.mount),
        ve_lock_held: held(&ve_lock_path(&facts.veid)).is_some(),
        slots_busy,
        slots: cfg.per_hn,
        vzctl_lock,
        stale: mine(false),
        in_use: mine(true),
        error: None,
    }
}

/// Options of the mount holding the VE (the last mount on that point with that device wins).
fn mount_options(mountinfo: &str, m: &crate::lvm::Mount) -> Option<String> {
    let dev = format!("{}:{}", m.major, m.minor);
    mountinfo.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let dash = f.iter().position(|w| *w == "-")?;
        if dash < 6 || f.len() < dash + 4 {
            return None;
        }
        (f[2] == dev && crate::lvm::parse_mountinfo(line).first()?.mount_point == m.mount_point)
            .then(|| format!("{} (superblock: {})", f[5], f[dash + 3]))
    })
}

/// Add the state to the plan's facts and warnings.
pub fn augment(plan: &mut Plan, cfg: &Config, facts: &VeFacts, st: &HnState) {
    let veid = &facts.veid;
    if let Some(e) = &st.error {
        plan.warnings.push(format!(
            "cannot read lock state, mount options and leftovers on {}: {e}",
            facts.hn.name
        ));
        return;
    }
    plan.facts.push((
        "mount options".into(),
        st.mount_options.clone().unwrap_or_else(|| "?".into()),
    ));
    plan.facts.push((
        "bpc-ovz lock".into(),
        if !st.ve_lock_held {
            format!("free ({})", ve_lock_path(veid))
        } else if st.in_use.is_empty() {
            format!("HELD ({}): a run of this VE is alive", ve_lock_path(veid))
        } else {
            format!(
                "HELD ({}): a run of this VE is alive, with {}",
                ve_lock_path(veid),
                st.in_use.join(", ")
            )
        },
    ));
    plan.facts.push((
        "backup slots".into(),
        format!("{} of {} busy", st.slots_busy, st.slots),
    ));
    plan.facts.push((
        "vzctl lock".into(),
        match &st.vzctl_lock {
            None => "free".into(),
            Some((p, true)) => format!("HELD by pid {p}"),
            Some((p, false)) => format!("stale (pid {p} is gone; preflight removes it)"),
        },
    ));
    plan.facts.push((
        "leftovers".into(),
        if st.stale.is_empty() {
            "none".into()
        } else {
            st.stale.join(", ")
        },
    ));
    if st.ve_lock_held {
        plan.warnings.push(format!(
            "VE {veid} is being backed up (or restored) right now: a backup started now is refused before any downtime (exit 71)"
        ));
    }
    if let Some((p, true)) = &st.vzctl_lock {
        plan.warnings.push(format!(
            "VE {veid} is locked by vzctl (pid {p}: a migration or another vzctl job): a backup started now is refused before any downtime (exit 71)"
        ));
    }
    if st.slots > 0 && st.slots_busy >= st.slots {
        plan.warnings.push(format!(
            "all {} backup slots of {} are busy: a backup started now waits for one (up to {}s, concurrency.queue_timeout)",
            st.slots,
            facts.hn.name,
            cfg.queue_timeout.as_secs()
        ));
    }
    if !st.stale.is_empty() {
        plan.warnings.push(format!(
            "leftovers of an earlier, dead run of VE {veid}: {}; step clear-stale removes them (or `bpc-ovz sweep`)",
            st.stale.join(", ")
        ));
    }
    if let Some(lv) = &facts.lv
        && cfg.snapshot_size > lv.size
    {
        plan.warnings.push(format!(
            "snapshot.size ({} MiB) is larger than LV {}/{} ({} MiB): LVM caps the COW size",
            cfg.snapshot_size >> 20,
            lv.vg,
            lv.name,
            lv.size >> 20
        ));
    }
}

/// The exec requests a run sends after locating and probing, in order: the guard, then the
/// transfer (the same strings; `NONCE` and `RUNID000` stand for a real run's random values).
pub fn remote_commands(plan: &Plan) -> serde_json::Value {
    let mut v = vec![serde_json::json!({
        "channel": "guard",
        "command": guard_command(plan, "NONCE"),
    })];
    for s in &plan.steps {
        if let Action::Transfer { command, .. } = &s.action {
            v.push(serde_json::json!({ "channel": "transfer", "command": command }));
        }
    }
    serde_json::Value::Array(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_of_the_ve_mount() {
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                  40 22 253:3 / /vz rw,relatime shared:5 - ext4 /dev/mapper/vg--data-vz rw,data=ordered\n";
        let m = crate::lvm::Mount {
            major: 253,
            minor: 3,
            mount_point: "/vz".into(),
            fstype: "ext4".into(),
            source: "/dev/mapper/vg--data-vz".into(),
        };
        assert_eq!(
            mount_options(mi, &m).as_deref(),
            Some("rw,relatime (superblock: rw,data=ordered)")
        );
    }
}
