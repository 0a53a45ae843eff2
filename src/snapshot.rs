//! Snapshot backends and quiesce modes: shell fragments the plan builder composes into steps.
//!
//! A backend knows how to check room for, create, mount, verify, unmount and remove one snapshot;
//! a mode knows how to quiesce a VE around the snapshot (stop/start today; suspend and live can be
//! added as more [`Quiesce`] implementations, thin LVM and ploop as more [`SnapshotBackend`]s).
//! Fragments are POSIX sh bodies that `return` a non-zero code on failure; every value in them is
//! quoted with [`quote`]. They build text; they never run anything.

use crate::lvm::mapper_path;
use crate::openvz::VeId;
use crate::quote::quote;

/// Where bpc-ovz keeps its HN-side state: locks, run state, mount points. On tmpfs on a real HN,
/// so a reboot clears it (snapshots LVs, which survive a reboot, are found by their name prefix).
pub const HN_STATE_DIR: &str = "/run/bpc-ovz";
/// Every snapshot LV bpc-ovz creates is named `bpcovz-<VEID>-<run id>`.
pub const SNAP_PREFIX: &str = "bpcovz-";

pub trait SnapshotBackend {
    fn name(&self) -> &'static str;
    /// Fails (non-zero) unless there is room for the snapshot.
    fn check_room(&self) -> String;
    /// Removes snapshots and mounts of earlier runs of this VE (the caller holds the VE lock, so
    /// their owner is gone).
    fn clear_stale(&self) -> String;
    /// Creates the snapshot; runs inside the downtime window, so it must be quick.
    fn create(&self) -> String;
    /// Idempotent removal with retries (LV briefly "in use").
    fn remove(&self) -> String;
    fn mount(&self) -> String;
    /// Idempotent unmount with retries (umount "busy").
    fn umount(&self) -> String;
    /// After the transfer: fails if the snapshot overflowed or became invalid.
    fn verify(&self) -> String;
    /// Human-readable facts for `plan`.
    fn describe(&self) -> Vec<(String, String)>;
}

pub trait Quiesce {
    /// Shell functions the other fragments call (defined once in the guard).
    fn library(&self) -> String;
    /// Record the VE's run state in `$STATE`, then quiesce it if it runs. Returns non-zero (after
    /// making sure the VE runs again) if it cannot.
    fn before(&self) -> String;
    /// Bring the VE back to the recorded state (right after the snapshot).
    fn after(&self) -> String;
    /// Undo: idempotent, makes sure the VE is in its recorded state.
    fn ensure(&self) -> String;
}

/// Thick LVM snapshot (`lvcreate --snapshot`), as vzdump does it.
pub struct LvmThick {
    pub vg: String,
    pub origin: String,
    pub snap_name: String,
    pub size_bytes: u64,
    pub fstype: String,
    pub mount_point: String,
    pub veid: VeId,
}

impl LvmThick {
    fn lv(&self) -> String {
        format!("{}/{}", self.vg, self.snap_name)
    }
    pub fn mount_options(fstype: &str) -> Option<&'static str> {
        match fstype {
            // The snapshot carries the origin's UUID, which XFS otherwise refuses to mount.
            "xfs" => Some("nouuid"),
            // ext3/ext4: mounted read-write without `noload`, so the journal is replayed into the
            // COW area (as vzdump does) and etc/vzdump can be added.
            _ => None,
        }
    }
    fn size_mib(&self) -> u64 {
        self.size_bytes.div_ceil(1 << 20)
    }
}

impl SnapshotBackend for LvmThick {
    fn name(&self) -> &'static str {
        "lvm-thick"
    }

    fn check_room(&self) -> String {
        format!(
            "free=$(vgs --noheadings --units b --nosuffix -o vg_free {vg} 2>&1) || {{ echo \"vgs failed: $free\"; return 23; }}\n\
             free=$(echo $free); free=${{free%%.*}}\n\
             case \"$free\" in ''|*[!0-9]*) echo \"cannot read free space of VG {vgt}: $free\"; return 23 ;; esac\n\
             if [ \"$free\" -lt {need} ]; then echo \"volume group {vgt} has $free bytes free; the snapshot needs {need} (snapshot.size)\"; return 23; fi\n\
             say \"data vg_free $free\"",
            vg = quote(&self.vg),
            vgt = self.vg.replace(['"', '$', '`', '\\'], "_"),
            need = self.size_mib() << 20,
        )
    }

    fn clear_stale(&self) -> String {
        let pat = format!("{SNAP_PREFIX}{}-", self.veid);
        format!(
            "for mp in {base}/mnt/{pat}*; do\n\
             \x20 [ -d \"$mp\" ] || continue\n\
             \x20 if mountpoint -q \"$mp\"; then echo \"unmounting stale $mp\"; umount \"$mp\" || umount -l \"$mp\"; fi\n\
             \x20 rmdir \"$mp\" 2>/dev/null\n\
             done\n\
             lvs --noheadings -o lv_name {vg} 2>/dev/null | while read -r n; do\n\
             \x20 case \"$n\" in {pat}*) echo \"removing stale snapshot {vgt}/$n\"; lvremove -f {vg}/\"$n\" ;; esac\n\
             done\n\
             return 0",
            base = HN_STATE_DIR,
            pat = pat,
            vg = quote(&self.vg),
            vgt = self.vg,
        )
    }

    fn create(&self) -> String {
        format!(
            "lvcreate --size {mib}m --snapshot --name {name} {origin}",
            mib = self.size_mib(),
            name = quote(&self.snap_name),
            origin = quote(&format!("{}/{}", self.vg, self.origin)),
        )
    }

    fn remove(&self) -> String {
        format!(
            "d=1; n=0\n\
             while lvs {lv} >/dev/null 2>&1; do\n\
             \x20 lvremove -f {lv} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 8 ]; then echo \"giving up: snapshot {lvt} is still there; run bpc-ovz sweep\"; return 1; fi\n\
             \x20 echo \"lvremove {lvt} failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 16 ] && d=16\n\
             done\n\
             return 0",
            lv = quote(&self.lv()),
            lvt = self.lv(),
        )
    }

    fn mount(&self) -> String {
        let opts = match Self::mount_options(&self.fstype) {
            Some(o) => format!(" -o {o}"),
            None => String::new(),
        };
        format!(
            "mkdir -p {mp} || return 30\nmount -t {fs}{opts} {dev} {mp}",
            mp = quote(&self.mount_point),
            fs = quote(&self.fstype),
            dev = quote(&format!("/dev/{}/{}", self.vg, self.snap_name)),
        )
    }

    fn umount(&self) -> String {
        format!(
            "d=1; n=0\n\
             while mountpoint -q {mp} || grep -qF -- \" \"{mp}\" \" /proc/mounts; do\n\
             \x20 umount {mp} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 7 ]; then echo \"{mpt} still busy: detaching it lazily\"; umount -l {mp}; break; fi\n\
             \x20 echo \"umount {mpt} failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 8 ] && d=8\n\
             done\n\
             rmdir {mp} 2>/dev/null\n\
             return 0",
            mp = quote(&self.mount_point),
            mpt = self.mount_point,
        )
    }

    fn verify(&self) -> String {
        format!(
            "out=$(lvs --noheadings --separator : -o lv_attr,snap_percent {lv} 2>&1) || {{ echo \"lvs failed: $out\"; return 71; }}\n\
             out=$(echo $out); attr=${{out%%:*}}; pct=${{out#*:}}\n\
             say \"data snapshot_usage ${{pct:-?}}\"\n\
             case \"$attr\" in ????I*|S*) echo \"snapshot {lvt} overflowed (attr $attr): the backup read a torn snapshot; raise snapshot.size\"; return 71 ;; esac\n\
             case \"$pct\" in 100*) echo \"snapshot {lvt} is full ($pct%): the backup read a torn snapshot; raise snapshot.size\"; return 71 ;; esac\n\
             return 0",
            lv = quote(&self.lv()),
            lvt = self.lv(),
        )
    }

    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("backend".into(), self.name().into()),
            (
                "snapshot".into(),
                format!("{} ({})", self.lv(), mapper_path(&self.vg, &self.snap_name)),
            ),
            ("snapshot size".into(), format!("{} MiB", self.size_mib())),
            (
                "mount".into(),
                format!(
                    "{} -t {}{}",
                    self.mount_point,
                    self.fstype,
                    Self::mount_options(&self.fstype)
                        .map(|o| format!(" -o {o}"))
                        .unwrap_or_default()
                ),
            ),
        ]
    }
}

/// Thin LVM snapshot: `lvcreate --snapshot` of a thin volume (no size: it shares the thin pool).
/// The pool's data and metadata usage is checked before (refused at 90 %) and after the transfer
/// (a pool that filled up fails the backup). Mount, unmount and removal are those of [`LvmThick`].
pub struct LvmThin {
    pub thick: LvmThick,
}

impl LvmThin {
    fn pool_usage(&self, what: &str, limit: u32, code: u32) -> String {
        let msg = if code == 71 {
            "it filled up during the transfer: the backup is torn"
        } else {
            "no room for a thin snapshot"
        };
        let lv = quote(&format!("{}/{}", self.thick.vg, self.thick.origin));
        let lvt = format!("{}/{}", self.thick.vg, self.thick.origin);
        format!(
            "pool=$(lvs --noheadings -o pool_lv {lv} 2>&1) || {{ echo \"lvs failed: $pool\"; return {code}; }}\n\
             pool=$(echo $pool)\n\
             [ -n \"$pool\" ] || {{ echo \"{lvt} is not a thin volume\"; return {code}; }}\n\
             u=$(lvs --noheadings --separator : -o data_percent,metadata_percent {vg}/\"$pool\" 2>&1) || {{ echo \"lvs failed: $u\"; return {code}; }}\n\
             u=$(echo $u); d=${{u%%:*}}; m=${{u#*:}}; d=${{d%%.*}}; m=${{m%%.*}}\n\
             say \"data thin_pool_{what} data=${{d}}% metadata=${{m}}%\"\n\
             if [ \"${{d:-100}}\" -ge {limit} ] || [ \"${{m:-100}}\" -ge {limit} ]; then echo \"thin pool {vgt}/$pool is at ${{d}}% data, ${{m}}% metadata ({what}): {msg}\"; return {code}; fi",
            vg = quote(&self.thick.vg),
            vgt = self.thick.vg,
        )
    }
}

impl SnapshotBackend for LvmThin {
    fn name(&self) -> &'static str {
        "lvm-thin"
    }
    fn check_room(&self) -> String {
        self.pool_usage("before", 90, 23)
    }
    fn clear_stale(&self) -> String {
        self.thick.clear_stale()
    }
    fn create(&self) -> String {
        format!(
            "lvcreate --snapshot --setactivationskip n --name {name} {origin}",
            name = quote(&self.thick.snap_name),
            origin = quote(&format!("{}/{}", self.thick.vg, self.thick.origin)),
        )
    }
    fn remove(&self) -> String {
        self.thick.remove()
    }
    fn mount(&self) -> String {
        self.thick.mount()
    }
    fn umount(&self) -> String {
        self.thick.umount()
    }
    fn verify(&self) -> String {
        format!("{}\nreturn 0", self.pool_usage("after", 100, 71))
    }
    fn describe(&self) -> Vec<(String, String)> {
        let mut d = self.thick.describe();
        d[0] = ("backend".into(), "lvm-thin".into());
        d.retain(|(k, _)| k != "snapshot size");
        d
    }
}

/// ploop snapshot (OpenVZ 7 / vzctl 4.x): `vzctl snapshot` / `snapshot-mount` / `snapshot-umount` /
/// `snapshot-delete`, the openvz.org "Ploop/Backup" recipe. The mounted snapshot is the VE's `/`.
/// Its snapshots are named `bpcovz-<VEID>-<run id>`, so leftovers are recognised.
pub struct Ploop {
    pub veid: VeId,
    pub uuid: String,
    pub snap_name: String,
    pub mount_point: String,
    pub private: String,
    /// Free space the private area's filesystem must have for the delta (snapshot.size).
    pub reserve_bytes: u64,
}

impl Ploop {
    fn listed(&self) -> String {
        format!(
            "vzctl --skiplock snapshot-list {id} -H 2>/dev/null | grep -q {u}",
            id = quote(self.veid.as_str()),
            u = quote(&format!("{{{}}}", self.uuid))
        )
    }
}

impl SnapshotBackend for Ploop {
    fn name(&self) -> &'static str {
        "ploop"
    }

    fn check_room(&self) -> String {
        format!(
            "avail=$(df -P -k {p} 2>/dev/null | awk 'NR==2 {{print $4}}')\n\
             case \"$avail\" in ''|*[!0-9]*) echo \"cannot read the free space of {pt}\"; return 23 ;; esac\n\
             if [ $((avail * 1024)) -lt {need} ]; then echo \"the filesystem of {pt} has $((avail * 1024)) bytes free; the ploop delta may need {need} (snapshot.size)\"; return 23; fi\n\
             say \"data vg_free $((avail * 1024))\"",
            p = quote(&self.private),
            pt = self.private,
            need = self.reserve_bytes,
        )
    }

    fn clear_stale(&self) -> String {
        format!(
            "for mp in {base}/mnt/{pre}{id}-* {base}/mnt/{pre}{id}-*.rw; do\n\
             \x20 [ -d \"$mp\" ] || continue\n\
             \x20 case \"$mp\" in *.ro) continue ;; esac\n\
             \x20 if mountpoint -q \"$mp\"; then echo \"unmounting stale $mp\"; umount \"$mp\" || umount -l \"$mp\"; fi\n\
             \x20 rmdir \"$mp\" 2>/dev/null\n\
             done\n\
             vzctl --skiplock snapshot-list {idq} -H 2>/dev/null | while read -r u n; do\n\
             \x20 case \"$n\" in {pre}{id}-*) u=${{u#\\{{}}; u=${{u%\\}}}}; echo \"removing stale ploop snapshot $n ($u)\"\n\
             \x20   vzctl --skiplock snapshot-umount {idq} --id \"$u\" 2>/dev/null; vzctl --skiplock snapshot-delete {idq} --id \"$u\" ;; esac\n\
             done\n\
             rmdir {base}/mnt/{pre}{id}-*.ro 2>/dev/null\n\
             return 0",
            base = HN_STATE_DIR,
            pre = SNAP_PREFIX,
            id = self.veid,
            idq = quote(self.veid.as_str()),
        )
    }

    fn create(&self) -> String {
        format!(
            "vzctl --skiplock snapshot {id} --id {u} --name {n} --skip-suspend --skip-config",
            id = quote(self.veid.as_str()),
            u = quote(&self.uuid),
            n = quote(&self.snap_name)
        )
    }

    fn remove(&self) -> String {
        format!(
            "d=1; n=0\n\
             while {listed}; do\n\
             \x20 vzctl --skiplock snapshot-delete {id} --id {u} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 8 ]; then echo \"giving up: ploop snapshot {un} of VE {idt} is still there; run bpc-ovz sweep\"; return 1; fi\n\
             \x20 echo \"snapshot-delete failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 16 ] && d=16\n\
             done\n\
             return 0",
            listed = self.listed(),
            id = quote(self.veid.as_str()),
            u = quote(&self.uuid),
            un = self.snap_name,
            idt = self.veid,
        )
    }

    // snapshot-mount is read-only: an overlay (the snapshot below, a tmpfs above) gives the writable
    // view etc/vzdump is added to, without changing the snapshot.
    fn mount(&self) -> String {
        format!(
            "mkdir -p {ro} {rw} {mp} || return 30\n\
             vzctl --skiplock snapshot-mount {id} --id {u} --target {ro} || return 31\n\
             mount -t tmpfs -o mode=0700 bpcovz-upper {rw} && mkdir -p {rw}/u {rw}/w || return 32\n\
             mount -t overlay bpcovz-overlay -o lowerdir={ro},upperdir={rw}/u,workdir={rw}/w {mp}",
            ro = quote(&format!("{}.ro", self.mount_point)),
            rw = quote(&format!("{}.rw", self.mount_point)),
            mp = quote(&self.mount_point),
            id = quote(self.veid.as_str()),
            u = quote(&self.uuid)
        )
    }

    fn umount(&self) -> String {
        format!(
            "d=1; n=0\n\
             while mountpoint -q {mp}; do\n\
             \x20 umount {mp} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 7 ]; then echo \"{mpt} still busy: detaching it lazily\"; umount -l {mp}; break; fi\n\
             \x20 echo \"umount {mpt} failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 8 ] && d=8\n\
             done\n\
             mountpoint -q {rw} && umount {rw}\n\
             d=1; n=0\n\
             while mountpoint -q {ro}; do\n\
             \x20 vzctl --skiplock snapshot-umount {id} --id {u} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 7 ]; then umount -l {ro}; break; fi\n\
             \x20 echo \"snapshot-umount failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 8 ] && d=8\n\
             done\n\
             rmdir {mp} {ro} {rw} 2>/dev/null\n\
             return 0",
            ro = quote(&format!("{}.ro", self.mount_point)),
            rw = quote(&format!("{}.rw", self.mount_point)),
            mp = quote(&self.mount_point),
            mpt = self.mount_point,
            id = quote(self.veid.as_str()),
            u = quote(&self.uuid)
        )
    }

    fn verify(&self) -> String {
        format!(
            "if ! {listed}; then echo \"ploop snapshot {n} vanished during the transfer\"; return 71; fi\nsay \"data snapshot_usage n/a\"\nreturn 0",
            listed = self.listed(),
            n = self.snap_name
        )
    }

    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("backend".into(), "ploop".into()),
            (
                "snapshot".into(),
                format!("{} {{{}}} of {}", self.snap_name, self.uuid, self.private),
            ),
            (
                "mount".into(),
                format!(
                    "{} (vzctl snapshot-mount on {}.ro, read-only, under a tmpfs overlay)",
                    self.mount_point, self.mount_point
                ),
            ),
        ]
    }
}

/// How a running VE is quiesced around the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `vzctl stop` → snapshot → `vzctl start` (consistent; seconds of downtime).
    Stop,
    /// `vzctl chkpnt --suspend` → snapshot → `vzctl chkpnt --resume` (memory kept; usually well
    /// under a second). A failed resume falls back to a (fast) stop and a start, loudly.
    Suspend,
    /// Snapshot without stopping (crash-consistent; no downtime).
    Live,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "stop" => Ok(Mode::Stop),
            "suspend" => Ok(Mode::Suspend),
            "live" | "snapshot" => Ok(Mode::Live),
            o => Err(format!("{o:?}: modes are stop, suspend and live")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stop => "stop",
            Mode::Suspend => "suspend",
            Mode::Live => "live",
        }
    }
}

/// The quiesce modes of one VE, in order: the first that works before the snapshot exists is
/// used (e.g. suspend, then stop). All of it runs inside the one downtime script.
pub struct ModeChain {
    pub veid: VeId,
    /// File that records `RUNNING MODE` (`1 stop`, `0 none`, ...) for the undo.
    pub state_file: String,
    pub modes: Vec<Mode>,
}

impl ModeChain {
    pub fn stop_only(veid: &VeId, state_file: String) -> ModeChain {
        ModeChain {
            veid: veid.clone(),
            state_file,
            modes: vec![Mode::Stop],
        }
    }
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.modes.iter().map(|m| m.name()).collect();
        if names.len() == 1 {
            names[0].to_string()
        } else {
            format!(
                "{} (in this order: the first that works)",
                names.join(", then ")
            )
        }
    }
}

impl Quiesce for ModeChain {
    fn library(&self) -> String {
        format!(
            "ve_running() {{ case \"$(vzctl status {id} 2>&1)\" in *' running'*) return 0 ;; esac; return 1; }}\n\
             ve_start() {{\n\
             \x20 n=0\n\
             \x20 while :; do\n\
             \x20   vzctl --skiplock start {id}; rc=$?\n\
             \x20   case $rc in 0|32) return 0 ;; esac\n\
             \x20   n=$((n+1)); [ $n -ge 3 ] && {{ echo \"vzctl start {id} failed $n times (exit $rc)\"; return $rc; }}\n\
             \x20   echo \"vzctl start {id} failed (exit $rc); retrying\"; sleep 2\n\
             \x20 done\n\
             }}\n\
             q_stop_before() {{ vzctl --skiplock stop {id}; }}\n\
             q_stop_after() {{ ve_start; }}\n\
             q_suspend_before() {{ vzctl --skiplock chkpnt {id} --suspend; }}\n\
             q_suspend_after() {{\n\
             \x20 vzctl --skiplock chkpnt {id} --resume && return 0\n\
             \x20 echo \"WARNING: resume of VE {idt} failed: stopping and starting it instead\"; say \"data resume_failed 1\"\n\
             \x20 vzctl --skiplock stop {id} --fast; ve_start\n\
             }}\n\
             q_live_before() {{ return 0; }}\n\
             q_live_after() {{ return 0; }}",
            id = quote(self.veid.as_str()),
            idt = self.veid,
        )
    }

    fn before(&self) -> String {
        let modes: Vec<&str> = self.modes.iter().map(|m| m.name()).collect();
        format!(
            "if ve_running; then running=1; else running=0; fi\n\
             mode=none\n\
             echo \"$running $mode\" > {sf}\n\
             t0=$(now_ms)\n\
             if [ $running = 1 ]; then\n\
             \x20 for m in {modes}; do\n\
             \x20   q_${{m}}_before; qrc=$?\n\
             \x20   if [ $qrc = 0 ]; then mode=$m; break; fi\n\
             \x20   echo \"mode $m failed before the snapshot (exit $qrc)\"\n\
             \x20   ve_running || ve_start\n\
             \x20 done\n\
             \x20 if [ $mode = none ]; then echo \"no mode ({modes}) could quiesce VE {idt}\"; ve_running || ve_start; return 40; fi\n\
             fi\n\
             echo \"$running $mode\" > {sf}\n\
             say \"data mode $mode\"\n\
             t1=$(now_ms)",
            sf = quote(&self.state_file),
            modes = modes.join(" "),
            idt = self.veid,
        )
    }

    fn after(&self) -> String {
        "t2=$(now_ms)\n\
         src=0\n\
         if [ $mode != none ]; then q_${mode}_after; src=$?; fi\n\
         t3=$(now_ms)\n\
         case $mode in\n\
         \x20 none|live) say \"data downtime_ms 0\" ;;\n\
         \x20 *) say \"data downtime_ms $((t3-t0))\"\n\
         \x20    case $mode in stop) back=start ;; *) back=resume ;; esac\n\
         \x20    say \"data downtime_parts $mode=$((t1-t0))ms snapshot=$((t2-t1))ms $back=$((t3-t2))ms\" ;;\n\
         esac"
            .to_string()
    }

    fn ensure(&self) -> String {
        format!(
            "set -- $(cat {sf} 2>/dev/null)\n\
             if [ \"${{1:-0}}\" = 1 ] && ! ve_running; then echo \"VE {idt} is down: starting it\"; ve_start || return 1; fi\n\
             rm -f {sf}",
            sf = quote(&self.state_file),
            idt = self.veid,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thick(fs: &str) -> LvmThick {
        LvmThick {
            vg: "vg-data".into(),
            origin: "vz".into(),
            snap_name: "bpcovz-101-0a1b2c3d".into(),
            size_bytes: 1 << 30,
            fstype: fs.into(),
            mount_point: "/run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d".into(),
            veid: VeId::parse("101").unwrap(),
        }
    }

    fn ploop() -> Ploop {
        Ploop {
            veid: VeId::parse("101").unwrap(),
            uuid: "0a1b2c3d-0000-0000-0000-000000000000".into(),
            snap_name: "bpcovz-101-0a1b2c3d".into(),
            mount_point: "/run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d".into(),
            private: "/vz/private/101".into(),
            reserve_bytes: 1 << 30,
        }
    }

    #[test]
    fn fragments_are_valid_sh() {
        let t = thick("xfs");
        let q = ModeChain {
            veid: VeId::parse("101").unwrap(),
            state_file: "/run/bpc-ovz/state.x".into(),
            modes: vec![Mode::Suspend, Mode::Stop, Mode::Live],
        };
        for frag in [
            t.check_room(),
            t.clear_stale(),
            t.create(),
            t.remove(),
            t.mount(),
            t.umount(),
            t.verify(),
            q.library(),
            ploop().check_room(),
            ploop().clear_stale(),
            ploop().create(),
            ploop().remove(),
            ploop().mount(),
            ploop().umount(),
            ploop().verify(),
            LvmThin {
                thick: thick("ext4"),
            }
            .check_room(),
            LvmThin {
                thick: thick("ext4"),
            }
            .create(),
            LvmThin {
                thick: thick("ext4"),
            }
            .verify(),
            q.before(),
            q.after(),
            q.ensure(),
        ] {
            let body = format!("f() {{\n{frag}\n}}");
            let st = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&body)
                .status()
                .unwrap();
            assert!(st.success(), "{frag}");
        }
    }

    #[test]
    fn xfs_gets_nouuid_ext4_does_not() {
        assert!(thick("xfs").mount().contains("-o nouuid"));
        assert!(!thick("ext4").mount().contains("nouuid"));
        assert_eq!(
            thick("ext4").create(),
            "lvcreate --size 1024m --snapshot --name bpcovz-101-0a1b2c3d vg-data/vz"
        );
    }
}
