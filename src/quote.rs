//! Quoting for the remote shell: the one audited place where a value becomes shell text.
//!
//! Every string that reaches an HN's shell goes through [`quote`] (directly or through
//! [`RemoteCmd`]). Values that come from the HN itself (vzlist output, conf files, paths) are
//! untrusted: they are only ever spliced into a script as single-quoted words.
//!
//! This module knows nothing about OpenVZ, LVM or BackupPC.

use std::fmt;

/// Quote one word for a POSIX shell.
///
/// Bytes from a conservative safe set pass unchanged; anything else is wrapped in single quotes,
/// with each `'` written as `'\''`. An empty word becomes `''`. The result is a single word for
/// `sh`, `dash` and `bash` alike, whatever the input holds (newlines, `$(..)`, backticks, `!`,
/// NUL-free non-UTF-8 bytes passed as lossy text by the caller).
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(is_safe) {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for ch in word.chars() {
        if ch == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

fn is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'/' | b':' | b',' | b'+' | b'=' | b'@' | b'%'
        )
}

/// A command for the remote shell, built like `std::process::Command`: every `arg` is quoted at
/// render time; `raw` is the named opt-out for shell syntax the caller writes itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteCmd {
    parts: Vec<String>,
}

impl RemoteCmd {
    pub fn new(program: &str) -> Self {
        RemoteCmd {
            parts: vec![quote(program)],
        }
    }

    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.parts.push(quote(a.as_ref()));
        self
    }

    pub fn args<I, S>(mut self, items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for a in items {
            self.parts.push(quote(a.as_ref()));
        }
        self
    }

    /// Shell text the caller vouches for (a redirection, `2>&1`): never a value.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn raw(mut self, text: &str) -> Self {
        self.parts.push(text.to_string());
        self
    }

    pub fn render(&self) -> String {
        self.parts.join(" ")
    }
}

impl fmt::Display for RemoteCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Each value must come back unchanged from a real `sh`.
    fn roundtrip(word: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(word)))
            .output()
            .expect("sh runs");
        String::from_utf8(out.stdout).expect("utf8")
    }

    #[test]
    fn table() {
        let cases = [
            ("abc", "abc"),
            ("/vz/private/101", "/vz/private/101"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", "'it'\\''s'"),
            ("!", "'!'"),
            ("$(id)", "'$(id)'"),
            ("`id`", "'`id`'"),
            ("a\nb", "'a\nb'"),
            ("x;rm -rf /", "'x;rm -rf /'"),
            ("*", "'*'"),
            ("~root", "'~root'"),
        ];
        for (input, want) in cases {
            assert_eq!(quote(input), want, "quote({input:?})");
        }
    }

    #[test]
    fn hostile_values_survive_a_real_shell() {
        for w in [
            "",
            "plain",
            "with space",
            "it's",
            "'",
            "''",
            "\\'",
            "$(touch /tmp/bpc-ovz-pwned)",
            "`id`",
            "a\nb\n",
            "tab\there",
            "semi;colon&amp|pipe>redir<in",
            "!history",
            "ünïcödé",
            "--option=value",
            "*?[glob]",
        ] {
            assert_eq!(roundtrip(w), w, "value {w:?}");
        }
        assert!(!std::path::Path::new("/tmp/bpc-ovz-pwned").exists());
    }

    #[test]
    fn remote_cmd_renders_quoted_args() {
        let c = RemoteCmd::new("lvcreate")
            .arg("--name")
            .arg("snap 1")
            .raw("2>&1");
        assert_eq!(c.render(), "lvcreate --name 'snap 1' 2>&1");
    }
}
