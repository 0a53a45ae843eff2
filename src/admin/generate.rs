//! `bpc-ovz generate man|completions` (hidden): the man pages and shell completions, generated
//! from the clap definition itself so they can never disagree with `--help`. The Debian package
//! build (`contrib/build-deb.sh`) runs it.

use std::path::{Path, PathBuf};

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum What {
    /// Print the man page bpc-ovz(1); with --dir, write bpc-ovz.1 and one bpc-ovz-COMMAND.1 per
    /// command into DIR.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the completion script for SHELL; with --dir, write it into DIR under the name that
    /// shell looks for (bpc-ovz.bash, _bpc-ovz, bpc-ovz.fish, ...).
    Completions {
        shell: clap_complete::Shell,
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: clap::Command, what: What) -> i32 {
    let r = match what {
        What::Man { dir: None } => man_page(&cmd).and_then(|b| write_out(None, &b)),
        What::Man { dir: Some(d) } => man_pages(&cmd, &d),
        What::Completions { shell, dir } => {
            let mut cmd = cmd;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "bpc-ovz", &mut buf);
            let name = match shell {
                clap_complete::Shell::Bash => "bpc-ovz.bash".to_string(),
                clap_complete::Shell::Zsh => "_bpc-ovz".to_string(),
                clap_complete::Shell::Fish => "bpc-ovz.fish".to_string(),
                clap_complete::Shell::Elvish => "bpc-ovz.elv".to_string(),
                clap_complete::Shell::PowerShell => "_bpc-ovz.ps1".to_string(),
                other => format!("bpc-ovz.{other}"),
            };
            write_out(dir.map(|d| d.join(name)).as_deref(), &buf)
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bpc-ovz generate: {e}");
            crate::EXIT_REFUSED
        }
    }
}

fn write_out(path: Option<&Path>, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    match path {
        None => std::io::stdout()
            .write_all(bytes)
            .map_err(|e| format!("stdout: {e}")),
        Some(p) => {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            std::fs::write(p, bytes).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

fn man_page(cmd: &clap::Command) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

fn man_pages(cmd: &clap::Command, dir: &Path) -> Result<(), String> {
    let mut cmd = cmd.clone();
    cmd.build();
    write_out(Some(&dir.join("bpc-ovz.1")), &man_page(&cmd)?)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("bpc-ovz-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("bpc-ovz {}", sub.get_name()));
        write_out(Some(&dir.join(format!("{name}.1"))), &man_page(&page)?)?;
    }
    Ok(())
}
