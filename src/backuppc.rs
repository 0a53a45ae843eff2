//! BackupPC knowledge: the two ways BackupPC runs its client program.
//!
//! 1. BackupPC 4 runs the `-e` program of `$Conf{RsyncSshArgs}` with the argv ssh would get:
//!    `[ssh options] HOST COMMAND...` (`bpc-ovz ssh ...`).
//! 2. BackupPC 3 / BackupPC_ovz: `bpc-ovz server [restore] $host $sshPath -q -x -l root $host
//!    $rsyncPath $argList+`, whose `$argList+` words are already shell-escaped.
//!
//! Both end as a host and the remote command words, split exactly as the remote shell would
//! split the command line ssh sends (ssh joins its command words with spaces).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshInvocation {
    pub host: String,
    pub login: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub config_file: Option<String>,
    /// Options given with `-o` (accepted and ignored: bpc-ovz takes its SSH settings from its config).
    pub options: Vec<String>,
    /// The remote command, split into words as the remote shell would.
    pub words: Vec<String>,
    /// `-q` (ssh's quiet mode): only warnings and errors on stderr. BackupPC's tar method passes
    /// it, and counts every stderr line that is not tar's own as a transfer error.
    pub quiet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInvocation {
    pub restore: bool,
    pub host: String,
    pub ssh: SshInvocation,
}

/// ssh(1) options that take an argument.
const WITH_ARG: &str = "BbcDEeFIiJLlmOopQRSWw";
/// ssh(1) options without one.
const FLAGS: &str = "46AaCfGgKkMNnqsTtVvXxYy";

/// Parse an ssh-style argv (everything after `bpc-ovz ssh`). `--config FILE` is also accepted
/// before the host, so it can sit inside BackupPC's `-e` string.
pub fn parse_ssh_argv(args: &[String]) -> Result<SshInvocation, String> {
    let mut inv = SshInvocation {
        host: String::new(),
        login: None,
        port: None,
        identity_files: Vec::new(),
        config_file: None,
        options: Vec::new(),
        words: Vec::new(),
        quiet: false,
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--config" || a.starts_with("--config=") {
            let v = match a.strip_prefix("--config=") {
                Some(v) => v.to_string(),
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or("--config needs a file")?
                }
            };
            inv.config_file = Some(v);
            i += 1;
            continue;
        }
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let body: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < body.len() {
            let c = body[j];
            if FLAGS.contains(c) {
                inv.quiet |= c == 'q';
                j += 1;
                continue;
            }
            if WITH_ARG.contains(c) {
                let rest: String = body[j + 1..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| format!("ssh option -{c} needs an argument"))?
                };
                match c {
                    'l' => inv.login = Some(val),
                    'p' => inv.port = Some(val.parse().map_err(|_| format!("bad port {val:?}"))?),
                    'i' => inv.identity_files.push(val),
                    'F' => {}
                    'o' => inv.options.push(val),
                    _ => inv.options.push(format!("-{c} {val}")),
                }
                break;
            }
            return Err(format!("unknown ssh option -{c}"));
        }
        i += 1;
    }
    let host = args.get(i).ok_or("no host given")?.clone();
    let host = match host.split_once('@') {
        Some((u, h)) => {
            inv.login.get_or_insert_with(|| u.to_string());
            h.to_string()
        }
        None => host,
    };
    if host.is_empty() || host.starts_with('-') {
        return Err(format!("bad host {host:?}"));
    }
    inv.host = host;
    let rest = &args[i + 1..];
    if rest.is_empty() {
        return Err("no remote command given (bpc-ovz only runs rsync/tar server commands)".into());
    }
    inv.words = split_like_remote_shell(rest)?;
    Ok(inv)
}

/// ssh sends its command words joined by spaces; the remote shell splits them again.
pub fn split_like_remote_shell(words: &[String]) -> Result<Vec<String>, String> {
    let joined = words.join(" ");
    shell_words::split(&joined).map_err(|e| format!("cannot split the remote command: {e}"))
}

/// Parse `server [restore] HOST SSHPATH SSH-ARGS... HOST RSYNCPATH ARGS...`.
pub fn parse_server_argv(args: &[String]) -> Result<ServerInvocation, String> {
    let mut i = 0;
    let restore = args.first().map(|a| a == "restore").unwrap_or(false);
    if restore {
        i += 1;
    }
    let host = args.get(i).cloned().ok_or("server: no host given")?;
    let _ssh_path = args.get(i + 1).ok_or("server: no ssh path given")?;
    let ssh = parse_ssh_argv(&args[i + 2..]).map_err(|e| format!("server: {e}"))?;
    if !ssh.host.eq_ignore_ascii_case(&host) {
        return Err(format!(
            "server: host {host:?} and ssh host {:?} differ",
            ssh.host
        ));
    }
    Ok(ServerInvocation { restore, host, ssh })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn backuppc4_argv() {
        let inv = parse_ssh_argv(&v(
            "-l root ve101 /usr/bin/rsync --server --sender -slHogDtprcxe.iLsfxC",
        ))
        .unwrap();
        assert_eq!(inv.host, "ve101");
        assert_eq!(inv.login.as_deref(), Some("root"));
        assert_eq!(
            inv.words,
            v("/usr/bin/rsync --server --sender -slHogDtprcxe.iLsfxC")
        );
        let inv = parse_ssh_argv(&v(
            "--config /x.yaml -q -x -n -oBatchMode=yes -p2222 -lroot 10.0.0.5 rsync --server",
        ))
        .unwrap();
        assert_eq!(inv.config_file.as_deref(), Some("/x.yaml"));
        assert_eq!(inv.port, Some(2222));
        assert_eq!(inv.options, vec!["BatchMode=yes"]);
        assert_eq!(inv.host, "10.0.0.5");
        assert!(inv.quiet, "-q");
        assert!(!parse_ssh_argv(&v("-x -l root ve101 tar -c")).unwrap().quiet);
    }

    #[test]
    fn rsync_path_with_spaces_is_split_like_the_remote_shell() {
        let args = vec![
            "ve".to_string(),
            "/usr/bin/nice -n 5 /usr/bin/rsync".to_string(),
            "--server".to_string(),
        ];
        let inv = parse_ssh_argv(&args).unwrap();
        assert_eq!(inv.words, v("/usr/bin/nice -n 5 /usr/bin/rsync --server"));
    }

    #[test]
    fn backuppc3_server_form_unescapes_arglist() {
        let args: Vec<String> = [
            "ve101.example.com",
            "/usr/bin/ssh",
            "-q",
            "-x",
            "-l",
            "root",
            "ve101.example.com",
            "/usr/bin/rsync",
            "--server",
            "--sender",
            "--numeric-ids",
            ".",
            "/my\\ share/",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = parse_server_argv(&args).unwrap();
        assert!(!s.restore);
        assert_eq!(s.ssh.words.last().unwrap(), "/my share/");
        let mut r = vec!["restore".to_string()];
        r.extend(args);
        assert!(parse_server_argv(&r).unwrap().restore);
    }

    #[test]
    fn errors() {
        assert!(parse_ssh_argv(&v("-l")).is_err());
        assert!(parse_ssh_argv(&v("-Z host cmd")).is_err());
        assert!(parse_ssh_argv(&v("host")).is_err());
        assert!(parse_server_argv(&v("a /usr/bin/ssh -l root b rsync --server")).is_err());
    }
}
