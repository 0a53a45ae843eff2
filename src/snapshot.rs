//! Snapshot backends and quiesce modes: shell fragments the plan builder composes into steps.
//!
//! A backend ([`LvmThick`], [`LvmThin`], [`Ploop`]) knows how to check room for, create, mount,
//! verify, unmount and remove one snapshot; which one a VE gets is [`choose_backend`]'s answer to
//! `snapshot.backend` ([`BackendChoice`]: `auto` detects it from the VE's [`Storage`]). A mode chain
//! ([`ModeChain`]: stop, suspend, live, in fallback order) quiesces a VE around the snapshot.
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

/// A test that `mp` (a quoted word, or `"$var"`) is a mount point: `mountpoint -q`, or, when its
/// `stat` fails (an XFS that was shut down, a dead FUSE), its line in `/proc/mounts`.
pub fn is_mounted(mp: &str) -> String {
    format!("{{ mountpoint -q {mp} || grep -qF -- \" \"{mp}\" \" /proc/mounts; }}")
}

/// `vzctl snapshot-list` with the two fields bpc-ovz reads, in a fixed order: its default order
/// (`parent_uuid,current,uuid,date,name`, vzctl 4.x src/snapshot-list.c) has empty fields that
/// `read` would shift.
pub fn ploop_snapshot_list(veid_quoted: &str) -> String {
    format!("vzctl --skiplock snapshot-list {veid_quoted} -H -o uuid,name")
}

/// A `case`/glob pattern for the names of bpc-ovz's snapshots (LVs, ploop) of one VE (`bpcovz-VEID-` and a
/// run id of 8 lowercase hex digits, as [`crate::admin::parse_snap_name`] reads them).
pub fn snap_name_pattern(veid: &VeId) -> String {
    format!("{SNAP_PREFIX}{veid}-{}", "[0-9a-f]".repeat(8))
}

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
    /// After the transfer: fails if the snapshot overflowed or became invalid. Contract (relied
    /// on by `backup::summarize` when the transfer itself failed): the fragment emits a `say
    /// "data ..."` datum only once it has read the snapshot's state, so a failure *with* a datum
    /// means "torn" (exit 73) and one *without* means "could not check" (the transfer's own
    /// failure is reported).
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
    /// `noatime` always: reading the snapshot for the transfer must not write access times
    /// into its COW space (or a thin pool).
    pub fn mount_options(fstype: &str) -> &'static str {
        match fstype {
            // The snapshot carries the origin's UUID, which XFS otherwise refuses to mount.
            "xfs" => "nouuid,noatime",
            // ext3/ext4: mounted read-write without `noload`, so the journal is replayed into the
            // COW area (as vzdump does) and etc/vzdump can be added.
            _ => "noatime",
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
        // Exactly this VE's names (`bpcovz-1-*` would also match VE `1-a`'s).
        let pat = snap_name_pattern(&self.veid);
        format!(
            "for mp in {base}/mnt/{pat} {base}/mnt/{pat}.*; do\n\
             \x20 if {mounted}; then echo \"unmounting stale $mp\"; umount \"$mp\" || umount -l \"$mp\"; fi\n\
             \x20 rmdir \"$mp\" 2>/dev/null\n\
             done\n\
             lvs --noheadings -o lv_name {vg} 2>/dev/null | while read -r n; do\n\
             \x20 case \"$n\" in {pat}) echo \"removing stale snapshot {vgt}/$n\"; lvremove -f {vg}/\"$n\" ;; esac\n\
             done\n\
             return 0",
            base = HN_STATE_DIR,
            pat = pat,
            mounted = is_mounted("\"$mp\""),
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
            // The usual case first (the snapshot is there and not busy): one LVM command.
            "out=$(lvremove -f {lv} 2>&1) && {{ printf '%s\\n' \"$out\"; return 0; }}\n\
             lvs {lv} >/dev/null 2>&1 || return 0\n\
             printf '%s\\n' \"$out\"; echo \"lvremove {lvt} failed; retrying in 1s\"; sleep 1\n\
             d=2; n=1\n\
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
        let opts = Self::mount_options(&self.fstype);
        format!(
            "mkdir -p {mp} || return 30\nmount -t {fs} -o {opts} {dev} {mp}",
            mp = quote(&self.mount_point),
            fs = quote(&self.fstype),
            dev = quote(&format!("/dev/{}/{}", self.vg, self.snap_name)),
        )
    }

    fn umount(&self) -> String {
        format!(
            "d=1; n=0\n\
             while {mounted}; do\n\
             \x20 umount {mp} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 7 ]; then echo \"{mpt} still busy: detaching it lazily\"; umount -l {mp}; break; fi\n\
             \x20 echo \"umount {mpt} failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 8 ] && d=8\n\
             done\n\
             rmdir {mp} 2>/dev/null\n\
             return 0",
            mounted = is_mounted(&quote(&self.mount_point)),
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
                    "{} -t {} -o {}",
                    self.mount_point,
                    self.fstype,
                    Self::mount_options(&self.fstype)
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
            "{list} 2>/dev/null | grep -qF -- {u}",
            list = ploop_snapshot_list(&quote(self.veid.as_str())),
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

    // The overlay and its tmpfs first (the glob sorts `NAME` before `NAME.ro` and `NAME.rw`), then
    // every snapshot named like ours: unmounted (vzctl's way, then plainly) and deleted; then any
    // `.ro` mount whose snapshot is gone already.
    fn clear_stale(&self) -> String {
        format!(
            "for mp in {base}/mnt/{pat} {base}/mnt/{pat}.*; do\n\
             \x20 case \"$mp\" in *.ro) continue ;; esac\n\
             \x20 if {mounted}; then echo \"unmounting stale $mp\"; umount \"$mp\" || umount -l \"$mp\"; fi\n\
             \x20 rmdir \"$mp\" 2>/dev/null\n\
             done\n\
             {list} 2>/dev/null | while read -r u n; do\n\
             \x20 case \"$n\" in {pat}) ;; *) continue ;; esac\n\
             \x20 u=${{u#\\{{}}; u=${{u%\\}}}}; mp={base}/mnt/\"$n\".ro\n\
             \x20 echo \"removing stale ploop snapshot $n ($u)\"\n\
             \x20 if {mounted}; then vzctl --skiplock snapshot-umount {idq} --id \"$u\" </dev/null || umount \"$mp\" || umount -l \"$mp\"; fi\n\
             \x20 rmdir \"$mp\" 2>/dev/null\n\
             \x20 vzctl --skiplock snapshot-delete {idq} --id \"$u\" </dev/null\n\
             done\n\
             for mp in {base}/mnt/{pat}.ro; do\n\
             \x20 if {mounted}; then echo \"unmounting stale $mp\"; umount \"$mp\" || umount -l \"$mp\"; fi\n\
             \x20 rmdir \"$mp\" 2>/dev/null\n\
             done\n\
             return 0",
            base = HN_STATE_DIR,
            idq = quote(self.veid.as_str()),
            list = ploop_snapshot_list(&quote(self.veid.as_str())),
            pat = snap_name_pattern(&self.veid),
            mounted = is_mounted("\"$mp\""),
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
             while {mp_mounted}; do\n\
             \x20 umount {mp} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 7 ]; then echo \"{mpt} still busy: detaching it lazily\"; umount -l {mp}; break; fi\n\
             \x20 echo \"umount {mpt} failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 8 ] && d=8\n\
             done\n\
             if {rw_mounted}; then umount {rw} || umount -l {rw}; fi\n\
             d=1; n=0\n\
             while {ro_mounted}; do\n\
             \x20 vzctl --skiplock snapshot-umount {id} --id {u} && break\n\
             \x20 n=$((n+1)); if [ $n -ge 7 ]; then umount -l {ro}; break; fi\n\
             \x20 echo \"snapshot-umount failed; retrying in ${{d}}s\"; sleep $d; d=$((d*2)); [ $d -gt 8 ] && d=8\n\
             done\n\
             rmdir {mp} {ro} {rw} 2>/dev/null\n\
             return 0",
            mp_mounted = is_mounted(&quote(&self.mount_point)),
            rw_mounted = is_mounted(&quote(&format!("{}.rw", self.mount_point))),
            ro_mounted = is_mounted(&quote(&format!("{}.ro", self.mount_point))),
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

/// Which snapshot backend a VE gets: `snapshot.backend`, or per VE `ves: {host: {backend: ...}}`.
/// `Auto` detects it from how the VE's private area is stored (a ploop image, a thin LV, a thick
/// LV); the others force one, and a VE it does not fit is refused before any downtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    Auto,
    LvmThick,
    LvmThin,
    Ploop,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Result<BackendChoice, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "lvm-thick" => Ok(BackendChoice::LvmThick),
            "lvm-thin" => Ok(BackendChoice::LvmThin),
            "ploop" => Ok(BackendChoice::Ploop),
            o => Err(format!(
                "{o:?}: backends are auto, lvm-thick, lvm-thin and ploop"
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::LvmThick => "lvm-thick",
            BackendChoice::LvmThin => "lvm-thin",
            BackendChoice::Ploop => "ploop",
        }
    }
}

/// How a VE's private area is stored, as the probe saw it: what `auto` picks from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A ploop image (`root.hdd/DiskDescriptor.xml`, or `VE_LAYOUT=ploop`).
    Ploop,
    /// A thick LV (`lv_attr` `-wi...`/`owi...`).
    ThickLv,
    /// A thin volume (`lv_attr` `V...`) in a thin pool.
    ThinLv,
    /// Neither: not on LVM, or on a snapshot LV. The string says what it is.
    Other(String),
}

impl Storage {
    /// The backend `auto` picks, if any.
    pub fn detected(&self) -> Option<BackendChoice> {
        match self {
            Storage::Ploop => Some(BackendChoice::Ploop),
            Storage::ThickLv => Some(BackendChoice::LvmThick),
            Storage::ThinLv => Some(BackendChoice::LvmThin),
            Storage::Other(_) => None,
        }
    }
    fn what(&self) -> String {
        match self {
            Storage::Ploop => "a ploop image".into(),
            Storage::ThickLv => "a thick LV".into(),
            Storage::ThinLv => "a thin LV".into(),
            Storage::Other(w) => w.clone(),
        }
    }
}

/// The backend a VE gets: `choice` (from config key `key`) against its `storage`. `Ok` gives the
/// backend and how it was chosen (for `plan` and the XferLOG); `Err` the reason a forced backend
/// does not fit (the caller refuses the run before any downtime), or why nothing fits.
///
/// A forced `lvm-thick` on a thin volume is allowed: lvm2 makes a COW (thick) snapshot of a thin
/// origin when `lvcreate --snapshot` is given a size ("Thin snapshot is created when the origin is a
/// thin volume and the size IS NOT specified", lvcreate(8); RHEL 6 LVM Administration 5.4.6:
/// "`lvcreate -s vg/thinvolume -L10M` will not create a thin snapshot"). Its COW space comes from
/// the VG's free extents, not the pool, and is `snapshot.size` — exactly what [`LvmThick`] does.
pub fn choose_backend(
    choice: BackendChoice,
    key: &str,
    private: &str,
    storage: &Storage,
) -> Result<(BackendChoice, String), String> {
    let what = storage.what();
    match (choice, storage.detected()) {
        (BackendChoice::Auto, Some(b)) => Ok((b, format!("detected: {what}"))),
        (BackendChoice::Auto, None) => Err(format!("{private} is on {what}: no snapshot possible")),
        (c, Some(d)) if c == d => Ok((c, format!("forced by {key}; detected the same"))),
        (BackendChoice::LvmThick, Some(BackendChoice::LvmThin)) => Ok((
            BackendChoice::LvmThick,
            format!(
                "forced by {key}: a COW snapshot of a thin LV, its snapshot.size from the VG's free space; detected: lvm-thin"
            ),
        )),
        (c, _) => {
            let why = match (c, storage) {
                (BackendChoice::Ploop, _) => {
                    "no root.hdd/DiskDescriptor.xml there and VE_LAYOUT is not ploop"
                }
                (_, Storage::Ploop) => {
                    "an LV snapshot would hold the image file, not the VE's tree (use ploop or auto)"
                }
                (BackendChoice::LvmThin, Storage::ThickLv) => {
                    "a thin snapshot needs a thin volume (use lvm-thick or auto)"
                }
                _ => "an LVM snapshot needs an LV",
            };
            Err(format!(
                "{key} forces backend {} but {private} is on {what}: {why}",
                c.name()
            ))
        }
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
    /// `stop`, or `suspend → stop (fallback)`, `suspend → stop → live (fallbacks, in order)`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.modes.iter().map(|m| m.name()).collect();
        match names.len() {
            0 | 1 => names.first().copied().unwrap_or("stop").to_string(),
            2 => format!("{} (fallback)", names.join(" → ")),
            _ => format!("{} (fallbacks, in order)", names.join(" → ")),
        }
    }

    /// The `mode` and `fallback` facts of `plan`.
    pub fn facts(&self, running: bool) -> Vec<(String, String)> {
        let first = self.modes.first().map(|m| m.name()).unwrap_or("stop");
        let mode = if running {
            first.to_string()
        } else {
            format!(
                "{first} (configured; the VE is not running, so it is neither stopped nor suspended)"
            )
        };
        let fallback = match self.modes.len() {
            0 | 1 => "none".to_string(),
            _ => {
                let rest: Vec<&str> = self.modes[1..].iter().map(|m| m.name()).collect();
                format!(
                    "{} (used when {first} fails before the snapshot exists)",
                    rest.join(", then ")
                )
            }
        };
        vec![("mode".into(), mode), ("fallback".into(), fallback)]
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
            "{collect}\n\
             set -- $(cat {sf} 2>/dev/null)\n\
             if [ \"${{1:-0}}\" = 1 ] && ! ve_running; then echo \"VE {idt} is down: starting it\"; ve_start || return 1; fi\n\
             rm -f {sf}",
            collect = self.collect(),
            sf = quote(&self.state_file),
            idt = self.veid,
        )
    }
}

impl ModeChain {
    /// The file a background `after` writes its output and exit status to; it holds an
    /// exclusive `flock` on its own open of the file while it runs.
    pub fn start_file(&self) -> String {
        format!("{}.start", self.state_file)
    }

    /// [`Quiesce::after`] run in the background, so that the VE's start overlaps what follows
    /// (mount, transfer). It takes the lock on [`Self::start_file`] before it forks, so a
    /// [`Self::collect`] that follows cannot miss it; the start itself runs without the lock's fd
    /// (nothing the VE's start spawns can hold it). Its output, `say` data included, and a last
    /// line `bpcovz-start-rc RC` go to the file. Returns non-zero if it could not be started in
    /// the background; then nothing was forked and the caller runs `after` itself.
    pub fn after_background(&self) -> String {
        format!(
            "rm -f {bf}\n\
             exec 9>>{bf} && flock 9 || {{ exec 9>&-; rm -f {bf}; return 1; }}\n\
             (\n\
             \x20 {{\n{after}\n}} 9>&-\n\
             \x20 echo \"bpcovz-start-rc $src\"\n\
             ) </dev/null >>{bf} 2>&1 &\n\
             exec 9>&-\n\
             return 0",
            bf = quote(&self.start_file()),
            after = self.after(),
        )
    }

    /// Wait for a background `after` (if one ran): replay its output and leave its exit status
    /// in `$src` (empty if it left none) and `bg=1`; `bg=0` if none ran. Removes the file.
    pub fn collect(&self) -> String {
        format!(
            "bg=0; src=\n\
             if [ -e {bf} ]; then\n\
             \x20 bg=1\n\
             \x20 if exec 9<{bf}; then flock 9; exec 9<&-; fi\n\
             \x20 while IFS= read -r l || [ -n \"$l\" ]; do\n\
             \x20   case \"$l\" in\n\
             \x20     'bpcovz-start-rc '*) src=${{l#bpcovz-start-rc }} ;;\n\
             \x20     *) printf '%s\\n' \"$l\" ;;\n\
             \x20   esac\n\
             \x20 done < {bf}\n\
             \x20 rm -f {bf}\n\
             fi",
            bf = quote(&self.start_file()),
        )
    }

    /// The step that waits for a background `after`: fails (42) if the VE did not come back.
    pub fn await_started(&self) -> String {
        format!(
            "{collect}\n\
             [ $bg = 1 ] || return 0\n\
             case \"$src\" in\n\
             \x20 0) return 0 ;;\n\
             \x20 '') set -- $(cat {sf} 2>/dev/null)\n\
             \x20    if [ \"${{1:-0}}\" != 1 ] || ve_running; then return 0; fi\n\
             \x20    echo \"the start of VE {idt} left no exit status and the VE is not running\"; return 42 ;;\n\
             \x20 *) echo \"VE {idt} did not start again (exit $src)\"; return 42 ;;\n\
             esac",
            collect = self.collect(),
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
            q.after_background(),
            q.collect(),
            q.await_started(),
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
    fn backend_detected_or_forced_or_refused() {
        use BackendChoice::*;
        let key = "ves.ve1.backend";
        let p = "/vz/private/1";
        let pick = |c, s: &Storage| choose_backend(c, key, p, s);
        assert_eq!(pick(Auto, &Storage::Ploop).unwrap().0, Ploop);
        assert_eq!(pick(Auto, &Storage::ThinLv).unwrap().0, LvmThin);
        let (b, how) = pick(Auto, &Storage::ThickLv).unwrap();
        assert_eq!((b, how.as_str()), (LvmThick, "detected: a thick LV"));
        let (b, how) = pick(Ploop, &Storage::Ploop).unwrap();
        assert_eq!(b, Ploop);
        assert!(how.contains("forced by ves.ve1.backend"), "{how}");
        // A thick (COW) snapshot of a thin volume is what lvm2 makes when given a size.
        let (b, how) = pick(LvmThick, &Storage::ThinLv).unwrap();
        assert_eq!(b, LvmThick);
        assert!(how.contains("COW snapshot of a thin LV"), "{how}");
        for (c, s, want) in [
            (
                LvmThin,
                Storage::ThickLv,
                "a thin snapshot needs a thin volume",
            ),
            (Ploop, Storage::ThickLv, "no root.hdd/DiskDescriptor.xml"),
            (LvmThick, Storage::Ploop, "would hold the image file"),
            (LvmThin, Storage::Ploop, "would hold the image file"),
            (
                LvmThick,
                Storage::Other("tmpfs (tmpfs at /), which is not an LVM logical volume".into()),
                "an LVM snapshot needs an LV",
            ),
        ] {
            let e = pick(c, &s).unwrap_err();
            assert!(
                e.starts_with(&format!("{key} forces backend {} but {p} is on ", c.name()))
                    && e.contains(want),
                "{e}"
            );
        }
        let e = pick(Auto, &Storage::Other("x".into())).unwrap_err();
        assert_eq!(e, "/vz/private/1 is on x: no snapshot possible");
        assert!(BackendChoice::parse("thin").is_err());
        for c in [Auto, LvmThick, LvmThin, Ploop] {
            assert_eq!(BackendChoice::parse(c.name()), Ok(c));
        }
    }

    /// `is_mounted` sees a mount in /proc/mounts even when `mountpoint` cannot stat it.
    #[test]
    fn is_mounted_falls_back_to_proc_mounts() {
        let d = tempfile::tempdir().unwrap();
        let mounts = d.path().join("mounts");
        std::fs::write(
            &mounts,
            "/dev/mapper/vg-bpcovz--1--0a1b2c3d /run/bpc-ovz/mnt/bpcovz-1-0a1b2c3d xfs rw 0 0\n",
        )
        .unwrap();
        let t = |mp: &str| {
            let body =
                is_mounted(&quote(mp)).replace("/proc/mounts", &mounts.display().to_string());
            std::process::Command::new("sh")
                .arg("-c")
                // A `mountpoint` whose stat fails, as on a shut-down XFS.
                .arg(format!("mountpoint() {{ return 1; }}\n{body}"))
                .status()
                .unwrap()
                .success()
        };
        assert!(t("/run/bpc-ovz/mnt/bpcovz-1-0a1b2c3d"));
        assert!(!t("/run/bpc-ovz/mnt/bpcovz-1-0a1b2c3"));
        assert!(!t("/run/bpc-ovz/mnt/bpcovz-1-0a1b2c3d.ro"));
    }

    #[test]
    fn xfs_gets_nouuid_ext4_does_not_both_noatime() {
        assert!(thick("xfs").mount().contains("-o nouuid,noatime "));
        assert!(
            thick("ext4").mount().contains("-t ext4 -o noatime "),
            "{}",
            thick("ext4").mount()
        );
        assert!(!thick("ext4").mount().contains("nouuid"));
        assert_eq!(
            thick("ext4").create(),
            "lvcreate --size 1024m --snapshot --name bpcovz-101-0a1b2c3d vg-data/vz"
        );
    }
}
