//! BaseMount's command line, for scripts written against it.
//!
//! Invoked through a symlink named `basemount`, bsmount takes BaseMount's documented
//! invocations (`basemount MOUNTPOINT`, `--unmount`, `--config`, `--api-server`,
//! `--use-v2-api`, ...) and turns them into its own commands; named `basemount-cmd` or
//! `bm-cmd` it runs BaseMount's in-mount commands (`refresh`, `mark-as-complete`,
//! `move-to-trash`, `restore-from-trash`, `unmount`) on the current directory or `--path`.
//! Options bsmount has no use for are accepted with a one-line note, never refused: a
//! script that worked with BaseMount must not stop at its first flag.
//!
//! Translation ([`basemount_plan`], [`cmd_plan`]) is pure and unit-tested; [`run`] acts.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::cli;
use crate::mount;

/// Which command line a process was started as, from the name it was called by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    Bsmount,
    BaseMount,
    BaseMountCmd,
}

impl Invocation {
    pub fn of(argv0: &OsStr) -> Invocation {
        let name = Path::new(argv0).file_name().and_then(OsStr::to_str).unwrap_or("");
        match name {
            "basemount" => Invocation::BaseMount,
            "basemount-cmd" | "bm-cmd" => Invocation::BaseMountCmd,
            _ => Invocation::Bsmount,
        }
    }
}

/// What a `basemount` command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// `bsmount` arguments (after the program name) that mount, and notes about options
    /// taken without effect.
    Mount {
        mountpoint: PathBuf,
        args: Vec<OsString>,
        notes: Vec<String>,
    },
    Unmount(PathBuf),
    /// `--remove-config`: forget the stored credentials of this config.
    RemoveConfig(String),
    Usage,
}

const BASEMOUNT_USAGE: &str = "\
usage (bsmount running as basemount):
  basemount [--config NAME] [--api-server URL|REGION|help] [--use-v2-api] [-f] MOUNTPOINT
  basemount --unmount MOUNTPOINT
  basemount --remove-config [--config NAME]
Accepted without effect: --threads=N, --plugin=NAME, --passphrase.
--cache-opts=A:B:TOTAL sets the memory cache to TOTAL MB.
Every bsmount option: bsmount mount --help";

const CMD_USAGE: &str = "\
usage (bsmount running as basemount-cmd): basemount-cmd [--path DIR] COMMAND
  run without COMMAND to list the commands valid for DIR (default: the current directory)";

/// Splits `--name=value` and `--name value` forms.
struct Opts<'a> {
    args: std::slice::Iter<'a, OsString>,
}

impl<'a> Opts<'a> {
    /// The next argument as written, and its name and inline value when it is
    /// `--name=value`.
    fn next(&mut self) -> Option<(&'a OsString, String, Option<OsString>)> {
        let a = self.args.next()?;
        let s = a.to_string_lossy();
        if s.starts_with("--") {
            if let Some((k, v)) = s.split_once('=') {
                return Some((a, k.to_string(), Some(v.into())));
            }
        }
        Some((a, s.into_owned(), None))
    }

    fn value(&mut self, name: &str, inline: Option<OsString>) -> Result<OsString, String> {
        inline
            .or_else(|| self.args.next().cloned())
            .ok_or_else(|| format!("{name} needs a value"))
    }
}

/// Reads BaseMount's `basemount` arguments (after the program name).
pub fn basemount_plan(argv: &[OsString]) -> Result<Plan, String> {
    let mut opts = Opts { args: argv.iter() };
    let (mut config, mut server, mut mountpoint) = (None, None, None);
    let (mut unmount, mut remove_config, mut foreground) = (None, false, false);
    let (mut cache, mut notes) = (None, Vec::new());
    while let Some((raw, k, inline)) = opts.next() {
        match k.as_str() {
            "--config" | "-c" => config = Some(opts.value(&k, inline)?),
            "--api-server" => server = Some(opts.value(&k, inline)?),
            "--unmount" | "-u" => unmount = Some(PathBuf::from(opts.value(&k, inline)?)),
            "--remove-config" => remove_config = true,
            "-f" | "--foreground" => foreground = true,
            // bsmount shows the v2 views by default.
            "--use-v2-api" => {}
            "--threads" => {
                let n = opts.value(&k, inline)?;
                notes.push(format!(
                    "--threads={}: bsmount sizes its own connection pool; ignored",
                    n.to_string_lossy()
                ));
            }
            "--cache-opts" => {
                let v = opts.value(&k, inline)?;
                let v = v.to_string_lossy();
                let total = v
                    .rsplit(':')
                    .next()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .filter(|_| v.split(':').count() == 3)
                    .ok_or_else(|| format!("--cache-opts={v}: expected INTERACTIVE_MB:LARGE_MB:TOTAL_MB"))?;
                notes.push(format!(
                    "--cache-opts={v}: memory cache {total} MB; bsmount picks its block sizes itself"
                ));
                cache = Some(total);
            }
            "--plugin" => {
                let p = opts.value(&k, inline)?;
                notes.push(format!(
                    "--plugin={}: bsmount has one cache (memory, then --cache-dir); ignored",
                    p.to_string_lossy()
                ));
            }
            "--passphrase" => notes.push(
                "--passphrase: bsmount keeps the token in a 0600 config file, unencrypted, as the bs CLI does; ignored"
                    .into(),
            ),
            "-h" | "--help" => return Ok(Plan::Usage),
            s if s.starts_with('-') => return Err(format!("unknown BaseMount option {s}\n{BASEMOUNT_USAGE}")),
            _ => {
                if mountpoint.replace(PathBuf::from(raw)).is_some() {
                    return Err(format!("more than one mount point given\n{BASEMOUNT_USAGE}"));
                }
            }
        }
    }
    if remove_config {
        let name = config.map(|c| c.to_string_lossy().into_owned());
        return Ok(Plan::RemoveConfig(name.unwrap_or_else(|| "default".into())));
    }
    if let Some(mp) = unmount {
        return Ok(Plan::Unmount(mp));
    }
    let Some(mountpoint) = mountpoint else {
        return Ok(Plan::Usage);
    };
    let mut args: Vec<OsString> = vec!["mount".into(), mountpoint.clone().into()];
    if let Some(c) = config {
        args.extend(["--config".into(), c]);
    }
    if let Some(s) = server {
        args.extend(["--api-server".into(), s]);
    }
    if let Some(mb) = cache {
        args.extend(["--cache-size".into(), format!("{mb}M").into()]);
    }
    if foreground {
        args.push("--foreground".into());
    }
    Ok(Plan::Mount {
        mountpoint,
        args,
        notes,
    })
}

/// BaseMount's in-mount commands, and what bsmount does for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Refresh,
    MarkAsComplete,
    MoveToTrash,
    RestoreFromTrash,
    Unmount,
}

impl Command {
    const ALL: [(&'static str, Command); 5] = [
        ("refresh", Command::Refresh),
        ("mark-as-complete", Command::MarkAsComplete),
        ("move-to-trash", Command::MoveToTrash),
        ("restore-from-trash", Command::RestoreFromTrash),
        ("unmount", Command::Unmount),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }

    /// Whether BaseMount offers the command in a directory of this `.type` (`None`: a
    /// directory without one, such as `Projects/`), `root` telling the mount point.
    fn valid_in(self, kind: Option<&str>, root: bool) -> bool {
        match self {
            Command::Refresh => true,
            Command::Unmount => root,
            Command::MarkAsComplete => matches!(kind, Some("appresults" | "appsessions")),
            Command::MoveToTrash => {
                matches!(kind, Some("projects" | "runs" | "samples" | "appresults" | "datasets"))
            }
            Command::RestoreFromTrash => kind == Some("trash"),
        }
    }
}

/// BaseMount's commands bsmount does not carry out, with the reason it gives.
const NOT_CARRIED: [(&str, &str); 4] = [
    (
        "move-to-trash-preserve-metadata",
        "BaseSpace's API has no call that trashes only a run's data; use move-to-trash",
    ),
    ("rename-appsession", "renaming appsessions is not supported by bsmount"),
    ("relaunch", "relaunching apps is not supported by bsmount"),
    ("show-launch-files", "launch files are not shown by bsmount"),
];

/// Reads `basemount-cmd [--path DIR] [COMMAND]`: the directory and the command, if any.
pub fn cmd_plan(argv: &[OsString], cwd: &Path) -> Result<(PathBuf, Option<Command>), String> {
    let mut opts = Opts { args: argv.iter() };
    let (mut path, mut command) = (None, None);
    while let Some((_, k, inline)) = opts.next() {
        match k.as_str() {
            "--path" | "-p" => path = Some(PathBuf::from(opts.value(&k, inline)?)),
            "-h" | "--help" => return Err(CMD_USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{CMD_USAGE}")),
            s => {
                if let Some((_, why)) = NOT_CARRIED.iter().find(|(n, _)| *n == s) {
                    return Err(format!("{s}: {why}"));
                }
                let c = Command::ALL
                    .iter()
                    .find(|(n, _)| *n == s)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| format!("unknown command {s}\n{CMD_USAGE}"))?;
                if command.replace(c).is_some() {
                    return Err(format!("one command at a time\n{CMD_USAGE}"));
                }
            }
        }
    }
    let dir = path.map_or_else(|| cwd.to_path_buf(), |p| cwd.join(p));
    Ok((dir, command))
}

/// Runs the command line of `how`; returns the exit code.
pub fn run(how: Invocation, argv: &[OsString]) -> i32 {
    let rest = argv.get(1..).unwrap_or_default();
    match how {
        Invocation::Bsmount => unreachable!("bsmount's own command line is clap's"),
        Invocation::BaseMount => match basemount_plan(rest) {
            Ok(plan) => basemount(plan, argv),
            Err(e) => {
                eprintln!("basemount: {e}");
                1
            }
        },
        Invocation::BaseMountCmd => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            // Scripts grep the output for "Error" to notice a broken mount.
            let report = |r: Result<(), String>| match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("Error: {e}");
                    1
                }
            };
            match cmd_plan(rest, &cwd) {
                Ok((dir, Some(c))) => report(carry_out(c, &dir)),
                Ok((dir, None)) => report(list_commands(&dir)),
                Err(e) => report(Err(e)),
            }
        }
    }
}

/// Asks a yes/no question on stderr; an empty answer takes the default, and so does a
/// closed stdin when `eof_default` says so (scripts pipe `yes |` into BaseMount).
fn ask(question: &str, eof_default: bool) -> bool {
    eprint!("{question} (Y/n) ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => {
            eprintln!();
            eof_default
        }
        Ok(_) => matches!(line.trim(), "" | "y" | "Y" | "yes" | "Yes" | "YES"),
    }
}

fn basemount(plan: Plan, argv: &[OsString]) -> i32 {
    let unmount = |mp: &Path| match mount::unmount(mp) {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("basemount: {e}");
            1
        }
    };
    match plan {
        Plan::Usage => {
            eprintln!("{BASEMOUNT_USAGE}");
            i32::from(argv.len() < 2)
        }
        Plan::Unmount(mp) => unmount(&mp),
        Plan::RemoveConfig(name) => {
            let path = crate::api::config::config_path(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    println!(
                        "Removed {}; the next mount asks you to authenticate (bsmount auth).",
                        path.display()
                    );
                    0
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("No stored credentials at {}.", path.display());
                    0
                }
                Err(e) => {
                    eprintln!("basemount: cannot remove {}: {e}", path.display());
                    1
                }
            }
        }
        Plan::Mount {
            mountpoint,
            args,
            notes,
        } => {
            for n in notes {
                eprintln!("basemount: note: {n}");
            }
            // BaseMount run on a mounted directory (or inside one) offers to unmount it.
            if let Some(root) = cli::mount_root(&mount::absolute(&mountpoint)) {
                let shown = root.display();
                if ask(&format!("{shown} is mounted. Unmount it?"), false) {
                    return unmount(&root);
                }
                eprintln!("Left {shown} mounted (unmount later with: basemount --unmount {shown}).");
                return 0;
            }
            if !mountpoint.exists() {
                if !ask(
                    &format!(
                        "Mount point {} does not exist. Create this mount point directory?",
                        mountpoint.display()
                    ),
                    true,
                ) {
                    eprintln!("basemount: no mount point; nothing mounted");
                    return 1;
                }
                if let Err(e) = std::fs::create_dir_all(&mountpoint) {
                    eprintln!("basemount: cannot create {}: {e}", mountpoint.display());
                    return 1;
                }
            }
            cli::run_args(std::iter::once(argv[0].clone()).chain(args).collect())
        }
    }
}

/// `basemount-cmd` without a command: those valid in `dir`, one per line.
fn list_commands(dir: &Path) -> Result<(), String> {
    let root = cli::mount_root(dir).ok_or_else(|| format!("{} is not inside a bsmount mount", dir.display()))?;
    let kind = std::fs::read_to_string(dir.join(".type")).ok();
    let kind = kind.as_deref().map(str::trim);
    let is_root = mount::absolute(dir) == root;
    println!("Valid commands for {}:", dir.display());
    for (name, c) in Command::ALL {
        if c.valid_in(kind, is_root) {
            println!("  {name}");
        }
    }
    Ok(())
}

fn carry_out(c: Command, dir: &Path) -> Result<(), String> {
    let root = cli::mount_root(dir).ok_or_else(|| format!("{} is not inside a bsmount mount", dir.display()))?;
    let kind = std::fs::read_to_string(dir.join(".type")).ok();
    let is_root = mount::absolute(dir) == root;
    if !c.valid_in(kind.as_deref().map(str::trim), is_root) {
        return Err(format!(
            "{} is not valid in {} (basemount-cmd --path {} lists what is)",
            c.name(),
            dir.display(),
            dir.display()
        ));
    }
    match c {
        Command::Refresh => cli::cmd_refresh(&[dir.to_path_buf()]),
        Command::MarkAsComplete => cli::cmd_change(cli::Change::Complete, dir, None),
        Command::MoveToTrash => cli::cmd_change(cli::Change::Trash, dir, None),
        Command::RestoreFromTrash => cli::cmd_change(cli::Change::Restore, dir, None),
        Command::Unmount => mount::unmount(&root).map(|m| println!("{m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn mount_args(plan: Plan) -> (Vec<String>, Vec<String>) {
        let Plan::Mount { args, notes, .. } = plan else {
            panic!("not a mount: {plan:?}")
        };
        (args.iter().map(|a| a.to_string_lossy().into_owned()).collect(), notes)
    }

    #[test]
    fn the_program_name_picks_the_command_line() {
        assert_eq!(
            Invocation::of(OsStr::new("/usr/local/bin/basemount")),
            Invocation::BaseMount
        );
        assert_eq!(Invocation::of(OsStr::new("bm-cmd")), Invocation::BaseMountCmd);
        assert_eq!(Invocation::of(OsStr::new("basemount-cmd")), Invocation::BaseMountCmd);
        assert_eq!(
            Invocation::of(OsStr::new("./target/release/bsmount")),
            Invocation::Bsmount
        );
    }

    #[test]
    fn basemounts_documented_invocations_become_bsmount_mounts() {
        let (a, notes) = mount_args(basemount_plan(&args("BaseSpace")).unwrap());
        assert_eq!(a, ["mount", "BaseSpace"]);
        assert!(notes.is_empty());
        let (a, _) = mount_args(
            basemount_plan(&args(
                "--config work --api-server=https://api.euc1.sh.basespace.illumina.com --use-v2-api -f mnt",
            ))
            .unwrap(),
        );
        assert_eq!(
            a,
            [
                "mount",
                "mnt",
                "--config",
                "work",
                "--api-server",
                "https://api.euc1.sh.basespace.illumina.com",
                "--foreground"
            ]
        );
        let (a, _) = mount_args(basemount_plan(&args("-c work.cfg mnt")).unwrap());
        assert_eq!(a[2..], ["--config", "work.cfg"]);
    }

    #[test]
    fn options_without_use_are_taken_with_a_note() {
        let (a, notes) = mount_args(
            basemount_plan(&args(
                "--threads=16 --cache-opts=2:16:1024 --plugin=bsfs --passphrase mnt",
            ))
            .unwrap(),
        );
        assert_eq!(a, ["mount", "mnt", "--cache-size", "1024M"]);
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].starts_with("--threads=16"));
        assert!(basemount_plan(&args("--cache-opts=512 mnt")).is_err());
        assert!(basemount_plan(&args("--frobnicate mnt"))
            .unwrap_err()
            .contains("unknown BaseMount option"));
    }

    #[test]
    fn unmount_and_remove_config_are_their_own_plans() {
        assert_eq!(
            basemount_plan(&args("--unmount mnt")).unwrap(),
            Plan::Unmount("mnt".into())
        );
        assert_eq!(
            basemount_plan(&args("--remove-config")).unwrap(),
            Plan::RemoveConfig("default".into())
        );
        assert_eq!(
            basemount_plan(&args("--remove-config --config=work")).unwrap(),
            Plan::RemoveConfig("work".into())
        );
        assert_eq!(basemount_plan(&[]).unwrap(), Plan::Usage);
    }

    #[test]
    fn basemount_cmd_acts_on_the_current_directory_unless_given_a_path() {
        let cwd = Path::new("/mnt/bs/Projects/P");
        assert_eq!(
            cmd_plan(&args("refresh"), cwd).unwrap(),
            (cwd.to_path_buf(), Some(Command::Refresh))
        );
        assert_eq!(
            cmd_plan(&args("--path AppResults/A mark-as-complete"), cwd).unwrap(),
            (cwd.join("AppResults/A"), Some(Command::MarkAsComplete))
        );
        assert_eq!(
            cmd_plan(&args("--path=/mnt/bs/.Trash/x restore-from-trash"), cwd).unwrap(),
            (PathBuf::from("/mnt/bs/.Trash/x"), Some(Command::RestoreFromTrash))
        );
        assert_eq!(cmd_plan(&[], cwd).unwrap(), (cwd.to_path_buf(), None));
        assert!(cmd_plan(&args("relaunch"), cwd).unwrap_err().contains("not supported"));
        assert!(cmd_plan(&args("frob"), cwd).unwrap_err().contains("unknown command"));
    }

    #[test]
    fn commands_are_valid_where_basemount_offers_them() {
        assert!(Command::MoveToTrash.valid_in(Some("samples"), false));
        assert!(!Command::MoveToTrash.valid_in(Some("files"), false));
        assert!(Command::MarkAsComplete.valid_in(Some("appresults"), false));
        assert!(!Command::MarkAsComplete.valid_in(Some("projects"), false));
        assert!(Command::RestoreFromTrash.valid_in(Some("trash"), false));
        assert!(Command::Unmount.valid_in(Some("users"), true));
        assert!(!Command::Unmount.valid_in(Some("projects"), false));
        assert!(Command::Refresh.valid_in(None, false));
    }
}
