//! BackupPC's argv as bpc-ovz receives it: the ssh form (`bpc-ovz ssh ...`), the server form
//! (`bpc-ovz server ...`) and the remote command words, NUL-separated in the input.
//!
//! Properties: no panic; an accepted rsync or tar command only ever names paths inside the
//! snapshot root once mapped, never with a `..` component; the rendered HN command splits back
//! into exactly the words it was built from (every value went through `quote`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/backuppc.rs"]
mod backuppc;
#[allow(dead_code)]
#[path = "../../src/quote.rs"]
mod quote;
#[allow(dead_code)]
#[path = "../../src/rsync_args.rs"]
mod rsync_args;
#[allow(dead_code)]
#[path = "../../src/tar_args.rs"]
mod tar_args;

const ROOT: &str = "/run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d/private/101";

/// `p` is ROOT or below it, and has no `..` component.
fn inside(p: &str) {
    assert!(
        p == ROOT || p.starts_with(&format!("{ROOT}/")),
        "{p:?} is outside {ROOT}"
    );
    assert!(!p.split('/').any(|c| c == ".."), "{p:?} has a `..`");
}

/// What the HN's shell makes of `cmd`: the words it runs.
fn split_back(cmd: &quote::RemoteCmd, want: &[String]) {
    let got = shell_words::split(&cmd.render()).expect("a rendered command splits");
    assert_eq!(got, want, "{}", cmd.render());
}

fn check_words(words: &[String]) {
    if let Ok(srv) = rsync_args::parse(words) {
        let relative = rsync_args::is_relative(&srv.options);
        let mut mapped = Vec::new();
        for p in &srv.paths {
            if let Ok(m) = rsync_args::map_path(p, ROOT, relative) {
                inside(m.trim_end_matches('/'));
                mapped.push(m);
            }
        }
        let cmd = quote::RemoteCmd::new("rsync")
            .args(&srv.options)
            .arg(".")
            .args(&mapped);
        let mut want = vec!["rsync".to_string()];
        want.extend(srv.options.iter().cloned());
        want.push(".".into());
        want.extend(mapped);
        split_back(&cmd, &want);
    }
    if let Ok(t) = tar_args::parse(words) {
        if let Ok(d) = rsync_args::map_path(&t.dir, ROOT, false) {
            inside(d.trim_end_matches('/'));
            let args = t.args_with_dir(&d);
            let cmd = quote::RemoteCmd::new("tar").args(&args);
            let mut want = vec!["tar".to_string()];
            want.extend(args);
            split_back(&cmd, &want);
        }
        for f in t.file_paths() {
            if let Ok(m) = rsync_args::map_path(&f, ROOT, false) {
                inside(m.trim_end_matches('/'));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<String> = s.split('\0').map(String::from).collect();
    if let Ok(inv) = backuppc::parse_ssh_argv(&args) {
        assert!(!inv.host.is_empty() && !inv.host.starts_with('-'));
        check_words(&inv.words);
    }
    if let Ok(inv) = backuppc::parse_server_argv(&args) {
        check_words(&inv.ssh.words);
    }
    check_words(&args);
    if let Ok(w) = backuppc::split_like_remote_shell(&args) {
        check_words(&w);
    }
    // The one audited quoting function: any word is one word for the shell, unchanged.
    for a in &args {
        let q = quote::quote(a);
        assert_eq!(
            shell_words::split(&q).ok(),
            Some(vec![a.clone()]),
            "quote({a:?}) = {q}"
        );
    }
});
