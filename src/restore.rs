//! Restores into a VE: the plan, and the confined receiver.
//!
//! A restore writes into the VE's live root (`VE_ROOT`) when the VE runs and into its private
//! area (`VE_PRIVATE`) when it is stopped; its run state is not changed. The VE's tree is
//! untrusted: it may hold symlinks such as `var/www -> /etc` or `home/u/up -> ../../../..`, and a
//! running VE can change them during the restore. So the receiving rsync never runs with the HN's
//! view of the filesystem: it runs `chroot`ed into the VE's tree, inside a private mount namespace
//! (`unshare -m`), where absolute symlinks resolve to the VE's own files and `..` stops at the
//! VE's root. The binary is the **HN's own** rsync (copied, with its shared libraries and loader,
//! into a private tmpfs mounted on a fresh directory in the VE tree, visible only in that mount
//! namespace): no program or library from the VE runs with HN privileges. To keep it so, restores
//! require `--numeric-ids` (no NSS lookups, which would load the VE's libnss modules) and refuse
//! `--iconv` (which would load the VE's gconv modules).

use crate::backup::{Fail, Job, Transfer, VeFacts, lock_step, preflight_step};
use crate::config::Config;
use crate::plan::{Action, Phase, Plan, Step};
use crate::quote::{RemoteCmd, quote};
use crate::snapshot::{ModeChain, Quiesce};
use crate::{EXIT_REFUSED, rsync_args};

/// Name of the directory (in the VE tree's root) that carries the HN's rsync during a restore.
pub fn tool_dir_name(run_id: &str) -> String {
    format!(".bpcovz-restore-{run_id}")
}

/// The receiver-side rsync filter rule that keeps `--delete` off the tool directory.
pub fn protect_tool_dir(tool: &str) -> String {
    format!("--filter=P /{tool}")
}

/// Refuse tar options that would make the confined tar load code from the VE.
pub fn check_tar_restore_options(t: &crate::tar_args::TarCmd) -> Result<(), Fail> {
    if !t.options.iter().any(|o| o == "--numeric-owner") {
        return Err(Fail::new(
            EXIT_REFUSED,
            "tar restores through bpc-ovz need --numeric-owner (BackupPC's default TarClientRestoreCmd has it): name lookups would load the VE's own NSS libraries as HN root",
        ));
    }
    Ok(())
}

/// Refuse rsync options that would make the confined receiver load code from the VE.
pub fn check_restore_options(t: &Transfer) -> Result<(), Fail> {
    let opts = t.all_options();
    if !opts.iter().any(|o| o == "--numeric-ids") {
        return Err(Fail::new(
            EXIT_REFUSED,
            "restores through bpc-ovz need --numeric-ids (add it to $Conf{RsyncRestoreArgs}): name lookups would load the VE's own NSS libraries as HN root",
        ));
    }
    if let Some(o) = opts.iter().find(|o| o.starts_with("--iconv")) {
        return Err(Fail::new(
            EXIT_REFUSED,
            format!(
                "restores through bpc-ovz refuse {o}: it would load the VE's gconv modules as HN root"
            ),
        ));
    }
    Ok(())
}

/// The transfer command: a private mount namespace, the HN's rsync on a tmpfs inside the VE tree,
/// and `chroot VE-TREE rsync --server ...`. Setup messages go to stderr (never the protocol).
pub fn confined_command(tree: &str, tool: &str, program: &str, args: &[String]) -> String {
    let inner = RemoteCmd::new("chroot").arg(tree).raw("\"$@\"").args(args);
    let script = format!(
        "set -u\n\
         mount --make-rprivate / 2>/dev/null\n\
         V={tree}; N={tool}; T=\"$V/$N\"\n\
         fail() {{ echo \"bpc-ovz: restore: $*\" >&2; exit 72; }}\n\
         cleanup() {{ umount \"$T\" 2>/dev/null; if [ -d \"$T\" ] && [ ! -L \"$T\" ]; then rmdir \"$T\" 2>/dev/null; fi; }}\n\
         if [ -L \"$V\" ] || [ ! -d \"$V\" ]; then fail \"target $V is not a directory\"; fi\n\
         mkdir \"$T\" || fail \"cannot create $T\"\n\
         if ! mount -t tmpfs -o size=256m,mode=0700 bpcovz-tool \"$T\" || ! mountpoint -q \"$T\"; then cleanup; fail \"cannot mount a tmpfs on $T\"; fi\n\
         P=$(command -v {prog}) || {{ cleanup; fail \"no {prog} on this HN\"; }}\n\
         cp \"$P\" \"$T/{prog}\" || {{ cleanup; fail \"cannot copy $P\"; }}\n\
         L=\n\
         for f in $(ldd \"$P\" 2>/dev/null | sed -n 's/.*=> \\(\\/[^ ]*\\).*/\\1/p; s/^[[:space:]]*\\(\\/[^ ]*\\) (.*/\\1/p'); do\n\
         \x20 cp -L \"$f\" \"$T/\" || {{ cleanup; fail \"cannot copy $f\"; }}\n\
         \x20 case \"${{f##*/}}\" in ld-linux*|ld64*|ld.so*) L=${{f##*/}} ;; esac\n\
         done\n\
         if [ -n \"$L\" ]; then set -- \"/$N/$L\" --library-path \"/$N\" \"/$N/{prog}\"; else set -- \"/$N/{prog}\"; fi\n\
         LC_ALL=C {inner}\n\
         rc=$?\n\
         cleanup\n\
         exit $rc",
        tree = quote(tree),
        tool = quote(tool),
        prog = program,
        inner = inner,
    );
    format!("exec unshare -m /bin/sh -c {}", quote(&script))
}

/// Build the restore plan: lock, preflight (vzctl lock, run state unchanged since the probe),
/// the confined transfer.
pub fn build_plan(
    cfg: &Config,
    facts: &VeFacts,
    job: &Job,
    run_id: &str,
) -> Result<(Plan, Vec<u8>, String), Fail> {
    match job {
        Job::Rsync(t) => check_restore_options(t)?,
        Job::Tar(t) => check_tar_restore_options(t)?,
    }
    let veid = &facts.veid;
    for p in job.ve_paths() {
        rsync_args::ve_relative(&p).map_err(|e| Fail::new(EXIT_REFUSED, e.to_string()))?;
    }
    if facts.layout == "ploop" && !facts.running {
        return Err(Fail::new(
            crate::EXIT_PRECONDITION,
            format!(
                "{}: VE {veid} is a stopped ploop container: its files are inside an image; start it (or `vzctl mount` it) to restore into it",
                facts.hn.name
            ),
        ));
    }
    let (tree, where_) = if facts.running {
        (facts.ve_root.clone(), "its live root (it runs)")
    } else {
        (facts.private.clone(), "its private area (it is stopped)")
    };
    let tool = tool_dir_name(run_id);
    let mode = ModeChain::stop_only(veid, String::new());
    let state_check = format!(
        "if ve_running; then now=1; else now=0; fi\nif [ $now != {} ]; then echo \"VE {veid} changed its run state since it was probed: restore refused\"; return 22; fi",
        if facts.running { 1 } else { 0 }
    );
    let undo_extra = format!(
        "T={}\nif [ -d \"$T\" ] && [ ! -L \"$T\" ]; then umount \"$T\" 2>/dev/null; rmdir \"$T\" 2>/dev/null; fi",
        quote(&format!("{}/{tool}", tree.trim_end_matches('/')))
    );
    let steps = vec![
        lock_step(cfg, veid),
        preflight_step(
            2,
            facts,
            format!(
                "check that vzctl's lock of VE {veid} is free and take it; the VE is still {}",
                if facts.running { "running" } else { "stopped" }
            ),
            &state_check,
            &undo_extra,
        ),
    ];
    let mut steps = steps;
    // The receiver's argv: the request's options, `.`, and the paths unchanged (they are VE paths,
    // and the receiver runs with the VE's tree as its root). With protect-args the block is
    // forwarded unchanged on stdin.
    let (command, prefix, note) = match job {
        Job::Tar(tc) => (
            confined_command(&tree, &tool, "tar", &tc.args_with_dir(&tc.dir)),
            Vec::new(),
            None,
        ),
        Job::Rsync(t) => {
            let mut args = t.server.options.clone();
            // The tool directory sits in the tree being restored: a restore of `/` with --delete
            // (BackupPC's default) would try to delete it (rmdir of a mount point: EBUSY, rsync
            // exit 23). A receiver-side protect rule, anchored at the transfer root, keeps it.
            args.push(protect_tool_dir(&tool));
            if t.protected.is_none() {
                args.push(".".into());
                args.extend(t.server.paths.iter().cloned());
            }
            let command = confined_command(&tree, &tool, "rsync", &args);
            match &t.protected {
                Some(p) => {
                    let mut b = p.encode();
                    b.extend_from_slice(&t.leftover);
                    let note = format!(
                        "protect-args block forwarded unchanged: {} . {}",
                        p.options.join(" "),
                        p.paths.join(" ")
                    );
                    (command, b, Some(note))
                }
                None => (command, t.leftover.clone(), None),
            }
        }
    };
    steps.push(Step {
        id: 3,
        name: "transfer".into(),
        phase: Phase::Transfer,
        summary: format!(
            "relay BackupPC's {tool} to the HN's {tool}, chrooted into {where_} {tree} in a private mount namespace",
            tool = job.tool()
        ),
        action: Action::Transfer { command: command.clone(), stdin_note: note },
        undo: None,
        holds_locks: false,
    });
    let plan = Plan {
        title: format!(
            "bpc-ovz restore plan for {} (VE {veid} on {})",
            facts.listed.hostname.as_deref().unwrap_or("-"),
            facts.hn.name
        ),
        facts: vec![
            (
                "HN".into(),
                format!("{} ({}:{})", facts.hn.name, facts.hn.host, facts.hn.port),
            ),
            (
                "VE".into(),
                format!(
                    "{veid} ({})",
                    if facts.running { "running" } else { "stopped" }
                ),
            ),
            ("target".into(), format!("{tree} ({where_})")),
            ("paths".into(), job.ve_paths().join(" ")),
            (
                "confinement".into(),
                format!(
                    "unshare -m + chroot into the VE tree, the HN's own {} on a private tmpfs",
                    job.tool()
                ),
            ),
        ],
        warnings: facts.warnings.clone(),
        library: mode.library(),
        steps,
    };
    Ok((plan, prefix, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_command_is_valid_sh_and_chroots() {
        let c = confined_command(
            "/vz/root/101",
            ".bpcovz-restore-x",
            "rsync",
            &["--server".into(), ".".into(), "/a b".into()],
        );
        assert!(c.starts_with("exec unshare -m /bin/sh -c "));
        // The inner script parses.
        let inner = shell_words::split(&c).unwrap();
        let script = &inner[inner.len() - 1];
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(script)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
        assert!(
            script.contains("chroot /vz/root/101 \"$@\" --server . 'a b'")
                || script.contains("chroot /vz/root/101 \"$@\" --server . '/a b'"),
            "{script}"
        );
    }
}
