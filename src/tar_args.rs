//! The tar command line of BackupPC's tar XferMethod.
//!
//! BackupPC runs `$sshPath -q -x -n -l root $host env LC_ALL=C $tarPath -c -v -f - -C $shareName+
//! --totals [--newer=DATE] $fileList+` to back up, and `... $tarPath -x -p --numeric-owner
//! --same-owner -v -f - -C $shareName+` to restore. This module recognises exactly that kind of
//! command, refuses options that would make the HN-side tar read or write other files or run
//! programs (`--to-command`, `-I`, `-T`, `--listed-incremental`, an `-f` other than `-`, ...), and
//! rebuilds the argv with the `-C` directory replaced. It knows nothing about OpenVZ or LVM.

use crate::rsync_args::{ArgsError, Direction, program_word_is};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TarCmd {
    pub direction: Direction,
    /// `VAR=value` words given to `env` before tar (only `LC_ALL`/`LANG`/`LC_*`/`TZ`).
    pub env: Vec<String>,
    /// Options in order, `-C DIR` excluded (see `dir`).
    pub options: Vec<String>,
    /// The `-C` directory: the share (backup) or the restore target, a VE path.
    pub dir: String,
    /// File list (relative to `dir`) after the options.
    pub files: Vec<String>,
}

/// Options taking no value.
const FLAGS: &[&str] = &[
    "-c",
    "--create",
    "-x",
    "--extract",
    "--get",
    "-v",
    "--verbose",
    "-p",
    "--preserve-permissions",
    "--same-permissions",
    "--numeric-owner",
    "--same-owner",
    "--no-same-owner",
    "--totals",
    "--one-file-system",
    "-l",
    "--sparse",
    "-S",
    "--ignore-failed-read",
    "--xattrs",
    "--no-xattrs",
    "--acls",
    "--no-acls",
    "--selinux",
    "--no-selinux",
    "--atime-preserve",
    "--no-recursion",
    "--recursion",
    "--ignore-zeros",
    "-i",
    "--preserve-order",
    "-s",
    "--same-order",
    "--overwrite",
    "--unlink-first",
    "-U",
    "--keep-old-files",
    "-k",
    "--skip-old-files",
    "--delay-directory-restore",
    "--no-overwrite-dir",
    "--warning=no-file-changed",
    "--warning=no-file-removed",
];

/// Long options with `=value` that are harmless.
const WITH_VALUE: &[&str] = &[
    "--newer",
    "--after-date",
    "--newer-mtime",
    "--exclude",
    "--warning",
    "--blocking-factor",
    "--record-size",
    "--format",
    "--xattrs-include",
    "--xattrs-exclude",
];

pub fn parse(words: &[String]) -> Result<TarCmd, ArgsError> {
    let joined = words.join(" ");
    let not_tar = || {
        ArgsError::NotRsyncServer(format!(
            "not an rsync or tar server command: {}",
            short(&joined)
        ))
    };
    let mut i = 0;
    let mut env = Vec::new();
    if words
        .first()
        .is_some_and(|w| program_word_is(w, |b| b == "env"))
    {
        i = 1;
        while let Some(w) = words.get(i) {
            match w.split_once('=') {
                Some((k, v))
                    if (k == "LC_ALL" || k == "LANG" || k.starts_with("LC_") || k == "TZ")
                        && !v.contains('\n') =>
                {
                    env.push(w.clone());
                    i += 1;
                }
                Some(_) => return Err(ArgsError::OptionRefused(w.clone())),
                None => break,
            }
        }
    }
    let prog = words.get(i).ok_or_else(not_tar)?;
    // Only the HN's own tar runs, but a word that is not plainly one (`tar;id`, `/x$(id)/tar`)
    // is refused all the same.
    if !program_word_is(prog, |b| matches!(b, "tar" | "gtar" | "bsdtar")) {
        return Err(not_tar());
    }
    i += 1;
    let mut options = Vec::new();
    let mut dir = None;
    let mut files = Vec::new();
    let mut direction = None;
    let mut saw_f = false;
    while i < words.len() {
        let w = &words[i];
        if !files.is_empty() || !w.starts_with('-') {
            if w.starts_with('-') && w != "-" {
                return Err(ArgsError::Malformed(format!(
                    "option {w:?} after the file list"
                )));
            }
            files.push(w.clone());
            i += 1;
            continue;
        }
        match w.as_str() {
            "-f" | "--file" => {
                let v = words
                    .get(i + 1)
                    .ok_or_else(|| ArgsError::Malformed("-f needs a value".into()))?;
                if v != "-" {
                    return Err(ArgsError::OptionRefused(format!("-f {v}")));
                }
                saw_f = true;
                options.push("-f".into());
                options.push("-".into());
                i += 2;
                continue;
            }
            "--file=-" => {
                saw_f = true;
                options.push(w.clone());
            }
            "-C" | "--directory" => {
                let v = words
                    .get(i + 1)
                    .ok_or_else(|| ArgsError::Malformed("-C needs a value".into()))?;
                if dir.is_some() {
                    return Err(ArgsError::Malformed("more than one -C".into()));
                }
                dir = Some(v.clone());
                i += 2;
                continue;
            }
            "-N" => {
                let v = words
                    .get(i + 1)
                    .ok_or_else(|| ArgsError::Malformed("-N needs a value".into()))?;
                if v.starts_with('/') || v.starts_with('.') {
                    // `-N FILE` takes the date from a file on the HN.
                    return Err(ArgsError::OptionRefused(format!("-N {v}")));
                }
                options.push(w.clone());
                options.push(v.clone());
                i += 2;
                continue;
            }
            _ => {
                if let Some(d) = w.strip_prefix("--directory=") {
                    dir = Some(d.to_string());
                } else if FLAGS.contains(&w.as_str()) {
                    options.push(w.clone());
                } else if let Some((k, v)) = w.split_once('=') {
                    if !WITH_VALUE.contains(&k)
                        || (matches!(k, "--newer" | "--after-date" | "--newer-mtime")
                            && (v.starts_with('/') || v.starts_with('.')))
                    {
                        return Err(ArgsError::OptionRefused(w.clone()));
                    }
                    options.push(w.clone());
                } else {
                    return Err(ArgsError::OptionRefused(w.clone()));
                }
            }
        }
        match w.as_str() {
            "-c" | "--create" => direction = set_dir(direction, Direction::Send)?,
            "-x" | "--extract" | "--get" => direction = set_dir(direction, Direction::Receive)?,
            _ => {}
        }
        i += 1;
    }
    let direction = direction.ok_or_else(|| ArgsError::Malformed("tar without -c or -x".into()))?;
    if !saw_f {
        return Err(ArgsError::Malformed(
            "tar without -f - (the archive must be stdin/stdout)".into(),
        ));
    }
    let dir = dir.ok_or_else(|| ArgsError::Malformed("tar without -C DIR (the share)".into()))?;
    for f in &files {
        if f.split('/').any(|c| c == "..") {
            return Err(ArgsError::PathRefused(f.clone(), "`..` is not allowed"));
        }
    }
    if direction == Direction::Send && files.is_empty() {
        return Err(ArgsError::Malformed("tar -c without a file list".into()));
    }
    Ok(TarCmd {
        direction,
        env,
        options,
        dir,
        files,
    })
}

fn set_dir(cur: Option<Direction>, d: Direction) -> Result<Option<Direction>, ArgsError> {
    match cur {
        Some(c) if c != d => Err(ArgsError::Malformed("tar with both -c and -x".into())),
        _ => Ok(Some(d)),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 120 {
        format!("{}...", s.chars().take(117).collect::<String>())
    } else {
        s.to_string()
    }
}

impl TarCmd {
    /// tar's argv (without the program) with `-C` set to `dir`.
    pub fn args_with_dir(&self, dir: &str) -> Vec<String> {
        let mut v = self.options.clone();
        v.push("-C".into());
        v.push(dir.to_string());
        v.extend(self.files.iter().cloned());
        v
    }

    /// Each file-list entry as a VE path below the share (for the symlink check).
    pub fn file_paths(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|f| {
                let f = f.trim_start_matches("./");
                if f == "." || f.is_empty() {
                    self.dir.clone()
                } else {
                    format!(
                        "{}/{}",
                        self.dir.trim_end_matches('/'),
                        f.trim_start_matches('/')
                    )
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn backuppc_tar_forms() {
        let t = parse(&w(
            "env LC_ALL=C /bin/tar -c -v -f - -C / --totals --newer=2026-11-27 ./etc ./home",
        ))
        .unwrap();
        assert_eq!(t.direction, Direction::Send);
        assert_eq!(t.env, vec!["LC_ALL=C"]);
        assert_eq!(t.dir, "/");
        assert_eq!(t.files, vec!["./etc", "./home"]);
        assert_eq!(
            t.args_with_dir("/snap/private/101"),
            w("-c -v -f - --totals --newer=2026-11-27 -C /snap/private/101 ./etc ./home")
        );
        assert_eq!(t.file_paths(), vec!["/etc", "/home"]);
        let r = parse(&w(
            "env LC_ALL=C /bin/tar -x -p --numeric-owner --same-owner -v -f - -C /var/www",
        ))
        .unwrap();
        assert_eq!(r.direction, Direction::Receive);
        assert!(r.files.is_empty());
        let full = parse(&w(
            "env LC_ALL=C tar -c -v -f - -C /var/lib/mysql --totals .",
        ))
        .unwrap();
        assert_eq!(full.file_paths(), vec!["/var/lib/mysql"]);
    }

    #[test]
    fn refuses_dangerous_tar() {
        for bad in [
            "tar -c -f /etc/shadow -C / .",
            "tar -c -f - -C / --to-command=sh .",
            "tar -c -f - -C / -I gzip .",
            "tar -c -f - -C / -T /etc/list",
            "tar -c -f - -C / --files-from=/etc/list",
            "tar -c -f - -C / --listed-incremental=/etc/snar .",
            "tar -c -f - -C / --checkpoint-action=exec=sh .",
            "tar -c -f - -C / --newer=/etc/passwd .",
            "tar -c -f - -C / ../..",
            "env PATH=/tmp tar -c -f - -C / .",
            "sh -c tar",
            "tar;id -c -f - -C / .",
            "tar$(id) -c -f - -C / .",
            "/usr/bin/tar|x -c -f - -C / .",
            "/tmp/$(id)/tar -c -f - -C / .",
            "/tmp/`id`/gtar -c -f - -C / .",
            "env;id LC_ALL=C tar -c -f - -C / .",
            "/x$(id)/env LC_ALL=C tar -c -f - -C / .",
            "tarx -c -f - -C / .",
            "tar -c -v -C / .",
            "tar -c -x -f - -C / .",
        ] {
            assert!(parse(&w(bad)).is_err(), "{bad} must be refused");
        }
    }
}
