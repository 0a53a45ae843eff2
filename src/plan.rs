//! The plan: the remote choreography as data.
//!
//! A [`Plan`] is a list of [`Step`]s, each with an action and an optional undo. The executor
//! (`exec.rs`) runs exactly these steps; `bpc-ovz plan` prints exactly this object. On the HN the
//! steps run inside one *guard* shell ([`guard_script`]) that holds the locks, runs one step per
//! request, remembers the undos and runs them in reverse when asked, when the connection is lost
//! (EOF on its stdin) or on SIGTERM. So the HN cleans up by itself when bpc-ovz is killed.
//!
//! This module knows shell and the guard protocol; it knows nothing about OpenVZ or LVM (the
//! scripts are built by `backup.rs` and the snapshot backends).

use std::fmt::Write as _;

use serde::Serialize;

use crate::quote::quote;

/// File descriptors the guard keeps its locks on; closed for every step that must not inherit them.
pub const LOCK_FDS: &str = "7>&- 8>&-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prepare,
    Downtime,
    Snapshot,
    Transfer,
    Verify,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// A shell function body run by the guard on the HN.
    Hn { script: String },
    /// The relayed transfer: `command` runs on its own channel, stdio relayed to BackupPC.
    Transfer {
        command: String,
        stdin_note: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: u32,
    pub name: String,
    pub phase: Phase,
    pub summary: String,
    pub action: Action,
    /// Idempotent, state-checking shell run when unwinding. It is registered as soon as its step
    /// *starts*, so a step that fails half way is still undone.
    pub undo: Option<String>,
    /// The step takes locks on the guard's own fds (7, 8): it runs without `7>&- 8>&-`.
    pub holds_locks: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub title: String,
    /// Facts the plan was built from, for people (`plan` prints them).
    pub facts: Vec<(String, String)>,
    pub warnings: Vec<String>,
    /// Shell functions the steps share (defined once in the guard).
    pub library: String,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn step(&self, id: u32) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Human-readable rendering; the downtime window is marked.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}", self.title);
        for (k, v) in &self.facts {
            let _ = writeln!(o, "  {k:<18} {v}");
        }
        for w in &self.warnings {
            let _ = writeln!(o, "  WARNING: {w}");
        }
        let _ = writeln!(
            o,
            "steps (run in one guard shell on the HN; undos run in reverse on failure, abort or lost connection):"
        );
        for s in &self.steps {
            let mark = if s.phase == Phase::Downtime {
                "  <== VE DOWN: quiesced in this step (its summary says when it is back)"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "  {}. [{:?}] {}: {}{}",
                s.id, s.phase, s.name, s.summary, mark
            );
            match &s.action {
                Action::Hn { script } => {
                    for l in script.lines() {
                        let _ = writeln!(o, "       | {l}");
                    }
                }
                Action::Transfer {
                    command,
                    stdin_note,
                } => {
                    let _ = writeln!(o, "       | {command}");
                    if let Some(n) = stdin_note {
                        let _ = writeln!(o, "       | (stdin: {n})");
                    }
                }
            }
            if let Some(u) = &s.undo {
                let _ = writeln!(o, "     undo:");
                for l in u.lines() {
                    let _ = writeln!(o, "       | {l}");
                }
            }
        }
        o
    }
}

/// The guard shell for `plan`, as the exact command string sent to the HN.
///
/// Protocol (stdin lines from bpc-ovz): `run N`, `unwind`, `quit`. Replies on stdout are lines
/// starting with the marker `@@<nonce>`: `hello PID`, `begin N`, `rc N CODE`, `data KEY VALUE...`,
/// `undo N`, `undone N CODE`, `unwound`, `bye`. Anything else is step output.
pub fn guard_script(plan: &Plan, nonce: &str) -> String {
    let mut s = guard_prelude(plan, nonce);
    s.push_str("trap 'unwind; say bye; exit 0' TERM\n");
    s.push_str("say \"hello $$\"\n");
    s.push_str("while read -r cmd arg; do\n  case \"$cmd\" in\n  run) run_step \"$arg\" ;;\n  unwind) unwind; say unwound ;;\n  quit) break ;;\n  esac\ndone\nunwind\nsay bye\n");
    s
}

/// Everything of the guard but its driver: helpers, the step and undo functions, `run_step N`
/// (runs one step, registers its undo, reports `rc N CODE` and leaves the code in `$RC`) and
/// `unwind`.
pub fn guard_prelude(plan: &Plan, nonce: &str) -> String {
    let mut s = String::new();
    s.push_str("set -u\n");
    // SIGPIPE/SIGHUP must not kill the guard (or its children, which inherit SIG_IGN) when the
    // connection goes away: it still has to clean up.
    s.push_str("trap '' HUP PIPE INT QUIT USR1 USR2\n");
    s.push_str("umask 077\n");
    let _ = writeln!(s, "N={}", quote(&format!("@@{nonce}")));
    s.push_str("say() { printf '\\n%s %s\\n' \"$N\" \"$*\"; }\n");
    s.push_str("now_ms() { date +%s%3N; }\n");
    s.push_str("orphaned() { ! kill -0 \"$PPID\" 2>/dev/null; }\n");
    s.push_str("UNDO=\nRC=0\n");
    if !plan.library.is_empty() {
        s.push_str(&plan.library);
        s.push('\n');
    }
    for st in &plan.steps {
        if let Action::Hn { script } = &st.action {
            let _ = writeln!(s, "s{}() {{\n{}\n}}", st.id, indent(script));
        }
        if let Some(u) = &st.undo {
            let _ = writeln!(s, "u{}() {{\n{}\n}}", st.id, indent(u));
        }
    }
    s.push_str("undo_one() {\n  case \"$1\" in\n");
    for st in plan.steps.iter().filter(|st| st.undo.is_some()) {
        // Steps and undos run in a subshell (an `exit` or a failed `cd` cannot end the guard),
        // except those that take or release the guard's own lock fds.
        let call = if st.holds_locks {
            format!("u{}", st.id)
        } else {
            format!("( u{} ) {LOCK_FDS}", st.id)
        };
        let _ = writeln!(s, "  {id}) {call} </dev/null 2>&1 ;;", id = st.id);
    }
    s.push_str("  esac\n}\n");
    s.push_str("unwind() {\n  for i in $UNDO; do\n    say \"undo $i\"\n    undo_one \"$i\"\n    say \"undone $i $?\"\n  done\n  UNDO=\n}\n");
    s.push_str("run_step() {\n  case \"$1\" in\n");
    for st in &plan.steps {
        if !matches!(st.action, Action::Hn { .. }) {
            continue;
        }
        let call = if st.holds_locks {
            format!("s{}", st.id)
        } else {
            format!("( s{} ) {LOCK_FDS}", st.id)
        };
        let push = if st.undo.is_some() {
            format!("UNDO=\"{} $UNDO\"; ", st.id)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {id}) say \"begin {id}\"; {push}{call} </dev/null 2>&1; RC=$? ;;",
            id = st.id
        );
    }
    s.push_str("  *) RC=127 ;;\n  esac\n  say \"rc $1 $RC\"\n}\n");
    s
}

/// The command string that starts the guard: POSIX sh regardless of the login shell.
pub fn guard_command(plan: &Plan, nonce: &str) -> String {
    format!("exec /bin/sh -c {}", quote(&guard_script(plan, nonce)))
}

fn indent(s: &str) -> String {
    let body: Vec<String> = s.lines().map(|l| format!("  {l}")).collect();
    if body.is_empty() {
        "  :".to_string()
    } else {
        body.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn demo_plan() -> Plan {
        Plan {
            title: "t".into(),
            facts: vec![],
            warnings: vec![],
            library: String::new(),
            steps: vec![
                Step {
                    id: 1,
                    name: "lock".into(),
                    phase: Phase::Prepare,
                    summary: "take lock".into(),
                    action: Action::Hn {
                        script: "exec 8>\"$W/lock\"; flock -n 8".into(),
                    },
                    undo: Some("exec 8>&-".into()),
                    holds_locks: true,
                },
                Step {
                    id: 2,
                    name: "down".into(),
                    phase: Phase::Downtime,
                    summary: "x".into(),
                    action: Action::Hn {
                        script: "echo hi".into(),
                    },
                    undo: None,
                    holds_locks: false,
                },
            ],
        }
    }

    #[test]
    fn text_marks_downtime_and_shows_scripts() {
        let t = demo_plan().render_text();
        assert!(t.contains("VE DOWN"));
        assert!(t.contains("| echo hi"));
        assert!(t.contains("undo:"));
    }

    #[test]
    fn guard_is_valid_sh() {
        let g = guard_script(&demo_plan(), "abc");
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&g)
            .status()
            .unwrap();
        assert!(st.success(), "{g}");
        assert!(g.contains("( s2 ) 7>&- 8>&- </dev/null 2>&1"));
        assert!(g.contains("say \"begin 1\"; UNDO=\"1 $UNDO\"; s1 </dev/null 2>&1"));
    }
}
