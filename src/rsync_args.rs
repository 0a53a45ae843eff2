//! The rsync server command line and its `--protect-args` block.
//!
//! BackupPC asks the client for `rsync --server [--sender] OPTIONS . PATH...`. This module
//! recognises such a command, refuses what is not one (or what could make the HN-side rsync touch
//! files outside the transfer: log files, batch files, temp dirs, ...), reads and writes the
//! NUL-separated protect-args block that rsync sends on stdin, and maps the VE-relative paths to
//! the HN directory they must be read from (or written to).
//!
//! It knows nothing about OpenVZ, LVM or SSH: the mapping target is just a directory string.

use std::io::Read;

use thiserror::Error;

/// Upper bound for a protect-args block (BackupPC's is < 1 KiB).
pub const MAX_PROTECTED_ARGS: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("remote command is not an rsync server invocation: {0}")]
    NotRsyncServer(String),
    #[error("option {0:?} is not allowed through bpc-ovz")]
    OptionRefused(String),
    #[error("rsync path {0:?} is refused: {1}")]
    PathRefused(String, &'static str),
    #[error("malformed rsync arguments: {0}")]
    Malformed(String),
    #[error("protect-args block on stdin is truncated (EOF after {0} bytes)")]
    ProtectTruncated(usize),
    #[error("protect-args block on stdin is larger than {MAX_PROTECTED_ARGS} bytes")]
    ProtectOversized,
    #[error("reading the protect-args block from stdin: {0}")]
    Io(String),
}

/// What direction the HN-side rsync runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// `--sender`: the HN sends files (a backup).
    Send,
    /// no `--sender`: the HN receives files (a restore).
    Receive,
}

/// A parsed `rsync --server ...` command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RsyncServer {
    pub direction: Direction,
    /// Options from argv, in order, including `--server` and `--sender`.
    pub options: Vec<String>,
    /// Whether the paths (and more options) arrive in the protect-args block on stdin.
    pub protect_args: bool,
    /// Paths from argv after the `.` (empty with protect-args).
    pub paths: Vec<String>,
}

/// The protect-args block: `argv0 \0 options... \0 . \0 paths... \0 \0`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProtectedArgs {
    pub argv0: String,
    pub options: Vec<String>,
    pub paths: Vec<String>,
}

/// Long options an rsync server may be given through bpc-ovz. Everything BackupPC 3 and 4 send is
/// here, plus harmless transfer tuning. Options naming files on the server (`--log-file`,
/// `--temp-dir`, batch files, `--*-dest`, `--*-from=FILE`, ...) are not.
const ALLOWED_LONG: &[&str] = &[
    "server",
    "sender",
    "numeric-ids",
    "perms",
    "owner",
    "group",
    "devices",
    "specials",
    "links",
    "hard-links",
    "times",
    "atimes",
    "crtimes",
    "open-noatime",
    "block-size",
    "recursive",
    "ignore-times",
    "timeout",
    "contimeout",
    "super",
    "fake-super",
    "delete",
    "delete-before",
    "delete-during",
    "delete-delay",
    "delete-after",
    "delete-excluded",
    "delete-missing-args",
    "ignore-missing-args",
    "ignore-errors",
    "force",
    "max-delete",
    "one-file-system",
    "partial",
    "stats",
    "log-format",
    "out-format",
    "checksum",
    "checksum-choice",
    "checksum-seed",
    "compress",
    "compress-choice",
    "compress-level",
    "skip-compress",
    "protect-args",
    "secluded-args",
    "relative",
    "implied-dirs",
    "inplace",
    "append",
    "append-verify",
    "sparse",
    "preallocate",
    "whole-file",
    "xattrs",
    "acls",
    "executability",
    "chmod",
    "bwlimit",
    "modify-window",
    "size-only",
    "existing",
    "ignore-existing",
    "update",
    "iconv",
    "omit-dir-times",
    "omit-link-times",
    "safe-links",
    "munge-links",
    "copy-links",
    "copy-unsafe-links",
    "copy-dirlinks",
    "keep-dirlinks",
    "max-size",
    "min-size",
    "dirs",
    "list-only",
    "fuzzy",
    "prune-empty-dirs",
    "from0",
    "files-from",
    "msgs2stderr",
    "stderr",
    "info",
    "debug",
    "blocking-io",
    "no-i-r",
    "inc-recursive",
    "human-readable",
    "itemize-changes",
    "verbose",
    "quiet",
    "progress",
    "outbuf",
    "write-devices",
    "copy-devices",
    "hard-links",
    "usermap",
    "groupmap",
    "chown",
    "numeric-ids",
    "old-compress",
    "new-compress",
    "protocol",
    "log-file-format",
];

/// Recognise an rsync server invocation among the remote command words (already split as the
/// remote shell would split them).
pub fn parse(words: &[String]) -> Result<RsyncServer, ArgsError> {
    let joined = words.join(" ");
    let not_rsync = || ArgsError::NotRsyncServer(abbreviate(&joined));
    let server_at = words
        .iter()
        .position(|w| w == "--server")
        .ok_or_else(not_rsync)?;
    if server_at == 0 {
        return Err(not_rsync());
    }
    // The word before --server is the rsync program (RsyncClientPath); earlier words may be a
    // wrapper such as `nice -n 5`. The program itself is ignored (the HN's own rsync runs), but
    // a word that is not plainly an rsync (`rsync;id`, `rsync$(id)`, `/x|y/rsync`) is refused.
    if !program_word_is(&words[server_at - 1], is_rsync_name) {
        return Err(not_rsync());
    }
    for w in &words[..server_at - 1] {
        if !is_harmless_wrapper_word(w) {
            return Err(not_rsync());
        }
    }
    let rest = &words[server_at..];
    let mut options = Vec::new();
    let mut paths = Vec::new();
    let mut seen_dot = false;
    for w in rest {
        if seen_dot {
            paths.push(w.clone());
        } else if w == "." {
            seen_dot = true;
        } else if w.starts_with('-') {
            check_option(w)?;
            options.push(w.clone());
        } else {
            return Err(ArgsError::Malformed(format!(
                "expected options then `.` then paths, found {:?}",
                abbreviate(w)
            )));
        }
    }
    let protect_args = options.iter().any(|o| short_flags(o).contains('s'))
        || options
            .iter()
            .any(|o| o == "--protect-args" || o == "--secluded-args");
    let direction = if options.iter().any(|o| o == "--sender") {
        Direction::Send
    } else {
        Direction::Receive
    };
    if !protect_args && !seen_dot {
        return Err(ArgsError::Malformed(
            "no `.` and no paths (and no --protect-args)".into(),
        ));
    }
    if !protect_args && paths.is_empty() {
        return Err(ArgsError::Malformed("no path after `.`".into()));
    }
    if protect_args && seen_dot {
        // rsync puts the paths on stdin with -s; paths in argv as well would be ambiguous.
        return Err(ArgsError::Malformed(
            "paths in argv together with --protect-args".into(),
        ));
    }
    Ok(RsyncServer {
        direction,
        options,
        protect_args,
        paths,
    })
}

/// Words allowed before the rsync program: `nice`, `ionice` and their numeric arguments.
fn is_harmless_wrapper_word(w: &str) -> bool {
    matches!(w, "-n" | "-c")
        || program_word_is(w, |b| matches!(b, "nice" | "ionice"))
        || w.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit())
            && !w.is_empty()
}

/// Longest program word accepted (Linux's PATH_MAX).
const MAX_PROGRAM_WORD: usize = 4096;

/// Whether `w` is plainly a program: a bare name or a path made only of ASCII letters, digits
/// and `._-+/` (no shell syntax, blank or control character, not an option), whose last
/// component `name_ok` accepts. Shared by the rsync and tar parsers.
pub fn program_word_is(w: &str, name_ok: impl Fn(&str) -> bool) -> bool {
    let base = w.rsplit('/').next().unwrap_or(w);
    !w.is_empty()
        && w.len() <= MAX_PROGRAM_WORD
        && !w.starts_with('-')
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c))
        && name_ok(base)
}

/// `rsync`, or `rsync` with a version-like suffix (`rsync3`, `rsync-3.2.7`, `rsync.static`).
fn is_rsync_name(base: &str) -> bool {
    match base.strip_prefix("rsync") {
        Some("") => true,
        Some(rest) => rest.starts_with(|c: char| c.is_ascii_digit() || "-._".contains(c)),
        None => false,
    }
}

/// The single-letter flags of a short-option word, up to `e` (whose value follows).
fn short_flags(opt: &str) -> String {
    if opt.starts_with("--") || !opt.starts_with('-') {
        return String::new();
    }
    opt[1..]
        .chars()
        .take_while(|&c| c != 'e' && c != 'B')
        .collect()
}

fn check_option(opt: &str) -> Result<(), ArgsError> {
    if let Some(long) = opt.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        let positive = name.strip_prefix("no-").unwrap_or(name);
        if name == "files-from" || positive == "files-from" {
            // Only "-" (names come through the protocol) is safe; a path would read an HN file.
            return if long == "files-from=-" || name.starts_with("no-") {
                Ok(())
            } else {
                Err(ArgsError::OptionRefused(opt.to_string()))
            };
        }
        if ALLOWED_LONG.contains(&positive) {
            return Ok(());
        }
        return Err(ArgsError::OptionRefused(opt.to_string()));
    }
    // Short options: a cluster of letters, optionally ending in `e<proto-info>`; or -B<size>.
    let body = &opt[1..];
    if body.is_empty() {
        return Err(ArgsError::OptionRefused(opt.to_string()));
    }
    if let Some(size) = body.strip_prefix('B')
        && !size.is_empty()
        && size.chars().all(|c| c.is_ascii_digit())
    {
        return Ok(());
    }
    let (flags, einfo) = match body.find('e') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    // Letters that take a file argument or change what the server touches are refused.
    const REFUSED_SHORT: &[char] = &['T', 'M', 'f', 'F', 'b', 'k', 'K'];
    if !flags.chars().all(|c| c.is_ascii_alphabetic())
        || flags.chars().any(|c| REFUSED_SHORT.contains(&c))
    {
        return Err(ArgsError::OptionRefused(opt.to_string()));
    }
    if let Some(info) = einfo
        && !info.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return Err(ArgsError::OptionRefused(opt.to_string()));
    }
    Ok(())
}

/// Read the protect-args block from `input`. Returns it and the bytes read past its end (the
/// start of the rsync protocol), which must be forwarded unchanged.
pub fn read_protected(input: &mut impl Read) -> Result<(ProtectedArgs, Vec<u8>), ArgsError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = block_end(&buf) {
            let rest = buf.split_off(end);
            return Ok((decode_protected(&buf)?, rest));
        }
        if buf.len() > MAX_PROTECTED_ARGS {
            return Err(ArgsError::ProtectOversized);
        }
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArgsError::Io(e.to_string())),
        };
        if n == 0 {
            return Err(ArgsError::ProtectTruncated(buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Index just past the terminating empty string: the first NUL that starts the block or follows
/// another NUL.
fn block_end(buf: &[u8]) -> Option<usize> {
    let mut prev_nul = true;
    for (i, &b) in buf.iter().enumerate() {
        if b == 0 {
            if prev_nul {
                return Some(i + 1);
            }
            prev_nul = true;
        } else {
            prev_nul = false;
        }
    }
    None
}

fn decode_protected(block: &[u8]) -> Result<ProtectedArgs, ArgsError> {
    if block.len() > MAX_PROTECTED_ARGS {
        return Err(ArgsError::ProtectOversized);
    }
    let mut words: Vec<String> = Vec::new();
    for raw in block.split(|&b| b == 0) {
        if raw.is_empty() {
            break;
        }
        let w = std::str::from_utf8(raw)
            .map_err(|_| ArgsError::Malformed("protect-args block is not UTF-8".into()))?;
        words.push(w.to_string());
    }
    let mut it = words.into_iter();
    let argv0 = it
        .next()
        .ok_or_else(|| ArgsError::Malformed("empty protect-args block".into()))?;
    let mut options = Vec::new();
    let mut paths = Vec::new();
    let mut seen_dot = false;
    for w in it {
        if seen_dot {
            paths.push(w);
        } else if w == "." {
            seen_dot = true;
        } else if w.starts_with('-') {
            check_option(&w)?;
            options.push(w);
        } else {
            return Err(ArgsError::Malformed(format!(
                "unexpected word {:?} in protect-args block",
                abbreviate(&w)
            )));
        }
    }
    if !seen_dot || paths.is_empty() {
        return Err(ArgsError::Malformed(
            "protect-args block has no `.` and path".into(),
        ));
    }
    Ok(ProtectedArgs {
        argv0,
        options,
        paths,
    })
}

impl ProtectedArgs {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        push(&self.argv0);
        for o in &self.options {
            push(o);
        }
        push(".");
        for p in &self.paths {
            push(p);
        }
        out.push(0);
        out
    }
}

/// Whether the transfer uses `--relative` (`-R`), which changes how paths must be mapped.
pub fn is_relative(options: &[String]) -> bool {
    options
        .iter()
        .any(|o| o == "--relative" || short_flags(o).contains('R'))
}

/// Normalise a VE path: absolute, no `..`, no NUL. Returns the components relative to the VE root
/// (empty for `/`) and whether it ended in `/`.
pub fn ve_relative(path: &str) -> Result<(String, bool), ArgsError> {
    if path.is_empty() {
        return Err(ArgsError::PathRefused(path.into(), "empty path"));
    }
    if path.contains('\0') {
        return Err(ArgsError::PathRefused(path.into(), "NUL byte"));
    }
    let trailing = path.ends_with('/') || path.ends_with("/.");
    let mut parts = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(ArgsError::PathRefused(path.into(), "`..` is not allowed")),
            c => parts.push(c),
        }
    }
    Ok((parts.join("/"), trailing || parts.is_empty()))
}

/// Map a VE path to the HN directory `root` that holds the VE's `/`.
///
/// With `--relative` the VE part is kept after a `/./` marker so that rsync names the files
/// exactly as it would have on the VE.
pub fn map_path(path: &str, root: &str, relative: bool) -> Result<String, ArgsError> {
    let (rel, trailing) = ve_relative(path)?;
    let root = root.trim_end_matches('/');
    let mut out = if relative {
        format!("{root}/./{rel}")
    } else if rel.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{rel}")
    };
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// Whether backing up `path` includes the VE's `/etc` directory.
pub fn covers_etc(path: &str) -> bool {
    match ve_relative(path) {
        Ok((rel, _)) => rel.is_empty() || rel == "etc",
        Err(_) => false,
    }
}

fn abbreviate(s: &str) -> String {
    if s.chars().count() > 120 {
        let short: String = s.chars().take(117).collect();
        format!("{short}...")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn backuppc4_protect_args_argv() {
        let r = parse(&words(
            "/usr/bin/rsync --server --sender -slHogDtprcxe.iLsfxC",
        ))
        .unwrap();
        assert_eq!(r.direction, Direction::Send);
        assert!(r.protect_args);
        assert!(r.paths.is_empty());
        let r = parse(&words("/usr/bin/rsync --server -slHogDtprRe.iLsfxC")).unwrap();
        assert_eq!(r.direction, Direction::Receive);
        assert!(is_relative(&r.options));
    }

    #[test]
    fn e_value_s_is_not_protect_args() {
        // The `s` in `e.iLsfxC` is protocol info, not -s.
        let r = parse(&words(
            "rsync --server --sender -lHogDtprcxe.iLsfxC --timeout=72000 --numeric-ids . /my/",
        ))
        .unwrap();
        assert!(!r.protect_args);
        assert_eq!(r.paths, vec!["/my/"]);
    }

    #[test]
    fn backuppc3_argv() {
        let r = parse(&words(
            "/usr/bin/rsync --server --sender --numeric-ids --perms --owner --group -D --links --hard-links --times --block-size=2048 --recursive --ignore-times . /",
        ))
        .unwrap();
        assert_eq!(r.paths, vec!["/"]);
        assert!(!r.protect_args);
    }

    #[test]
    fn refuses_non_rsync_and_dangerous_options() {
        for bad in [
            "sh -c id",
            "rsync --daemon",
            "/bin/rm --server -rf /",
            "echo rsync --server --sender . /",
            "rsync --server --sender --log-file=/etc/passwd . /",
            "rsync --server --sender --files-from=/etc/shadow . /",
            "rsync --server --temp-dir=/etc . /",
            "rsync --server --write-batch=/x --sender . /",
            "rsync --server --sender --remove-source-files . /",
            "rsync --server --sender -T/etc . /",
            "rsync --server --sender --link-dest=/ . /",
            "rsync --server --sender . ",
            "rsync --server --sender foo /",
        ] {
            let w: Vec<String> = bad
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            assert!(parse(&w).is_err(), "{bad} must be refused");
        }
        assert!(parse(&words("nice -n 5 /usr/bin/rsync --server --sender -lr . /")).is_ok());
    }

    #[test]
    fn the_program_word_must_be_plainly_an_rsync() {
        for good in [
            "rsync",
            "/usr/bin/rsync",
            "/usr/local/bin/rsync3",
            "/opt/rsync-3.2.7/bin/rsync-3.2.7",
            "rsync.static",
            "/usr/bin/nice -n 5 /usr/bin/rsync",
            "ionice -c 3 rsync",
        ] {
            let mut w = words(good);
            w.extend(words("--server --sender -lr . /"));
            assert!(parse(&w).is_ok(), "{good:?} is an rsync");
        }
        for bad in [
            "rsync;id",
            "rsync$(id)",
            "rsync`id`",
            "/usr/bin/rsync|x",
            "rsync&&id",
            "rsync>x",
            "rsync'",
            "rsync\"",
            "rsync\nid",
            "rsync\tx",
            "rsync\u{1b}",
            "rsync x",
            "rsyncx",
            "/tmp/$(id)/rsync",
            "/tmp/a b/rsync",
            "-rsync",
            "/x;y/nice rsync",
            "nice;id rsync",
            "rsync*",
        ] {
            let mut w = vec![bad.to_string()];
            if bad.contains(' ') && !bad.starts_with('/') || bad.starts_with("/x;y") {
                w = bad.split(' ').map(String::from).collect();
            }
            w.extend(words("--server --sender -lr . /"));
            let e = parse(&w).expect_err(bad);
            assert!(matches!(e, ArgsError::NotRsyncServer(_)), "{bad:?}: {e}");
        }
        let long = format!("/{}/rsync", "a".repeat(MAX_PROGRAM_WORD));
        let mut w = vec![long];
        w.extend(words("--server --sender -lr . /"));
        assert!(parse(&w).is_err(), "a program word longer than PATH_MAX");
    }

    #[test]
    fn protected_block_roundtrip_and_leftover() {
        let mut input: &[u8] = b"rsync\0--timeout=72000\0--numeric-ids\0.\0/\0\0\x1f\0\0\0more";
        let (p, rest) = read_protected(&mut input).unwrap();
        assert_eq!(p.argv0, "rsync");
        assert_eq!(p.options, vec!["--timeout=72000", "--numeric-ids"]);
        assert_eq!(p.paths, vec!["/"]);
        assert_eq!(rest, b"\x1f\0\0\0more");
        assert_eq!(
            p.encode(),
            b"rsync\0--timeout=72000\0--numeric-ids\0.\0/\0\0"
        );
    }

    #[test]
    fn protected_block_errors() {
        let mut trunc: &[u8] = b"rsync\0--numeric-ids\0.\0/";
        assert!(matches!(
            read_protected(&mut trunc),
            Err(ArgsError::ProtectTruncated(_))
        ));
        let big = vec![b'a'; MAX_PROTECTED_ARGS + 10];
        assert_eq!(
            read_protected(&mut big.as_slice()).unwrap_err(),
            ArgsError::ProtectOversized
        );
        let mut bad: &[u8] = b"rsync\0--log-file=/x\0.\0/\0\0";
        assert!(matches!(
            read_protected(&mut bad),
            Err(ArgsError::OptionRefused(_))
        ));
        let mut nopath: &[u8] = b"rsync\0--numeric-ids\0\0";
        assert!(read_protected(&mut nopath).is_err());
    }

    #[test]
    fn path_mapping() {
        let root = "/run/bpc-ovz/mnt/s/private/101";
        assert_eq!(map_path("/", root, false).unwrap(), format!("{root}/"));
        assert_eq!(
            map_path("/etc/", root, false).unwrap(),
            format!("{root}/etc/")
        );
        assert_eq!(
            map_path("/etc", root, false).unwrap(),
            format!("{root}/etc")
        );
        assert_eq!(
            map_path("/var//lib/./mysql/", root, false).unwrap(),
            format!("{root}/var/lib/mysql/")
        );
        assert_eq!(
            map_path("/home", root, true).unwrap(),
            format!("{root}/./home")
        );
        assert_eq!(map_path("/", root, true).unwrap(), format!("{root}/./"));
        assert!(map_path("/../etc", root, false).is_err());
        assert!(map_path("/var/../../x", root, false).is_err());
        assert!(map_path("", root, false).is_err());
        assert!(covers_etc("/"));
        assert!(covers_etc("/etc/"));
        assert!(!covers_etc("/var/lib"));
    }
}
