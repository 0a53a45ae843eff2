//! The VM tier: bpc-ovz, unchanged, against hardware nodes with a real kernel and real LVM.
//!
//! This machine's kernel has no device-mapper, so the simulated HNs (tests/simhn) imitate LVM.
//! Here two throw-away qemu guests (tests/vm: Debian's cloud kernel, busybox initramfs, real
//! sshd, rsync, lvm2, dm-snapshot, XFS and ext4; the project's vzctl/vzlist stand-ins, since no
//! OpenVZ kernel exists for them) are the HNs:
//!
//! | VM  | VG        | /vz  |
//! |-----|-----------|------|
//! | hn1 | `vg-data` | ext4 (a dash in the VG name: `/dev/mapper/vg--data-vz`) |
//! | hn2 | `vg0`     | xfs  (snapshots need `nouuid`; mounting replays the log into the COW) |
//!
//! Both VMs boot once per test process (in parallel) and serve every test, one test at a time;
//! each test uses its own VEs, stops them when done and checks that nothing is left behind. The
//! VMs are stopped by PID when the process exits (and by a watchdog if it is killed).
//!
//! Every test is `#[ignore]`d in the plain `cargo test` run: `contrib/test-all.sh` runs the tier
//! after the cargo tests with `cargo test --test vm -- --ignored --test-threads=1 --nocapture`.
//! If qemu cannot run, every test fails with one clear message; `BPC_OVZ_SKIP_VM=1` skips the
//! tier (and says so loudly). `BPC_OVZ_VM_KEEP=1` keeps the VM directories (console logs).
//!
//! Scenarios: the core ones (full and incremental backup, a stopped VE, a VG without room, a
//! restore into a running and into a stopped VE, `bpc-ovz plan` before a run listing exactly the
//! steps the run then executes) run as one choreography on a simulated HN and on hn1, whose
//! observable results must agree; a VE found on the second VM (XFS, by IP); COW overflow during
//! the transfer (exit 73 even when rsync fails first on the invalidated snapshot); `lvremove` while
//! the snapshot is held open; SIGKILL of bpc-ovz inside the downtime window and during the
//! transfer; a VE on a thin volume (bpc-ovz's lvm-thin backend, real dm-thin): a thin snapshot, a
//! pool 90 % full refused before any downtime, a pool filling up during the transfer.
//!
//! TCG guests are ~10x slower than a real HN, so the bpc-ovz config here raises `locate_timeout`
//! and `ssh.connect_timeout`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::*;

const TICKER: &str = "var/lib/ticker";

// ------------------------------------------------------------------------------------------
// VMs

fn vm_scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vm")
}

/// `target/vm-cache` (the image is cached there, keyed by a hash of its recipe).
fn image_cache() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("vm-cache")
}

/// One VM hardware node, as booted by `tests/vm/vm-up`.
struct Vm {
    name: String,
    vg: String,
    fs: String,
    pid: u32,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    /// ssh ControlMaster socket: the harness's commands share one login (~0.1 s instead of ~1 s).
    ctl: PathBuf,
    master: Mutex<Option<Child>>,
}

static TREES: AtomicUsize = AtomicUsize::new(0);

impl Vm {
    fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-p", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ServerAliveInterval=10",
                "-o",
                // Tells the guest's ForceCommand not to log the harness's commands in exec.log
                // (the master's SetEnv applies to every multiplexed session).
                "SetEnv=VZSIM_HARNESS=1",
            ])
            .arg("-o")
            .arg(format!("ControlPath={}", self.ctl.display()));
        c
    }

    fn start_master(&self) -> Result<(), String> {
        let child = self
            .ssh()
            .args(["-M", "-N", "-o", "ControlPersist=no", "root@127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ssh master for {}: {e}", self.name))?;
        *self.master.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let t = Instant::now();
        while !self.ctl.exists() {
            if t.elapsed() > Duration::from_secs(90) {
                return Err(format!("{}: the ssh master did not come up", self.name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn shutdown(&self) {
        if let Some(mut m) = self.master.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = Command::new(vm_scripts().join("vm-down"))
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .status();
    }
}

impl Node for Vm {
    fn name(&self) -> &str {
        &self.name
    }
    fn vg(&self) -> &str {
        &self.vg
    }
    fn exec(&self, script: &str) -> Output {
        let mut c = Command::new("timeout");
        c.arg("300")
            .arg(self.ssh().get_program())
            .args(self.ssh().get_args())
            .args(["-o", "ControlMaster=no", "root@127.0.0.1", "--", script]);
        run(&mut c)
    }
    fn create_ve(&self, veid: u32, hostname: &str, ip: &str, running: bool) {
        let onboot = if running { "yes" } else { "no" };
        let mut s = format!("ve-create-local {veid} '{hostname}' '{ip}' {onboot}");
        if running {
            s.push_str(&format!(" && vzctl start {veid} >/dev/null"));
        }
        self.exec_ok(&s);
    }
    /// The stand-in script's list, plus device-mapper devices of snapshots (real LVM only).
    fn leftovers(&self) -> Vec<String> {
        self.exec_ok(&format!(
            "{LEFTOVERS_SH}; dmsetup ls 2>/dev/null | grep bpcovz | sed 's/^/dm: /'; true"
        ))
        .lines()
        .map(String::from)
        .filter(|l| !l.trim().is_empty() && !l.contains("No devices found"))
        .collect()
    }
    fn tree(&self, path: &str, scratch: &Path) -> PathBuf {
        let n = TREES.fetch_add(1, Ordering::SeqCst);
        let dest = scratch.join(format!("{}-tree-{n}", self.name));
        std::fs::create_dir_all(&dest).expect("tree dir");
        let ssh: Vec<String> = std::iter::once(self.ssh().get_program())
            .chain(self.ssh().get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .chain(["-o".into(), "ControlMaster=no".into()])
            .collect();
        let o = run(Command::new("rsync")
            .args(["-aH", "--numeric-ids", "-e"])
            .arg(ssh.join(" "))
            .arg(format!("root@127.0.0.1:{}/", path.trim_end_matches('/')))
            .arg(format!("{}/", dest.display())));
        // 24: a file vanished (the ticker of a running VE renames its counter file).
        assert!(
            matches!(o.status.code(), Some(0) | Some(24)),
            "{}: copying {path} failed: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        dest
    }
    fn set_vg_free(&self, free: Option<u64>) {
        let vg = &self.vg;
        match free {
            Some(f) => {
                assert_eq!(f % (4 << 20), 0, "a multiple of the 4 MiB extent");
                self.exec_ok(&format!(
                    "n=$(vgs --noheadings -o vg_free_count {vg}); n=$((n - {})); \
                     lvcreate -q -y -Wn -Zn -l $n -n filler {vg} >/dev/null",
                    f >> 22
                ));
                let got = self.exec_ok(&format!(
                    "vgs --noheadings --units b --nosuffix -o vg_free {vg}"
                ));
                assert_eq!(got.trim(), f.to_string(), "{}: VG free space", self.name);
            }
            None => {
                self.exec_ok(&format!(
                    "if lvs {vg}/filler >/dev/null 2>&1; then lvremove -q -f {vg}/filler >/dev/null; fi"
                ));
            }
        }
    }
}

/// The booted VMs and a bpc-ovz config listing both (BackupPC 4 form, like tests/backup.rs).
struct Pool {
    dir: PathBuf,
    /// The ssh control sockets, in a short path under /tmp (a unix socket path has ~100 bytes).
    ctl_dir: PathBuf,
    vms: Vec<Vm>,
    key: PathBuf,
    known_hosts: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Pool {
    fn vm(&self, name: &str) -> &Vm {
        self.vms.iter().find(|v| v.name == name).expect("vm")
    }

    /// A config for both VMs with this snapshot size (written once per size).
    fn config_with(&self, snapshot_size: &str) -> PathBuf {
        let path = self.dir.join(format!("config-{snapshot_size}.yaml"));
        let mut y = String::from("hns:\n");
        for v in &self.vms {
            y.push_str(&format!(
                "  - host: 127.0.0.1\n    port: {}\n    user: root\n    name: {}\n",
                v.port, v.name
            ));
        }
        y.push_str(&format!(
            "ssh:\n  identity_files: [{}]\n  known_hosts: [{}]\n  agent: false\n  connect_timeout: 60s\n\
             locate_timeout: 120s\nsnapshot:\n  size: {snapshot_size}\nlog:\n  file: {}\n  level: debug\ncache: {}\n",
            self.key.display(),
            self.known_hosts.display(),
            self.log.display(),
            self.dir.join("ve-cache.json").display(),
        ));
        std::fs::write(&path, y).expect("config");
        path
    }

    fn teardown(&self) {
        for v in &self.vms {
            v.shutdown();
        }
        if std::env::var("BPC_OVZ_VM_KEEP").as_deref() == Ok("1") {
            eprintln!("VM tier: kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = std::fs::remove_dir_all(&self.ctl_dir);
    }
}

static POOL: OnceLock<Result<Pool, String>> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn teardown_at_exit() {
    if let Some(Ok(p)) = POOL.get() {
        p.teardown();
    }
}

fn cannot_run(what: String) -> String {
    format!(
        "VM tier cannot run: {what}\n\
         The VM tier needs qemu-system-x86_64 (TCG is enough), busybox-static, cpio, lz4, kmod, lvm2, \
         thin-provisioning-tools and apt access to Debian's linux-image-cloud-amd64: run \
         contrib/install-deps.sh. To skip the tier on purpose, set BPC_OVZ_SKIP_VM=1."
    )
}

fn boot_pool() -> Result<Pool, String> {
    let t0 = Instant::now();
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(cannot_run(format!(
                "qemu-system-x86_64 --version failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        Err(e) => return Err(cannot_run(format!("qemu-system-x86_64: {e}"))),
    }
    let o = Command::new(vm_scripts().join("build-image"))
        .arg(image_cache())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| cannot_run(format!("tests/vm/build-image: {e}")))?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprint!("{err}");
    if !o.status.success() {
        return Err(cannot_run(format!("tests/vm/build-image failed: {err}")));
    }
    let img = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string());
    let t_img = t0.elapsed();
    let dir = tempfile::Builder::new()
        .prefix("bpcovz-vm")
        .tempdir_in(scratch())
        .map_err(|e| format!("tempdir: {e}"))?
        .keep();
    let ctl_dir = tempfile::Builder::new()
        .prefix("bpcovz-ctl")
        .tempdir_in("/tmp")
        .map_err(|e| format!("tempdir: {e}"))?
        .keep();
    // Both VMs boot at once (~6-10 s each under TCG on 2 cores).
    let specs = [("hn1", "vg-data", "ext4"), ("hn2", "vg0", "xfs")];
    let mut children = Vec::new();
    for (name, vg, fs) in specs {
        let child = Command::new(vm_scripts().join("vm-up"))
            .arg(&img)
            .arg(dir.join(name))
            .args([name, vg, fs])
            .env("VM_OWNER_PID", std::process::id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| cannot_run(format!("tests/vm/vm-up: {e}")))?;
        children.push((name, vg, fs, child));
    }
    let mut vms = Vec::new();
    let mut errors = Vec::new();
    for (name, vg, fs, child) in children {
        let o = child
            .wait_with_output()
            .map_err(|e| format!("vm-up: {e}"))?;
        let out = String::from_utf8_lossy(&o.stdout);
        let mut w = out.split_whitespace();
        match (o.status.success(), w.next(), w.next()) {
            (true, Some(pid), Some(port)) => vms.push(Vm {
                name: name.into(),
                vg: vg.into(),
                fs: fs.into(),
                pid: pid.parse().map_err(|_| format!("vm-up printed {out}"))?,
                port: port.parse().map_err(|_| format!("vm-up printed {out}"))?,
                key: img.join("id_ed25519"),
                known_hosts: dir.join(name).join("known_hosts"),
                ctl: ctl_dir.join(name),
                master: Mutex::new(None),
            }),
            _ => errors.push(format!(
                "{name}: vm-up failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
        }
    }
    let pool = Pool {
        key: img.join("id_ed25519"),
        known_hosts: dir.join("known_hosts"),
        config: dir.join("config-64M.yaml"),
        log: dir.join("bpc-ovz.log"),
        dir,
        ctl_dir,
        vms,
    };
    if errors.is_empty() {
        for v in &pool.vms {
            if let Err(e) = v.start_master() {
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        pool.teardown();
        return Err(cannot_run(errors.join("\n")));
    }
    let mut kh = String::new();
    for v in &pool.vms {
        kh.push_str(&std::fs::read_to_string(&v.known_hosts).map_err(|e| format!("{e}"))?);
    }
    std::fs::write(&pool.known_hosts, kh).map_err(|e| format!("{e}"))?;
    pool.config_with("64M");
    // SAFETY: registers a plain extern "C" fn; it runs once at process exit.
    unsafe { libc::atexit(teardown_at_exit) };
    eprintln!(
        "VM tier: image {} ready in {:.1}s; hn1 (ext4, vg-data) and hn2 (xfs, vg0) booted, ssh ready after {:.1}s",
        img.display(),
        t_img.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(pool)
}

/// One test's hold on the VMs: serialises the tests and reports the test's duration.
struct Session {
    pool: &'static Pool,
    name: &'static str,
    start: Instant,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        eprintln!(
            "VM tier: {} took {:.1}s",
            self.name,
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// `None` (after saying so loudly) when BPC_OVZ_SKIP_VM=1; panics with one clear message when the
/// VMs cannot be booted.
fn session(name: &'static str) -> Option<Session> {
    if std::env::var("BPC_OVZ_SKIP_VM").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! VM TIER SKIPPED ({name}): BPC_OVZ_SKIP_VM=1. Real LVM was NOT tested.  !!!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = match POOL.get_or_init(boot_pool) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    Some(Session {
        pool,
        name,
        start: Instant::now(),
        _serial: serial,
    })
}

/// Stops a test's VEs when it ends (passing or not): a running VE costs the guest CPU.
struct Ves<'a> {
    node: &'a dyn Node,
    ids: Vec<u32>,
}

impl Drop for Ves<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.node.exec(&format!("vzctl stop {id} >/dev/null 2>&1"));
        }
    }
}

/// A running VE `veVEID.example.com` (10.10.1.VEID) on the node, stopped when the test ends.
fn running_ve(n: &dyn Node, veid: u32) -> Ves<'_> {
    n.create_ve(
        veid,
        &format!("ve{veid}.example.com"),
        &format!("10.10.1.{veid}"),
        true,
    );
    Ves {
        node: n,
        ids: vec![veid],
    }
}

/// Runs a shell script on a node when a test ends (passing or not).
struct Cleanup<'a>(&'a dyn Node, String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.exec(&self.1);
    }
}

// ------------------------------------------------------------------------------------------
// bpc-ovz as BackupPC 4 runs it, and checks (as in tests/backup.rs)

/// BackupPC 4 style: a real rsync client with bpc-ovz as its `-e` program.
fn rsync_bpc4(
    config: &Path,
    host: &str,
    share: &str,
    dest: &Path,
    protect_args: bool,
    extra: &[&str],
) -> Output {
    std::fs::create_dir_all(dest).expect("dest");
    let mut c = Command::new("rsync");
    c.args(["-a", "-H", "--numeric-ids", "--delete"])
        .arg(if protect_args {
            "--protect-args"
        } else {
            "--no-protect-args"
        })
        .args(extra)
        .arg("-e")
        .arg(format!(
            "{} ssh --config {} -l root",
            bin(),
            config.display()
        ))
        .arg(format!("{host}:{share}"))
        .arg(format!("{}/", dest.display()))
        .env("PATH", "/bin:/usr/bin");
    run(&mut c)
}

/// The same in the background, for the kill and overflow scenarios.
fn spawn_bpc4(config: &Path, host: &str, dest: &Path, extra: &[&str]) -> Child {
    std::fs::create_dir_all(dest).expect("dest");
    Command::new("rsync")
        .args(["-a", "--protect-args"])
        .args(extra)
        .arg("-e")
        .arg(format!(
            "{} ssh --config {} -l root",
            bin(),
            config.display()
        ))
        .arg(format!("{host}:/"))
        .arg(format!("{}/", dest.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rsync")
}

/// bpc-ovz called directly (exit codes as bpc-ovz reports them).
fn bpc4_direct(config: &Path, host: &str) -> Output {
    run(Command::new(bin())
        .args(["ssh", "--config"])
        .arg(config)
        .args(["-l", "root", host])
        .args(["rsync", "--server", "--sender", "-lr", ".", "/"]))
}

fn check_clean(n: &dyn Node) {
    let left = n.leftovers();
    assert!(left.is_empty(), "{} has leftovers: {left:?}", n.name());
}

/// The received tree equals the VE's private area (all but the ticker, which the running VE
/// keeps writing), and the ticker in the backup is the one frozen at bpc-ovz's stop.
fn check_backup(n: &dyn Node, veid: u32, dest: &Path, scratch: &Path, fz: Option<&Frozen>) {
    check_backup_of(n, &format!("/vz/private/{veid}"), veid, dest, scratch, fz)
}

fn check_backup_of(
    n: &dyn Node,
    private: &str,
    veid: u32,
    dest: &Path,
    scratch: &Path,
    fz: Option<&Frozen>,
) {
    let private = n.tree(private, scratch);
    let a = manifest(&private, &[TICKER]);
    let b = manifest(dest, &[TICKER, "etc/vzdump"]);
    assert_same_tree(&a, &b, &format!("{}: VE {veid} vs backup", n.name()));
    if let Some(fz) = fz {
        let counter = fz.counter.as_deref().expect("bpc-ovz's stop in the VE log");
        let got =
            std::fs::read_to_string(dest.join(TICKER).join("counter")).expect("counter in backup");
        assert_eq!(got.trim(), counter, "the counter frozen at the stop; VE log:\n{}\nlive counter dir: {}", n.ve_log(veid), n.exec_ok(&format!("ls -la --time-style=full-iso /vz/private/{veid}/var/lib/ticker/; cat /vz/private/{veid}/var/lib/ticker/counter")));
        assert!(
            !dest
                .join(TICKER)
                .join(format!("boot-{}", fz.boots))
                .exists(),
            "the boot after the snapshot is not in the backup"
        );
        assert!(
            dest.join(TICKER)
                .join(format!("boot-{}", fz.boots - 1))
                .exists(),
            "the boot before the snapshot is in the backup"
        );
    }
}

fn check_vzdump(n: &dyn Node, veid: u32, etc: &Path) {
    let conf = n.exec_ok(&format!("cat /etc/vz/conf/{veid}.conf"));
    let got = std::fs::read_to_string(etc.join(format!("vzdump/{veid}.conf")))
        .expect("etc/vzdump/VEID.conf in the backup");
    assert_eq!(conf, got);
}

/// `vzctl stop`/`start` calls for this VE in the stand-in's command log, without timestamps.
fn vzctl_actions(n: &dyn Node, veid: u32) -> Vec<String> {
    n.commands_log()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, c)| c.to_string()))
        .filter(|c| {
            c.starts_with("vzctl")
                && (c.contains(" stop ") || c.contains(" start "))
                && c.ends_with(&format!(" {veid}"))
        })
        .collect()
}

/// What the guest kernel said since boot, for real-LVM evidence (dm-snapshot, XFS).
fn kernel_log(n: &dyn Node) -> String {
    n.exec_ok("dmesg")
}

// ------------------------------------------------------------------------------------------
// Core scenarios

#[test]
#[ignore = "VM tier"]
fn vm_ve_on_the_second_vm_by_ip_on_xfs() {
    let Some(s) = session("vm_ve_on_the_second_vm_by_ip_on_xfs") else {
        return;
    };
    let p = s.pool;
    let (hn1, hn2) = (p.vm("hn1"), p.vm("hn2"));
    let _ves = running_ve(hn2, 202);
    let dest = p.dir.join("b202");
    hn2.exec_ok("dmesg -c >/dev/null");
    // Paths in argv (no protect-args), the BackupPC host given by the VE's IP.
    let o = rsync_bpc4(&p.config, "10.10.1.202", "/", &dest, false, &[]);
    assert_ok(&o, "backup of a VE on hn2");
    assert!(stderr(&o).contains("VE 202 on hn2"), "{}", stderr(&o));
    assert!(hn2.ve_running(202));
    check_clean(hn1);
    check_clean(hn2);
    check_vzdump(hn2, 202, &dest.join("etc"));
    let fz = frozen(hn2, 202);
    check_backup(hn2, 202, &dest, &p.dir, Some(&fz));
    // XFS refuses a snapshot next to its origin without nouuid: bpc-ovz mounted it so, and the
    // real kernel mounted the dm snapshot (kernel log cleared before the backup).
    assert!(
        hn2.exec_log().contains("-o nouuid"),
        "xfs snapshot mounted with nouuid"
    );
    let k = kernel_log(hn2);
    assert!(
        k.lines()
            .any(|l| l.contains("XFS (dm-") && l.contains("Mounting")),
        "the guest kernel mounted an XFS dm snapshot:\n{k}"
    );
    // Without nouuid the real kernel refuses it: the reason bpc-ovz passes it.
    let o = hn2.exec(
        "lvcreate -q -s -L 16M -n uuidcheck vg0/vz >/dev/null && mkdir -p /mnt/u && \
         mount -t xfs /dev/vg0/uuidcheck /mnt/u; rc=$?; umount /mnt/u 2>/dev/null; \
         lvremove -q -f vg0/uuidcheck >/dev/null; exit $rc",
    );
    assert!(!o.status.success(), "xfs snapshot mounted without nouuid");
    check_clean(hn2);
}

// ------------------------------------------------------------------------------------------
// Real-LVM scenarios

#[test]
#[ignore = "VM tier"]
fn vm_snapshot_overflow_during_the_transfer_fails_the_backup() {
    let Some(s) = session("vm_snapshot_overflow_during_the_transfer_fails_the_backup") else {
        return;
    };
    let p = s.pool;
    let hn2 = p.vm("hn2");
    let _ves = running_ve(hn2, 212);
    hn2.exec_ok("head -c 4000000 /dev/urandom > /vz/private/212/home/u/big");
    let config = p.config_with("8M");
    hn2.exec_ok("dmesg -c >/dev/null");
    let rsync = spawn_bpc4(
        &config,
        "ve212.example.com",
        &p.dir.join("b212"),
        &["--bwlimit=300"],
    );
    wait_until("transfer running", 120, || {
        hn2.exec("grep -q bpc-ovz /proc/mounts && pgrep -f 'rsync --server --sender' >/dev/null")
            .status
            .success()
    });
    // The running VE writes far more than the 8 MiB COW area holds.
    hn2.exec_ok(
        "dd if=/dev/urandom of=/vz/root/212/home/u/churn bs=1M count=24 conv=fsync 2>/dev/null",
    );
    let o = rsync.wait_with_output().expect("rsync");
    let e = stderr(&o);
    // bpc-ovz's 73 (a torn snapshot), passed on by the rsync client. When the real snapshot was
    // invalidated while rsync was still reading, rsync fails first on its I/O errors; the verify
    // step still runs after the failed transfer and names the overflow as the cause.
    assert_eq!(
        o.status.code(),
        Some(73),
        "an overflowed snapshot fails the backup as torn: {e}"
    );
    assert!(
        e.contains("failed at step verify")
            && (e.contains("overflowed") || e.contains("is full"))
            && e.contains("the backup read a torn snapshot; raise snapshot.size"),
        "{e}"
    );
    eprintln!(
        "VM tier: the overflow failed the backup {}",
        if e.contains("reading a snapshot that did not hold") {
            "after rsync failed on the invalidated snapshot's I/O errors"
        } else {
            "in bpc-ovz's check after the transfer"
        }
    );
    // The real dm-snapshot target ran out of COW space.
    let k = kernel_log(hn2);
    assert!(
        k.contains("Invalidating snapshot") || k.contains("Unable to allocate exception"),
        "{k}"
    );
    assert!(hn2.ve_running(212));
    check_clean(hn2);
    hn2.exec_ok("rm -f /vz/private/212/home/u/churn /vz/private/212/home/u/big");
}

#[test]
#[ignore = "VM tier"]
fn vm_lvremove_while_the_snapshot_is_busy_is_retried() {
    let Some(s) = session("vm_lvremove_while_the_snapshot_is_busy_is_retried") else {
        return;
    };
    let p = s.pool;
    let hn2 = p.vm("hn2");
    let _ves = running_ve(hn2, 205);
    // A process on the HN opens the snapshot device once bpc-ovz has mounted it (not earlier: an
    // open while `lvcreate` still activates the new LV makes lvcreate itself fail, "Unable to
    // deactivate failed new LV") and keeps it open until 7 s after bpc-ovz unmounted it. lvm2
    // itself re-checks the open count for up to 5 s (activation/retry_deactivation: 25 x 0.2 s)
    // before it says "in use", so a hold of ~3 s is absorbed by lvm2 alone; 7 s makes bpc-ovz's
    // first lvremove fail for real and its retry succeed.
    // Whatever happens, the holder does not outlive the test (it would keep a snapshot busy for
    // the tests after it on this VM).
    let _holder = Cleanup(
        hn2,
        "[ -s /run/holder.pid ] && kill $(cat /run/holder.pid) 2>/dev/null; rm -f /run/holder.pid; true".into(),
    );
    hn2.exec_ok(
        "rm -f /run/holder.log; setsid sh -c 'echo $$ > /run/holder.pid; \
           while ! grep -q bpc-ovz /proc/mounts; do sleep 0.05; done; \
           for d in /dev/vg0/bpcovz-205-*; do [ -e \"$d\" ] && break; done; \
           exec 3<\"$d\"; echo \"opened $d $(date +%s%3N)\" >> /run/holder.log; \
           while grep -q bpc-ovz /proc/mounts; do sleep 0.05; done; \
           echo \"unmounted $(date +%s%3N)\" >> /run/holder.log; sleep 7; exec 3<&-; \
           echo \"released $(date +%s%3N)\" >> /run/holder.log' </dev/null >/dev/null 2>&1 &",
    );
    let dest = p.dir.join("b205");
    let o = rsync_bpc4(&p.config, "ve205.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "backup with a briefly busy snapshot");
    let e = stderr(&o);
    // No holder.log: the holder never saw the snapshot's device node (seen once under heavy load).
    let holder = hn2.exec_ok("cat /run/holder.log 2>&1; true");
    assert!(
        holder.contains("opened") && holder.contains("released"),
        "the holder opened and released the snapshot: {holder}\nbpc-ovz:\n{e}"
    );
    assert!(
        e.contains("in use") && e.contains("failed; retrying"),
        "lvm2 said the LV is in use and bpc-ovz retried:\n{e}\nholder:\n{holder}"
    );
    assert!(e.contains("successfully removed"), "{e}");
    assert!(hn2.ve_running(205));
    check_clean(hn2);
    check_backup(hn2, 205, &dest, &p.dir, None);
}

/// bpc-ovz killed with SIGKILL while the VE is down and the real `lvcreate` runs. lvm2's own VG
/// lock, taken on the HN for 5 s as soon as the VE is down (the stand-in vzctl's `slow-stop-ms`
/// keeps the stop going for 1.5 s more, so the lock is taken first), keeps `lvcreate` waiting
/// inside the downtime window; the kill lands then. The HN-side script still snapshots and
/// restarts the VE, and the guard removes the snapshot once the connection is gone.
#[test]
#[ignore = "VM tier"]
fn vm_sigkill_inside_the_downtime_window_hn_restarts_and_cleans_up() {
    let Some(s) = session("vm_sigkill_inside_the_downtime_window_hn_restarts_and_cleans_up") else {
        return;
    };
    let p = s.pool;
    let hn1 = p.vm("hn1");
    let _ves = running_ve(hn1, 107);
    hn1.exec_ok(
        "echo 1500 > /etc/vzsim/faults/slow-stop-ms; rm -f /run/vglock.log; setsid sh -c '\
           while [ -e /var/lib/vzsim/ve/107/init.pid ]; do sleep 0.02; done; \
           echo \"locking $(date +%s%3N)\" >> /run/vglock.log; \
           flock /run/lock/lvm/V_vg-data sleep 5; \
           echo \"unlocked $(date +%s%3N)\" >> /run/vglock.log' </dev/null >/dev/null 2>&1 &",
    );
    let mut rsync = spawn_bpc4(&p.config, "ve107.example.com", &p.dir.join("b107"), &[]);
    let mut pid = None;
    wait_until("bpc-ovz started", 30, || {
        pid = child_of(rsync.id());
        pid.is_some()
    });
    // lvcreate waits for the VG lock (nothing else creates LVs on this HN now).
    wait_until("lvcreate running in the downtime window", 120, || {
        hn1.exec("pgrep -x lvcreate >/dev/null").status.success()
    });
    assert!(!hn1.ve_running(107), "the VE is down");
    kill(pid.expect("pid"), libc::SIGKILL);
    let _ = rsync.wait();
    hn1.exec_ok("rm -f /etc/vzsim/faults/slow-stop-ms");
    wait_until("VE running again", 120, || hn1.ve_running(107));
    wait_until("no snapshot, mount or lock left", 120, || {
        hn1.leftovers().is_empty()
    });
    let lock = hn1.exec_ok("cat /run/vglock.log");
    assert!(lock.contains("unlocked"), "{lock}");
    let log = hn1.ve_log(107);
    assert!(
        log.lines().last().unwrap_or("").starts_with("started"),
        "the VE was started again: {log}"
    );
}

/// BackupPC's abort during the transfer, the hard way: SIGKILL of bpc-ovz (and of rsync).
#[test]
#[ignore = "VM tier"]
fn vm_sigkill_during_the_transfer_leaves_nothing_behind() {
    let Some(s) = session("vm_sigkill_during_the_transfer_leaves_nothing_behind") else {
        return;
    };
    let p = s.pool;
    let hn2 = p.vm("hn2");
    let _ves = running_ve(hn2, 208);
    hn2.exec_ok("head -c 4000000 /dev/urandom > /vz/private/208/home/u/big");
    let mut rsync = spawn_bpc4(
        &p.config,
        "ve208.example.com",
        &p.dir.join("b208"),
        &["--bwlimit=400"],
    );
    let mut pid = None;
    wait_until("bpc-ovz started", 30, || {
        pid = child_of(rsync.id());
        pid.is_some()
    });
    wait_until("snapshot mounted and transfer running", 120, || {
        hn2.exec("grep -q bpc-ovz /proc/mounts && pgrep -f 'rsync --server --sender' >/dev/null")
            .status
            .success()
    });
    kill(pid.expect("pid"), libc::SIGKILL);
    let _ = rsync.kill();
    let _ = rsync.wait();
    assert!(hn2.ve_running(208));
    wait_until("no snapshot, mount or lock left", 120, || {
        hn2.leftovers().is_empty()
    });
    hn2.exec_ok("rm -f /vz/private/208/home/u/big");
}

/// A VE whose private area is on a thin volume gets a thin snapshot in the volume's pool
/// (bpc-ovz's lvm-thin backend), on real dm-thin.
#[test]
#[ignore = "VM tier"]
fn vm_thin_volume_gets_a_thin_snapshot() {
    let Some(s) = session("vm_thin_volume_gets_a_thin_snapshot") else {
        return;
    };
    let p = s.pool;
    let hn2 = p.vm("hn2");
    let _cleanup = Cleanup(
        hn2,
        "vzctl stop 220 >/dev/null 2>&1; rm -f /etc/vz/conf/220.conf; umount /vzt 2>/dev/null; \
         lvremove -q -f vg0/vzthin vg0/vzpool >/dev/null 2>&1; true"
            .into(),
    );
    // /vzt: XFS on a thin volume of pool vg0/vzpool; VE 220 lives there.
    hn2.exec_ok(
        "set -e; lvcreate -q -y -Wn -L 400M -T vg0/vzpool >/dev/null; \
         lvcreate -q -y -Wn -V 320M -T vg0/vzpool -n vzthin >/dev/null; \
         mkfs.xfs -q /dev/vg0/vzthin; mkdir -p /vzt; mount /dev/mapper/vg0-vzthin /vzt; \
         mkdir -p /vzt/private; ve-create-local 220 ve220.example.com 10.10.1.220 yes; \
         cp -a /vz/private/220 /vzt/private/; rm -rf /vz/private/220; \
         sed -i 's|^VE_PRIVATE=.*|VE_PRIVATE=\"/vzt/private/$VEID\"|' /etc/vz/conf/220.conf; \
         vzctl start 220 >/dev/null",
    );
    let dest = p.dir.join("b220");
    let o = rsync_bpc4(&p.config, "ve220.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "backup of a VE on a thin volume");
    let e = stderr(&o);
    assert!(e.contains("was down for"), "{e}");
    let guard = hn2.exec_log();
    assert!(
        guard.contains("lvcreate --snapshot --setactivationskip n --name bpcovz-220-"),
        "a thin snapshot (no size): {guard}"
    );
    assert!(hn2.ve_running(220));
    check_clean(hn2);
    let fz = frozen(hn2, 220);
    check_backup_of(hn2, "/vzt/private/220", 220, &dest, &p.dir, Some(&fz));
    check_vzdump(hn2, 220, &dest.join("etc"));
}

/// VE `veid` on hn1 (VG `vg-data`) with its private area on ext4 on thin volume `vzthinVEID`
/// (256 MiB virtual) of a `pool_mib` MiB thin pool `tpoolVEID`, mounted on `/vztVEID`. The pool
/// is made with `--errorwhenfull y`: once full, writes to its volumes fail at once instead of
/// being queued for dm-thin's 60 s `no_space_timeout`, so a VE writing into a full pool cannot
/// hang the test. The returned guard stops the VE and removes the pool with everything in it,
/// whatever state the test left (an unmounted snapshot included).
fn thin_ve(n: &Vm, veid: u32, pool_mib: u32) -> Cleanup<'_> {
    let teardown = format!(
        // `[/]`: the pattern must not match this very script's shell.
        "pkill -f 'of=/vz/root/{veid}[/]' 2>/dev/null; vzctl stop {veid} >/dev/null 2>&1; \
         umount /vz/root/{veid} 2>/dev/null; \
         for m in /run/bpc-ovz/mnt/bpcovz-{veid}-*; do [ -d \"$m\" ] || continue; \
           umount \"$m\" 2>/dev/null || umount -l \"$m\" 2>/dev/null; rmdir \"$m\" 2>/dev/null; done; \
         umount /vzt{veid} 2>/dev/null || umount -l /vzt{veid} 2>/dev/null; \
         rm -f /etc/vz/conf/{veid}.conf; rmdir /vzt{veid} 2>/dev/null; \
         for lv in $(lvs --noheadings -o lv_name,pool_lv vg-data 2>/dev/null | \
           awk '$2 == \"tpool{veid}\" {{ print $1 }}'); do lvremove -q -f vg-data/$lv >/dev/null 2>&1; done; \
         lvremove -q -f vg-data/tpool{veid} >/dev/null 2>&1; true"
    );
    let cleanup = Cleanup(n, teardown);
    n.exec_ok(&format!(
        "set -e; lvcreate -q -y -Wn -L {pool_mib}M --errorwhenfull y --poolmetadataspare n \
           -T vg-data/tpool{veid} >/dev/null; \
         lvcreate -q -y -Wn -V 256M -T vg-data/tpool{veid} -n vzthin{veid} >/dev/null; \
         mkfs.ext4 -q -F -N 8192 -E lazy_itable_init=0,lazy_journal_init=0 /dev/vg-data/vzthin{veid}; \
         mkdir -p /vzt{veid}; mount /dev/mapper/vg--data-vzthin{veid} /vzt{veid}; \
         mkdir -p /vzt{veid}/private; \
         ve-create-local {veid} ve{veid}.example.com 10.10.1.{} yes; \
         cp -a /vz/private/{veid} /vzt{veid}/private/; rm -rf /vz/private/{veid}; \
         sed -i 's|^VE_PRIVATE=.*|VE_PRIVATE=\"/vzt{veid}/private/$VEID\"|' /etc/vz/conf/{veid}.conf; \
         vzctl start {veid} >/dev/null",
        veid % 256
    ));
    cleanup
}

/// Nothing of bpc-ovz is left on the VM, and the test's thin pool goes away with its cleanup.
fn thin_ends_clean(n: &Vm, cleanup: Cleanup<'_>) {
    check_clean(n);
    drop(cleanup);
    assert_eq!(
        n.exec_ok("lvs --noheadings -o lv_name vg-data").trim(),
        "vz",
        "the pool and its volumes are gone"
    );
}

/// The thin pool's data and metadata usage in percent, as lvs prints them.
fn pool_usage(n: &Vm, pool: &str) -> (f64, f64) {
    let o = n.exec_ok(&format!(
        "lvs --noheadings --separator : -o data_percent,metadata_percent {pool}"
    ));
    let (d, m) = o.trim().split_once(':').expect("data:metadata");
    (
        d.trim().parse().expect("data_percent"),
        m.trim().parse().expect("metadata_percent"),
    )
}

/// A thin pool that is 90 % full or more is refused before the VE is touched (lvm-thin backend:
/// a thin snapshot needs no size, but every chunk the VE rewrites during the transfer comes from
/// the pool).
#[test]
#[ignore = "VM tier"]
fn vm_thin_pool_nearly_full_is_refused_before_any_downtime() {
    let Some(s) = session("vm_thin_pool_nearly_full_is_refused_before_any_downtime") else {
        return;
    };
    let p = s.pool;
    let hn1 = p.vm("hn1");
    let cleanup = thin_ve(hn1, 221, 48);
    // Another thin volume of the pool takes it to ~93 %.
    let (before, _) = pool_usage(hn1, "vg-data/tpool221");
    let fill = ((93.0 - before) * 48.0 / 100.0).ceil() as u32;
    hn1.exec_ok(&format!(
        "lvcreate -q -y -Wn -V 64M -T vg-data/tpool221 -n tfill221 >/dev/null; \
         dd if=/dev/zero of=/dev/vg-data/tfill221 bs=1M count={fill} oflag=direct 2>/dev/null"
    ));
    let (data, _) = pool_usage(hn1, "vg-data/tpool221");
    assert!(
        (90.0..100.0).contains(&data),
        "the pool is nearly, not completely, full: {data}%"
    );
    let o = bpc4_direct(&p.config, "ve221.example.com");
    let e = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(71),
        "refused before any downtime: {e}"
    );
    assert!(
        e.contains(&format!(
            "thin pool vg-data/tpool221 is at {}% data",
            data.trunc()
        )) && e.contains("no room for a thin snapshot"),
        "the message names the pool and its usage: {e}"
    );
    assert!(hn1.ve_running(221));
    assert_eq!(
        vzctl_actions(hn1, 221),
        ["vzctl start 221"],
        "the VE was never stopped"
    );
    assert!(
        e.contains("hn1: step 3 preflight") && !e.contains("hn1: step 4 downtime"),
        "refused in the preflight, before the downtime step: {e}"
    );
    thin_ends_clean(hn1, cleanup);
}

/// The thin pool fills up during the transfer (a small pool, the VE writing heavily while a
/// bandwidth-limited transfer runs): the backup fails loudly as torn (73), the VE keeps running
/// and no snapshot or mount is left.
#[test]
#[ignore = "VM tier"]
fn vm_thin_pool_overflow_during_the_transfer_fails_the_backup() {
    let Some(s) = session("vm_thin_pool_overflow_during_the_transfer_fails_the_backup") else {
        return;
    };
    let p = s.pool;
    let hn1 = p.vm("hn1");
    let cleanup = thin_ve(hn1, 222, 48);
    hn1.exec_ok(
        "head -c 4000000 /dev/urandom > /vzt222/private/222/home/u/big; dmesg -c >/dev/null",
    );
    let (before, _) = pool_usage(hn1, "vg-data/tpool222");
    assert!(before < 60.0, "room for the snapshot: {before}%");
    let rsync = spawn_bpc4(
        &p.config,
        "ve222.example.com",
        &p.dir.join("b222"),
        &["--bwlimit=300"],
    );
    wait_until("transfer running", 120, || {
        hn1.exec("grep -q bpc-ovz /proc/mounts && pgrep -f 'rsync --server --sender' >/dev/null")
            .status
            .success()
    });
    // The running VE writes more than the pool holds; its writes fail once the pool is full.
    let w = hn1.exec_ok(
        "dd if=/dev/zero of=/vz/root/222/home/u/churn bs=1M count=64 oflag=direct 2>&1; \
         echo \"dd exit $?\"",
    );
    let (full, _) = pool_usage(hn1, "vg-data/tpool222");
    assert!(
        full >= 100.0 && !w.contains("dd exit 0"),
        "the pool filled up and the VE's writes failed: {full}%, {w}"
    );
    let running = hn1
        .exec("pgrep -f 'rsync --server --sender' >/dev/null")
        .status
        .success();
    let o = rsync.wait_with_output().expect("rsync");
    let e = stderr(&o);
    assert!(
        running,
        "the transfer was still running when the pool filled up: {e}"
    );
    assert_eq!(
        o.status.code(),
        Some(73),
        "a pool that filled up fails the backup as torn: {e}"
    );
    assert!(
        e.contains("failed at step verify")
            && e.contains("thin pool vg-data/tpool222 is at 100% data")
            && e.contains("it filled up during the transfer: the backup is torn"),
        "{e}"
    );
    // The real dm-thin target ran out of data space.
    let k = kernel_log(hn1);
    assert!(k.contains("out-of-data-space"), "{k}");
    assert!(hn1.ve_running(222));
    thin_ends_clean(hn1, cleanup);
}

/// The image carries what a thin-LVM backend will need (dm-thin-pool, thin_check): a thin pool,
/// a thin LV with XFS, a thin snapshot of it mounted next to it.
#[test]
#[ignore = "VM tier"]
fn vm_image_has_thin_pools() {
    let Some(s) = session("vm_image_has_thin_pools") else {
        return;
    };
    let hn2 = s.pool.vm("hn2");
    let cleanup = "umount /mnt/t1s 2>/dev/null; umount /mnt/t1 2>/dev/null; \
                   lvremove -q -f vg0/thin1s vg0/thin1 vg0/tpool >/dev/null 2>&1; true";
    let o = hn2.exec(&format!(
        "{cleanup}; set -e; lvcreate -q -y -Wn -L 400M -T vg0/tpool >/dev/null; \
         lvcreate -q -y -Wn -V 320M -T vg0/tpool -n thin1 >/dev/null; \
         mkfs.xfs -q /dev/vg0/thin1; mkdir -p /mnt/t1 /mnt/t1s; mount /dev/vg0/thin1 /mnt/t1; \
         echo before > /mnt/t1/f; sync; \
         lvcreate -q -s -n thin1s vg0/thin1 >/dev/null; lvchange -q -ay -K vg0/thin1s; \
         echo after > /mnt/t1/f; sync; \
         mount -o ro,nouuid /dev/vg0/thin1s /mnt/t1s; cat /mnt/t1s/f; \
         lvs --noheadings -o lv_name,lv_attr,pool_lv,origin vg0"
    ));
    hn2.exec_ok(cleanup);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "thin pool on the VM: {out}{}",
        stderr(&o)
    );
    assert!(
        out.starts_with("before\n"),
        "the thin snapshot froze the file: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("thin1s") && l.contains("Vwi")),
        "{out}"
    );
    assert_eq!(
        hn2.exec_ok("lvs --noheadings -o lv_name vg0").trim(),
        "vz",
        "cleaned up"
    );
}

// ------------------------------------------------------------------------------------------
// The core scenarios, on the simulated HN and on a VM, with results that must agree

/// What a run of the choreography shows from outside, with everything that legitimately
/// differs between two HNs (times, random bytes, run ids, the ticker) left out.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    step: &'static str,
    exit: Option<i32>,
    /// bpc-ovz's plan steps and undos as it ran them (`step 4 downtime`, `undo mount`, ...).
    plan: Vec<String>,
    /// What `bpc-ovz plan` printed just before the run (`step N name` and `WARNING: ...`).
    planned: Vec<String>,
    /// Relative path → kind, mode, owner, symlink target or content (size only for random data).
    files: Vec<String>,
    ve_running: Vec<(u32, bool)>,
    vzctl: Vec<String>,
    leftovers: Vec<String>,
    /// bpc-ovz's error line(s) for a refusal.
    refusal: Vec<String>,
}

fn files_of(dest: &Path) -> Vec<String> {
    manifest(dest, &[TICKER])
        .into_iter()
        .map(|(k, e)| match e {
            Entry::File {
                mode,
                uid,
                gid,
                content,
                links_group,
                ..
            } => {
                let c = if k.ends_with("blob.bin") {
                    format!("{} random bytes", content.len())
                } else {
                    String::from_utf8_lossy(&content).into_owned()
                };
                format!("{k} file {mode:o} {uid}:{gid} links={links_group:?} {c:?}")
            }
            Entry::Dir { mode, uid, gid } => format!("{k} dir {mode:o} {uid}:{gid}"),
            Entry::Symlink { target, uid, gid } => {
                format!("{k} symlink {uid}:{gid} -> {}", target.display())
            }
            Entry::Other { mode } => format!("{k} other {mode:o}"),
        })
        .collect()
}

/// `bpc-ovz plan HOST --json ARGS`, printed just before a run: the plan's steps as `step N name`
/// (what the run logs as it starts each one) and its warnings as `WARNING: ...`.
fn planned(config: &Path, host: &str, args: &[&str]) -> Vec<String> {
    let o = run(Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(["plan", host, "--json"])
        .args(args));
    assert_ok(&o, "bpc-ovz plan");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan --json");
    let mut out: Vec<String> = v["plan"]["steps"]
        .as_array()
        .expect("plan.steps")
        .iter()
        .map(|s| format!("step {} {}", s["id"], s["name"].as_str().unwrap_or("?")))
        .collect();
    out.extend(
        v["plan"]["warnings"]
            .as_array()
            .expect("plan.warnings")
            .iter()
            .map(|w| format!("WARNING: {}", w.as_str().unwrap_or("?"))),
    );
    out
}

/// The `step N name` lines of a run (not its undos or `step NAME exited RC` lines).
fn ran_steps(o: &Observed) -> Vec<String> {
    o.plan
        .iter()
        .filter(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            w.len() == 3 && w[0] == "step" && w[1].parse::<u32>().is_ok()
        })
        .cloned()
        .collect()
}

fn planned_steps(o: &Observed) -> Vec<String> {
    o.planned
        .iter()
        .filter(|l| l.starts_with("step "))
        .cloned()
        .collect()
}

/// BackupPC 4's restore: a real rsync client pushing `srcs` through bpc-ovz, whose HN side is
/// `rsync --server` without `--sender` (the receiver), confined to the VE.
fn restore_bpc4(
    config: &Path,
    host: &str,
    srcs: &[PathBuf],
    dest: &str,
    protect_args: bool,
) -> Output {
    let mut c = Command::new("rsync");
    c.args(["-a", "-H", "--numeric-ids"])
        .arg(if protect_args {
            "--protect-args"
        } else {
            "--no-protect-args"
        })
        .arg("-e")
        .arg(format!(
            "{} ssh --config {} -l root",
            bin(),
            config.display()
        ))
        .args(srcs)
        .arg(format!("{host}:{dest}"))
        .env("PATH", "/bin:/usr/bin");
    run(&mut c)
}

/// What a restore brings back: a changed version of `home/u/file`, a file the VE does not have,
/// and a new directory, owned by the VE's user `u` (1000) as in a backup of the VE.
fn restore_source(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::{PermissionsExt, chown};
    std::fs::create_dir_all(dir.join("sub/deeper")).expect("restore source");
    let files = [
        ("file", "restored from the backup\n", 0o640),
        ("restored-new", "new from the backup\n", 0o600),
        ("sub/deeper/x", "x\n", 0o644),
    ];
    for (f, content, mode) in files {
        let p = dir.join(f);
        std::fs::write(&p, content).expect("restore source");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    for p in ["file", "restored-new", "sub", "sub/deeper", "sub/deeper/x"] {
        chown(dir.join(p), Some(1000), Some(1000)).expect("chown");
    }
    std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    ["file", "restored-new", "sub"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// After a restore into `private`'s `home/u`: the restored files are there, the rest untouched.
fn check_restored(home: &Path, hardlink: &str) {
    let read = |f: &str| std::fs::read_to_string(home.join(f)).unwrap_or_else(|e| format!("{e}"));
    assert_eq!(read("file"), "restored from the backup\n");
    assert_eq!(read("restored-new"), "new from the backup\n");
    assert_eq!(read("sub/deeper/x"), "x\n");
    // rsync replaced `file` (a new inode): its old hard link keeps the old content.
    assert_eq!(read("file.hardlink"), hardlink);
    assert_eq!(read(".hidden"), "hidden\n");
}

/// bpc-ovz's leftovers (see [`Node::leftovers`]) and a restore's tool directory in any VE tree.
fn leftovers_and_tool_dirs(n: &dyn Node) -> Vec<String> {
    let mut l = n.leftovers();
    l.extend(
        n.exec_ok(
            "for d in /vz/private/*/.bpcovz-* /vz/root/*/.bpcovz-*; do \
             [ -e \"$d\" ] && echo \"tool dir: $d\"; done; true",
        )
        .lines()
        .map(String::from),
    );
    l
}

/// The core scenarios as one choreography, run on a simulated HN and on a VM (both `hn1`, ext4,
/// VG `vg-data`): a full backup of a running VE (BackupPC 4 form, protect-args), an incremental one
/// after changes, a backup of `/etc` of a stopped VE (paths in argv), a VG without room for the
/// snapshot, a restore into the running VE (its live root) and one into the stopped VE (its private
/// area). Each backup is also checked on its own tier: the tree equals the VE's private area,
/// the ticker holds the counter frozen at the stop, `etc/vzdump` holds the VE's config. Before the
/// full backup, the refused one and the restore into the running VE, `bpc-ovz plan` prints the
/// plan: the steps the run then logs are exactly the plan's (up to the refusing step).
fn choreography(n: &dyn Node, config: &Path, scratch: &Path) -> Vec<Observed> {
    n.create_ve(301, "ve301.example.com", "10.10.3.1", true);
    n.create_ve(302, "ve302.example.com", "10.10.3.2", false);
    let _ves = Ves {
        node: n,
        ids: vec![301, 302],
    };
    let mut out = Vec::new();
    let mut step =
        |name: &'static str, veid: u32, o: &Output, files: Vec<String>, planned: Vec<String>| {
            let e = stderr(o);
            let refusal = if o.status.success() {
                Vec::new()
            } else {
                e.lines()
                    .filter(|l| l.contains("volume group") || l.contains("refused"))
                    .map(|l| l.trim_start_matches("bpc-ovz: ").to_string())
                    .collect()
            };
            let ob = Observed {
                step: name,
                exit: o.status.code(),
                plan: e
                    .lines()
                    .filter_map(|l| l.strip_prefix("bpc-ovz: hn1: "))
                    .filter(|l| l.starts_with("step ") || l.starts_with("undo "))
                    .map(String::from)
                    .collect(),
                planned,
                files,
                ve_running: vec![(301, n.ve_running(301)), (302, n.ve_running(302))],
                vzctl: vzctl_actions(n, veid),
                leftovers: leftovers_and_tool_dirs(n),
                refusal,
            };
            // The plan printed before the run is what the run executed: all of it, or up to the
            // step that refused.
            if !ob.planned.is_empty() {
                let (ran, plan) = (ran_steps(&ob), planned_steps(&ob));
                if ob.exit == Some(0) {
                    assert_eq!(
                        ran,
                        plan,
                        "{}: {name}: the run's steps vs the plan",
                        n.name()
                    );
                } else {
                    assert!(
                        !ran.is_empty() && plan.starts_with(&ran),
                        "{}: {name}: the run's steps {ran:?} are not a start of the plan {plan:?}",
                        n.name()
                    );
                }
            }
            out.push(ob);
        };
    let tier = n.name().to_string();

    let d301 = scratch.join(format!("{tier}-c301"));
    let plan = planned(config, "ve301.example.com", &[]);
    let o = rsync_bpc4(config, "ve301.example.com", "/", &d301, true, &[]);
    step("full backup, running VE", 301, &o, files_of(&d301), plan);
    assert_ok(&o, "full backup");
    let e = stderr(&o);
    assert!(e.contains("ve301.example.com is VE 301 on hn1"), "{e}");
    assert!(e.contains("was down for"), "downtime in the XferLOG: {e}");
    assert!(
        e.contains("  Logical volume \"bpcovz-301-"),
        "lvm2's output: {e}"
    );
    assert!(
        n.exec_log()
            .contains("lvcreate --size 64m --snapshot --name bpcovz-301-"),
        "a thick snapshot of 64 MiB"
    );
    let fz = frozen(n, 301);
    check_backup(n, 301, &d301, scratch, Some(&fz));
    check_vzdump(n, 301, &d301.join("etc"));

    n.exec_ok(
        "echo changed > /vz/root/301/home/u/file; echo new > /vz/root/301/home/u/new; \
         rm -f /vz/root/301/var/www/index.html",
    );
    wait_for_a_newer_counter(n, 301, &d301);
    let o = rsync_bpc4(config, "ve301.example.com", "/", &d301, true, &[]);
    step(
        "incremental backup, running VE",
        301,
        &o,
        files_of(&d301),
        vec![],
    );
    assert_ok(&o, "incremental backup");
    let fz = frozen(n, 301);
    check_backup(n, 301, &d301, scratch, Some(&fz));
    assert_eq!(
        std::fs::read_to_string(d301.join("home/u/new")).expect("new"),
        "new\n"
    );
    assert!(!d301.join("var/www/index.html").exists());

    let d302 = scratch.join(format!("{tier}-c302"));
    let o = rsync_bpc4(config, "ve302.example.com", "/etc/", &d302, false, &[]);
    step(
        "backup of /etc, stopped VE",
        302,
        &o,
        files_of(&d302),
        vec![],
    );
    assert_ok(&o, "backup of a stopped VE");
    check_vzdump(n, 302, &d302);

    // 32 MiB free (the simulated VG's size, a real filler LV on the VM); the snapshot wants 64.
    n.set_vg_free(Some(32 << 20));
    let plan = planned(config, "ve301.example.com", &[]);
    let o = bpc4_direct(config, "ve301.example.com");
    n.set_vg_free(None);
    step("VG with 32 MiB free", 301, &o, vec![], plan);

    // Restores: BackupPC 4's receiver form, confined to the VE (unshare -m, chroot, the HN's own
    // rsync on a tmpfs); into the running VE's live root, then the stopped VE's private area.
    let src = scratch.join(format!("{tier}-restore-src"));
    let srcs = restore_source(&src);
    let plan = planned(
        config,
        "ve301.example.com",
        &["--restore", "--path", "/home/u"],
    );
    let o = restore_bpc4(config, "ve301.example.com", &srcs, "/home/u/", true);
    let home = n.tree("/vz/private/301/home/u", scratch);
    step(
        "restore into the running VE",
        301,
        &o,
        files_of(&home),
        plan,
    );
    assert_ok(&o, "restore into the running VE");
    assert!(
        stderr(&o).contains("restore into VE 301 complete; VE running"),
        "{}",
        stderr(&o)
    );
    check_restored(&home, "changed\n");

    let o = restore_bpc4(config, "ve302.example.com", &srcs, "/home/u/", false);
    let home = n.tree("/vz/private/302/home/u", scratch);
    step(
        "restore into the stopped VE",
        302,
        &o,
        files_of(&home),
        vec![],
    );
    assert_ok(&o, "restore into the stopped VE");
    check_restored(&home, "hello from VE 302\n");
    out
}

#[test]
#[ignore = "VM tier"]
fn vm_core_scenarios_agree_with_the_simulated_hn() {
    let Some(s) = session("vm_core_scenarios_agree_with_the_simulated_hn") else {
        return;
    };
    let p = s.pool;
    let vm = p.vm("hn1");
    assert_eq!((vm.vg.as_str(), vm.fs.as_str()), ("vg-data", "ext4"));
    let bed = Bed::new(1);
    let sim = bed.hn("hn1");
    assert_eq!(
        sim.vg, "vg-data",
        "the simulated hn1 is ext4 on vg-data too"
    );
    let a = choreography(sim, &bed.config, bed.dir.path());
    let b = choreography(vm, &p.config, &p.dir);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x, y,
            "simulated HN (left) and VM (right) differ at: {}",
            x.step
        );
    }
    assert_eq!(a.len(), b.len());
    // What both showed is what should happen.
    assert_eq!(a[0].exit, Some(0));
    assert_eq!(
        a[0].vzctl,
        [
            "vzctl start 301",
            "vzctl --skiplock stop 301",
            "vzctl --skiplock start 301"
        ]
    );
    assert!(
        a[0].plan.iter().any(|l| l == "step 4 downtime"),
        "{:?}",
        a[0].plan
    );
    assert_eq!(
        planned_steps(&a[0]),
        [
            "step 1 lock",
            "step 2 clear-stale",
            "step 3 preflight",
            "step 4 downtime",
            "step 5 mount",
            "step 6 add-config",
            "step 7 check-paths",
            "step 8 transfer",
            "step 9 verify",
            "step 10 started"
        ],
        "the plan of a backup of / of a running VE"
    );
    assert!(
        a[2].vzctl.is_empty(),
        "a stopped VE is neither stopped nor started"
    );
    assert_eq!(a[2].ve_running, [(301, true), (302, false)]);
    assert_eq!(a[3].exit, Some(71), "refused before any downtime");
    assert!(
        a[3].refusal.iter().any(|l| l
            .contains("volume group vg-data has 33554432 bytes free; the snapshot needs 67108864 (snapshot.size)")),
        "{:?}",
        a[3].refusal
    );
    assert!(
        a[3].planned.iter().any(|l| l.starts_with("WARNING: ")
            && l.contains("the run will be refused before the VE is stopped")),
        "the plan warned: {:?}",
        a[3].planned
    );
    assert_eq!(
        ran_steps(&a[3]),
        ["step 1 lock", "step 2 clear-stale", "step 3 preflight"],
        "refused in the preflight, before the downtime step"
    );
    assert_eq!(a[3].vzctl, a[1].vzctl, "no vzctl stop for the refused run");
    // The restores: no downtime, run states unchanged, the confined receiver's plan.
    assert_eq!(a[4].exit, Some(0));
    assert_eq!(
        planned_steps(&a[4]),
        ["step 1 lock", "step 2 preflight", "step 3 transfer"],
        "the plan of a restore"
    );
    assert_eq!(a[4].vzctl, a[1].vzctl, "a restore neither stops nor starts");
    assert_eq!(a[5].exit, Some(0));
    assert!(a[5].vzctl.is_empty(), "the stopped VE stays stopped");
    assert_eq!(a[5].ve_running, [(301, true), (302, false)]);
    assert!(
        ran_steps(&a[5]) == ["step 1 lock", "step 2 preflight", "step 3 transfer"],
        "{:?}",
        a[5].plan
    );
    for o in &a[4..] {
        assert!(
            o.files
                .iter()
                .any(|f| f.starts_with("restored-new file 100600 1000:1000")),
            "{}: {:?}",
            o.step,
            o.files
        );
    }
    assert!(a.iter().all(|o| o.leftovers.is_empty()));
}
