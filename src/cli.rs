//! The `bsmount` commands.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::config::{load_credentials, REGIONS};
use crate::api::{BaseSpaceApi, Credentials, HttpClient, RetryPolicy, Token};
use crate::emulator::{self, source, EmulatorOptions, NetProfile};
use crate::mount::{self, MountOptions};
use crate::units::parse_size;

#[derive(Parser, Debug)]
#[command(
    name = "bsmount",
    version,
    about = "Mount Illumina BaseSpace Sequence Hub as a read-only local filesystem"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mount your BaseSpace account at MOUNTPOINT (returns once the mount is live).
    Mount(MountArgs),
    /// Unmount a bsmount filesystem (also clears a dead mount). Waits for the mount's
    /// pending uploads first, and refuses while some have failed.
    Unmount {
        mountpoint: PathBuf,
        /// Unmount even with uploads pending or failed (they stay in the spool and are
        /// resumed by the next mount of the account).
        #[arg(long)]
        force: bool,
    },
    /// The mount's uploads that failed: `retry` them now, or `discard` them (and their
    /// spooled bytes).
    Uploads {
        #[arg(value_parser = ["retry", "discard"])]
        action: String,
        mountpoint: PathBuf,
    },
    /// Try bsmount on a built-in demo account: starts an emulated BaseSpace and mounts it.
    Demo {
        /// Where to mount the demo account.
        #[arg(default_value = "BaseSpace-demo")]
        mountpoint: PathBuf,
    },
    /// Run the BaseSpace emulator (API + presigned content) for tests and benchmarks.
    Emulator(EmulatorArgs),
    /// Log in with the OAuth device flow and save ~/.basespace/NAME.cfg (as `bs auth`).
    Auth(AuthArgs),
    /// Show who the saved credentials belong to: user, server, token scopes.
    Whoami {
        #[arg(short = 'c', long = "config", value_name = "NAME")]
        config: Option<String>,
        #[arg(long, value_name = "URL|REGION")]
        api_server: Option<String>,
    },
    /// Mark an appresult (or appsession) you uploaded into complete: BaseMount's
    /// `mark-as-complete`. Its files become final; the appsession is `Complete`.
    Complete {
        /// The appresult's (or appsession's) directory in a bsmount mount.
        path: PathBuf,
        #[arg(short = 'c', long = "config", value_name = "NAME")]
        config: Option<String>,
    },
    /// Move a project, appresult, sample, run or dataset to BaseSpace's trash (BaseMount's
    /// `move-to-trash`); `.Trash/` lists it and `bsmount restore` brings it back.
    Trash {
        /// Its directory in a bsmount mount.
        path: PathBuf,
        #[arg(short = 'c', long = "config", value_name = "NAME")]
        config: Option<String>,
    },
    /// Restore a trash item: `bsmount restore MOUNT/.Trash/<item>`.
    Restore {
        path: PathBuf,
        #[arg(short = 'c', long = "config", value_name = "NAME")]
        config: Option<String>,
    },
    /// Re-read directories from BaseSpace: PATH and everything below it.
    Refresh {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Live figures of bsmount mounts (all of them, or the one at MOUNTPOINT).
    Status {
        mountpoint: Option<PathBuf>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Manpage,
}

#[derive(Args, Debug)]
pub struct AuthArgs {
    /// Save to ~/.basespace/NAME.cfg (default: default.cfg).
    #[arg(short = 'c', long = "config", value_name = "NAME")]
    pub config: Option<String>,
    /// API server URL or region (use1, euc1, euw2, cac1, aps2).
    #[arg(long, value_name = "URL|REGION", default_value = "use1")]
    pub api_server: String,
    /// Scopes to ask for.
    #[arg(long, default_value = crate::api::auth::DEFAULT_SCOPES)]
    pub scopes: String,
    /// Overwrite an existing config.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    pub mountpoint: PathBuf,
    /// Use ~/.basespace/NAME.cfg (as `bs -c NAME`); default: environment, then default.cfg.
    #[arg(short = 'c', long = "config", value_name = "NAME")]
    pub config: Option<String>,
    /// API server URL or region (use1, euc1, euw2, cac1, aps2); `help` lists them.
    #[arg(long, value_name = "URL|REGION")]
    pub api_server: Option<String>,
    /// Stay in the foreground and log to stderr.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Memory for cached file blocks (e.g. 512M, 2G).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Keep fetched blocks on disk in DIR too, across mounts (one mount per DIR).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Disk space the --cache-dir may use; least recently used blocks go first.
    #[arg(long, default_value = "10G", value_parser = parse_size, value_name = "SIZE")]
    pub cache_dir_size: u64,
    /// Share fetched blocks with other bsmount mounts, on this and other hosts, through DIR
    /// on a filesystem they all see (NFS, Lustre, GPFS, CephFS, a ReadWriteMany volume).
    #[arg(long, value_name = "DIR")]
    pub shared_cache_dir: Option<PathBuf>,
    /// Space the --shared-cache-dir may use, kept by every mount that uses it.
    #[arg(long, default_value = "100G", value_parser = parse_size, value_name = "SIZE")]
    pub shared_cache_dir_size: u64,
    /// Seconds a directory listing is trusted before it is fetched again.
    #[arg(long, default_value_t = 300)]
    pub metadata_ttl: u64,
    /// Let other users (and root) access the mount (needs user_allow_other for non-root).
    #[arg(long)]
    pub allow_other: bool,
    /// Do not check whole-file reads against the ETag (md5 of every byte read in order).
    /// Saves the hashing CPU (about 1.5 s per GiB on a slow core); every ranged GET still
    /// asks for the listed version, so versions never mix.
    #[arg(long)]
    pub no_verify: bool,
    /// Do not hand files kept whole in --cache-dir to the kernel (FUSE passthrough); read
    /// them through the mount. Passthrough needs root (CAP_SYS_ADMIN) and Linux 6.9+, and
    /// makes the mount one the kernel will not stack overlayfs on.
    #[arg(long)]
    pub no_passthrough: bool,
    /// Upload: `mkdir` makes projects and appresults, `cp` into an appresult's `Files/`
    /// uploads (needs a token with the CREATE GLOBAL scope).
    #[arg(long)]
    pub write: bool,
    /// With --write: `rmdir` of a project, appresult, sample or run moves it to the trash
    /// (needs MOVETOTRASH GLOBAL). Nothing is ever purged.
    #[arg(long, requires = "write")]
    pub allow_delete: bool,
    /// With --write: `close` returns only once the file is on BaseSpace (uploaded and
    /// completed), and reports its failure; by default `close` returns once the bytes are
    /// durable in the local spool and uploads run behind (see `bsmount status`).
    #[arg(long, requires = "write")]
    pub write_through: bool,
    /// Where written files are spooled before upload (0700; default
    /// ~/.local/state/bsmount/spool). Uploads a mount left pending are resumed by the next
    /// mount of the same account that uses the same directory.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Hide the API v2 views (`BioSamples/`, `Projects/<p>/Datasets/`): the v1 tree only.
    #[arg(long)]
    pub no_v2: bool,
    /// BaseMount's flag for the v2 views, which bsmount shows by default: accepted, no effect.
    #[arg(long, hide = true, conflicts_with = "no_v2")]
    pub use_v2_api: bool,
    /// Longest a read or listing waits on BaseSpace (retries included) before failing with
    /// EIO; the mount stays up and recovers by itself when the server answers again.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub io_timeout: u64,
    /// Most entries one directory listing may hold (about 500 bytes of memory each while
    /// it is read); a directory with more fails with EIO, named in its `.error`, rather
    /// than showing part of its entries.
    #[arg(long, default_value_t = crate::api::client::MAX_LIST_ENTRIES, value_name = "N")]
    pub max_listing: u64,
    /// Memory all directory listings of the mount may take together (estimated): past it
    /// the least recently looked-at listings are dropped and listed again when next looked
    /// at; one listing larger than this fails with EIO, named in its `.error`.
    #[arg(long, default_value = "512M", value_parser = parse_size, value_name = "SIZE")]
    pub listing_memory: u64,
    /// Let content URLs point at loopback, link-local (cloud metadata) and private
    /// addresses even when the API server is not on one (by default only public addresses
    /// and the API server's own kind are connected to).
    #[arg(long)]
    pub allow_private_addresses: bool,
    /// Log file when running in the background (default: ~/.local/state/bsmount/bsmount.log).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// The arguments that re-run this mount in the background: bsmount's own, also when
    /// the command line was BaseMount's or the mount helper's.
    #[arg(skip)]
    pub relaunch: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
#[command(after_long_help = emulator_help())]
pub struct EmulatorArgs {
    /// Serve DIR/Projects/<p>/{Samples,AppResults}/<x>/** and DIR/Runs/<r>/** (files are
    /// served as they are: replace one to change it, do not truncate it while it is read).
    #[arg(long, value_name = "DIR", group = "source")]
    pub data: Option<PathBuf>,
    /// Serve a generated account; see below for the SPEC keys.
    #[arg(long, value_name = "SPEC", group = "source")]
    pub synthetic: Option<source::SyntheticSpec>,
    /// Serve the account described by a JSON catalog (names a directory cannot hold).
    #[arg(long, value_name = "FILE", group = "source")]
    pub catalog: Option<PathBuf>,
    /// Serve the built-in demo account.
    #[arg(long, group = "source")]
    pub demo: bool,
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Access token clients must send (default: random, printed at start).
    #[arg(long, env = "BSMOUNT_EMULATOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Lifetime of presigned content URLs in seconds (BaseSpace: 7 days).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub url_ttl: u64,
    /// Scopes of the token, comma-separated (default: those of a `bs auth` token:
    /// READ, CREATE, BROWSE, MOVETOTRASH, WRITE GLOBAL). Writes need CREATE GLOBAL.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Delay before the first byte of every response.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Per-connection cap on content bodies, bytes per second (0 = none).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub bandwidth: u64,
    /// Probability of a 500/503 answer (503 with Retry-After).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Probability of dropping the connection in the middle of a content body.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Probability of a 429 answer with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Seed for repeatable faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn emulator_help() -> String {
    format!(
        "Sources (pick one; default --demo):\n  --synthetic SPEC  {}\n  --catalog FILE    {}\n\n\
         On start it prints `API server: http://127.0.0.1:PORT` and `Access token: TOKEN`, then serves until SIGINT/SIGTERM.\n\
         Introspection: GET /_emulator/stats, GET /_emulator/manifest[?md5=0]; HTML index for generic tools: GET /browse/",
        source::SYNTHETIC_HELP,
        source::CATALOG_HELP
    )
}

/// Parses bsmount's own command line (program name first) and runs it; returns the exit
/// code.
pub fn run_args(argv: Vec<std::ffi::OsString>) -> i32 {
    let mut cli = Cli::parse_from(&argv);
    if let Cmd::Mount(a) = &mut cli.cmd {
        a.relaunch = argv[1..].to_vec();
    }
    run(cli)
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if matches!(
        cli.cmd,
        Cmd::Status { .. } | Cmd::Whoami { .. } | Cmd::Completions { .. } | Cmd::Manpage
    ) {
        // Printing commands behave like Unix filters: `bsmount status | head` just stops.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.cmd {
        Cmd::Mount(a) => cmd_mount(a),
        Cmd::Uploads { action, mountpoint } => {
            let cmd = match action.as_str() {
                "retry" => crate::fs::RETRY_IOCTL,
                _ => crate::fs::DISCARD_IOCTL,
            };
            match ioctl(&mountpoint, cmd) {
                Ok(()) => {
                    println!("{action}: done (bsmount status shows the uploads)");
                    0
                }
                Err(e) => {
                    eprintln!(
                        "bsmount: {action} in {}: {e} (a bsmount --write mount?)",
                        mountpoint.display()
                    );
                    1
                }
            }
        }
        Cmd::Unmount { mountpoint, force } => {
            match wait_uploads(&mountpoint, force).and_then(|()| mount::unmount(&mountpoint)) {
                Ok(msg) => {
                    println!("{msg}");
                    0
                }
                Err(e) => {
                    eprintln!("bsmount: {e}");
                    1
                }
            }
        }
        Cmd::Demo { mountpoint } => cmd_demo(&mountpoint),
        Cmd::Emulator(a) => cmd_emulator(a),
        Cmd::Auth(a) => report(cmd_auth(&a)),
        Cmd::Whoami { config, api_server } => report(cmd_whoami(config.as_deref(), api_server.as_deref())),
        Cmd::Refresh { paths } => report(cmd_refresh(&paths)),
        Cmd::Complete { path, config } => report(cmd_change(Change::Complete, &path, config.as_deref())),
        Cmd::Trash { path, config } => report(cmd_change(Change::Trash, &path, config.as_deref())),
        Cmd::Restore { path, config } => report(cmd_change(Change::Restore, &path, config.as_deref())),
        Cmd::Status { mountpoint, json } => report(cmd_status(mountpoint.as_deref(), json)),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "bsmount",
                &mut std::io::stdout(),
            );
            0
        }
        Cmd::Manpage => report(
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())
                .map_err(|e| e.to_string()),
        ),
    }
}

fn report(r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bsmount: {e}");
            1
        }
    }
}

fn cmd_auth(a: &AuthArgs) -> Result<(), String> {
    let path = crate::api::config::config_path(a.config.as_deref().unwrap_or("default"));
    if path.exists() && !a.force {
        return Err(format!("{} already exists; pass --force to replace it", path.display()));
    }
    let server = crate::api::config::resolve_api_server(&a.api_server).map_err(|e| e.to_string())?;
    let token = runtime()
        .block_on(crate::api::auth::device_flow(&server, &a.scopes, |code| {
            let url = code
                .verification_with_code_uri
                .as_deref()
                .or(code.verification_uri.as_deref())
                .unwrap_or("");
            println!("To authorize bsmount, open this URL in a browser and approve:\n  {url}");
            if let Some(c) = &code.user_code {
                println!("(code {c})");
            }
            println!("Waiting for approval...");
            let _ = std::io::stdout().flush();
        }))
        .map_err(|e| e.to_string())?;
    crate::api::config::write_config(&path, &server, &token)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("Saved credentials for {server} to {} (mode 0600).", path.display());
    Ok(())
}

fn cmd_whoami(config: Option<&str>, server: Option<&str>) -> Result<(), String> {
    let creds = load_credentials(config, server).map_err(|e| e.to_string())?;
    let source = creds.source.clone();
    let server = creds.api_server.clone();
    let client = HttpClient::new(
        creds,
        RetryPolicy {
            deadline: Duration::from_secs(20),
            ..RetryPolicy::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let rt = runtime();
    let user = rt
        .block_on(client.get_response("v1pre3/users/current"))
        .map_err(|e| e.to_string())?;
    let token = rt.block_on(client.get_response("v1pre3/oauthv2/token/current")).ok();
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    println!("Name            {}", s(&user, "Name"));
    println!("Id              {}", s(&user, "Id"));
    println!("Email           {}", s(&user, "Email"));
    println!("DateCreated     {}", s(&user, "DateCreated"));
    println!("DateLastActive  {}", s(&user, "DateLastActive"));
    println!("Host            {server}");
    println!("Credentials     {source}");
    if let Some(scopes) = token.as_ref().and_then(|t| t.get("Scopes")).and_then(|s| s.as_array()) {
        let list: Vec<&str> = scopes.iter().filter_map(|s| s.as_str()).collect();
        println!("Scopes          {}", list.join(", "));
    }
    Ok(())
}

/// What `bsmount complete|trash|restore` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Complete,
    Trash,
    Restore,
}

/// A directory's hidden metadata file, trimmed.
fn hidden(path: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(path.join(name))
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            format!(
                "{} is not an entity directory of a bsmount mount ({name}: {e})",
                path.display()
            )
        })
}

/// `complete`, `trash`, `restore`: the entity comes from the directory's `.type` and `.id`
/// (what the mount shows), the change goes to BaseSpace directly, then the mount re-reads
/// the directory above so it shows the change at once.
pub(crate) fn cmd_change(what: Change, path: &Path, config: Option<&str>) -> Result<(), String> {
    use crate::api::write as call;
    let (kind, id) = (hidden(path, ".type")?, hidden(path, ".id")?);
    // Through the mount first: its credentials, and `complete` waits for its uploads.
    let cmd = match what {
        Change::Complete => crate::fs::COMPLETE_IOCTL,
        Change::Trash => crate::fs::TRASH_IOCTL,
        Change::Restore => crate::fs::RESTORE_IOCTL,
    };
    match ioctl(path, cmd) {
        Ok(()) => {
            let done = match what {
                Change::Complete => "is complete",
                Change::Trash => "moved to the trash",
                Change::Restore => "restored",
            };
            if let Some(root) = mount_root(path) {
                let _ = refresh_ioctl(&root.join(".Trash"));
            }
            println!("{} {done}", path.display());
            return Ok(());
        }
        // A read-only mount (or an older bsmount): done here with credentials of our own.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::ENOTTY | libc::ENOSYS)) => {}
        Err(e) => {
            let why = std::fs::read_to_string(path.join(".error")).unwrap_or_default();
            let why = why.lines().last().unwrap_or("").trim().to_string();
            return Err(match why.is_empty() {
                true => format!("{}: {e}", path.display()),
                false => format!("{}: {why}", path.display()),
            });
        }
    }
    let creds = load_credentials(config, None).map_err(|e| e.to_string())?;
    let client = HttpClient::new(creds, RetryPolicy::default()).map_err(|e| e.to_string())?;
    let rt = runtime();
    let v1_session = |kind: &str| -> Result<String, String> {
        let v = rt
            .block_on(client.get_response(&format!("v1pre3/{kind}/{}", crate::api::segment(&id))))
            .map_err(|e| e.to_string())?;
        v.pointer("/AppSession/Id")
            .and_then(|x| {
                x.as_str()
                    .map(str::to_string)
                    .or_else(|| x.as_u64().map(|n| n.to_string()))
            })
            .ok_or_else(|| format!("{} names no appsession", path.display()))
    };
    let send = |c: call::Call| rt.block_on(client.send_call(c)).map_err(|e| e.to_string());
    let done = match (what, kind.as_str()) {
        (Change::Complete, "appresults") => {
            let session = v1_session("appresults")?;
            send(call::set_appsession_status(
                &session,
                "Complete",
                "Marked complete with bsmount",
            ))?;
            format!("{} is complete", path.display())
        }
        (Change::Complete, "appsessions") => {
            send(call::set_appsession_status(
                &id,
                "Complete",
                "Marked complete with bsmount",
            ))?;
            format!("{} is complete", path.display())
        }
        (Change::Complete, other) => {
            return Err(format!(
                "{} is {other}: only appresults and appsessions are completed",
                path.display()
            ))
        }
        (Change::Trash, "projects" | "runs" | "datasets") => {
            send(call::move_to_trash(&kind, &id))?;
            format!("{} moved to the trash", path.display())
        }
        (Change::Trash, k @ ("appresults" | "samples")) => {
            // v1 appresults and samples are trashed as the v2 datasets they are.
            let session = v1_session(k)?;
            let v1 = format!("{}.{id}", k.trim_end_matches('s'));
            let listed = rt
                .block_on(
                    client.list_typed::<crate::api::EntityItem>(&crate::api::ListKind::AppSessionOutputs(session)),
                )
                .map_err(|e| e.to_string())?;
            let ds = listed
                .items
                .into_iter()
                .find(|i| i.entity.v1pre3_id.as_deref() == Some(v1.as_str()))
                .map(|i| i.entity.id)
                .ok_or_else(|| format!("BaseSpace lists no dataset for {v1}"))?;
            send(call::move_to_trash("datasets", &ds))?;
            format!("{} moved to the trash", path.display())
        }
        (Change::Trash, other) => {
            return Err(format!(
                "{} is {other}: it cannot be moved to the trash",
                path.display()
            ))
        }
        (Change::Restore, "trash") => {
            send(call::restore_from_trash(&id))?;
            format!(
                "{} restored (refresh its parent directory if it does not show yet)",
                path.display()
            )
        }
        (Change::Restore, other) => return Err(format!("{} is {other}, not a .Trash/ item", path.display())),
    };
    // The mount shows the change: the list the entity is in, and the trash.
    let parent = path.parent().unwrap_or(path);
    let _ = refresh_ioctl(parent);
    if let Some(root) = mount_root(path) {
        let _ = refresh_ioctl(&root.join(".Trash"));
    }
    println!("{done}");
    Ok(())
}

/// Before an unmount: waits for the mount's pending uploads, with progress on stderr;
/// refuses while some have failed (unless `force`).
fn wait_uploads(mp: &Path, force: bool) -> Result<(), String> {
    let read = || -> Option<serde_json::Value> {
        let text = std::fs::read(mp.join(".bsmount/stats")).ok()?;
        serde_json::from_slice::<serde_json::Value>(&text)
            .ok()?
            .get("uploads")
            .cloned()
    };
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let mut said = std::time::Instant::now() - Duration::from_secs(10);
    while let Some(u) = read().filter(|u| !u.is_null()) {
        let (pending, failed) = (n(&u, "pending"), n(&u, "failed"));
        if pending == 0 {
            if failed > 0 && !force {
                return Err(format!(
                    "{failed} upload(s) failed (bsmount status {} names them); not unmounting. \
                     bsmount uploads retry|discard {}, or bsmount unmount --force {} (the spool keeps them for the next mount)",
                    mp.display(),
                    mp.display(),
                    mp.display()
                ));
            }
            return Ok(());
        }
        if force {
            eprintln!(
                "bsmount: unmounting with {pending} upload(s) pending: the next mount of this account resumes them"
            );
            return Ok(());
        }
        if said.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "bsmount: waiting for {pending} upload(s), {} left",
                crate::units::human(n(&u, "bytes_pending"))
            );
            said = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The mount point above `path` (the directory with a `.bsmount/`).
pub(crate) fn mount_root(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|p| p.join(".bsmount/stats").exists())
        .map(Path::to_path_buf)
}

/// Asks the mount holding `p` to re-read it and everything below (the ioctl `bsmount
/// refresh` sends).
fn refresh_ioctl(p: &Path) -> std::io::Result<()> {
    ioctl(p, crate::fs::REFRESH_IOCTL)
}

/// Sends one of bsmount's data-less ioctls ([`crate::fs`]) on `p`.
fn ioctl(p: &Path, cmd: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p)?;
    // SAFETY: a valid open descriptor and an ioctl that carries no data.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), cmd as _) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn cmd_refresh(paths: &[PathBuf]) -> Result<(), String> {
    for p in paths {
        refresh_ioctl(p).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::ENOTSUP) | Some(libc::EINVAL) => {
                format!("{} is not inside a bsmount filesystem", p.display())
            }
            _ => format!("cannot refresh {}: {e}", p.display()),
        })?;
        println!("refreshed {}", p.display());
    }
    Ok(())
}

fn cmd_status(mountpoint: Option<&Path>, json: bool) -> Result<(), String> {
    let mounts: Vec<PathBuf> = match mountpoint {
        Some(m) => vec![mount::absolute(m)],
        None => mount::bsmount_mounts(),
    };
    if mounts.is_empty() {
        println!("no bsmount filesystems are mounted");
        return Ok(());
    }
    for m in mounts {
        let text = std::fs::read_to_string(m.join(".bsmount/stats"))
            .map_err(|e| format!("{} is not a live bsmount filesystem: {e}", m.display()))?;
        if json {
            print!("{text}");
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let n = |p: &str| v.pointer(p).and_then(|x| x.as_u64()).unwrap_or(0);
        let human = crate::units::human;
        println!(
            "{}  ({}, pid {}, since {})",
            m.display(),
            v["server"].as_str().unwrap_or(""),
            n("/pid"),
            v["started"].as_str().unwrap_or("")
        );
        println!("  reads in flight   {}", n("/reads/in_flight"));
        println!(
            "  throughput        {}/s",
            human(
                v.pointer("/reads/throughput_bytes_per_sec")
                    .and_then(|x| x.as_f64())
                    .unwrap_or(0.0) as u64
            )
        );
        println!("  bytes served      {}", human(n("/reads/bytes_served")));
        println!("  bytes fetched     {}", human(n("/fetch/bytes")));
        println!(
            "  cache hit rate    {:.1}% ({} cached)",
            v.pointer("/cache/hit_rate").and_then(|x| x.as_f64()).unwrap_or(0.0) * 100.0,
            human(n("/cache/cached_bytes"))
        );
        if v.pointer("/disk_cache/limit").is_some() {
            println!(
                "  disk cache        {} of {}, {} blocks read from it, {} rejected",
                human(n("/disk_cache/bytes")),
                human(n("/disk_cache/limit")),
                n("/disk_cache/hits"),
                n("/disk_cache/rejected")
            );
            println!(
                "  kept whole        {} files ({}), {} opens handed to the kernel (passthrough)",
                n("/disk_cache/files_kept_whole"),
                human(n("/disk_cache/bytes_kept_whole")),
                n("/disk_cache/passthrough_opens")
            );
        }
        if v.pointer("/shared_cache/limit").is_some() {
            println!(
                "  shared cache      {} of {} (last scan), {} blocks read from it, {} published, {} rejected",
                human(n("/shared_cache/bytes_at_last_scan")),
                human(n("/shared_cache/limit")),
                n("/shared_cache/hits"),
                n("/shared_cache/writes"),
                n("/shared_cache/rejected")
            );
        }
        println!(
            "  requests          {} API, {} content",
            n("/api/api_requests"),
            n("/api/content_requests")
        );
        println!("  retries           {}", n("/api/retries"));
        if let Some(u) = v.get("uploads").filter(|u| !u.is_null()) {
            println!(
                "  uploads           {} pending ({} left), {} failed, {} finished",
                n("/uploads/pending"),
                human(n("/uploads/bytes_pending")),
                n("/uploads/failed"),
                n("/uploads/finished")
            );
            for i in u["items"].as_array().into_iter().flatten() {
                let state = i["state"].as_str().unwrap_or("");
                if state == "done" {
                    continue;
                }
                println!(
                    "    {state:<8} {} of appresult {} ({} of {}){}",
                    i["path"].as_str().unwrap_or(""),
                    i["appresult"].as_str().unwrap_or(""),
                    human(i["sent"].as_u64().unwrap_or(0)),
                    human(i["size"].as_u64().unwrap_or(0)),
                    i["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
        }
        println!(
            "  errors            {} API, {} reads",
            n("/api/errors"),
            n("/reads/errors")
        );
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bsmount-io")
        .build()
        .expect("tokio runtime")
}

/// Logging: stderr in the foreground, else a file; `RUST_LOG` overrides the level.
fn init_logging(file: Option<&Path>, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    // The HTTP libraries are held at `warn` whatever RUST_LOG says: at debug/trace they print
    // request URLs, and presigned URLs carry signatures. Our own logs redact them.
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("bsmount={},warn", level.unwrap_or("info")));
    // fuser's session warns "Failed to umount filesystem: Invalid argument" whenever the
    // mount was already taken down from outside (`bsmount unmount`, `umount`), which is
    // how every unmount ends; its real failures are errors.
    let filter = EnvFilter::try_new(format!(
        "{base},hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,fuser::session=error"
    ))
    .unwrap_or_else(|_| EnvFilter::new("bsmount=info,warn"));
    // No colours: every control character a server could slip into a field is escaped on
    // the way out ([`crate::escape`]), ESC included.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    match file.and_then(|p| open_log(p).ok()) {
        Some(f) => {
            let _ = builder
                .with_writer(std::sync::Mutex::new(crate::escape::LogWriter(f)))
                .try_init();
        }
        None => {
            let _ = builder
                .with_writer(|| crate::escape::LogWriter(std::io::stderr()))
                .try_init();
        }
    }
}

fn open_log(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(p)?;
    // `mode` applies only to a new file: one left by an older version or another tool may
    // be readable by others, and the log names files and paths of the account.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

fn state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::api::config::home_dir().join(".local/state"))
        .join("bsmount")
}

fn default_log_file() -> PathBuf {
    state_dir().join("bsmount.log")
}

/// The spool's default root: the user's state directory, not the cache directory (a cache
/// may be cleared or shared; a spool holds the only copy of what is not uploaded yet).
fn default_spool_dir() -> PathBuf {
    state_dir().join("spool")
}

/// Environment variable carrying the readiness pipe from the parent to the mount daemon.
const READY_FD_ENV: &str = "BSMOUNT_READY_FD";

fn cmd_mount(a: MountArgs) -> i32 {
    if a.api_server.as_deref() == Some("help") {
        println!("API servers (--api-server URL or one of these regions):");
        for (alias, url, what) in REGIONS {
            println!("  {alias:<5} {url:<45} {what}");
        }
        return 0;
    }
    let ready_fd: Option<RawFd> = std::env::var(READY_FD_ENV).ok().and_then(|v| v.parse().ok());
    if !a.foreground && ready_fd.is_none() {
        return spawn_daemon(&a);
    }
    // SAFETY: the parent passed us this fd for our exclusive use.
    let ready: Option<OwnedFd> = ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    std::env::remove_var(READY_FD_ENV);
    if ready.is_some() {
        init_logging(
            Some(&a.log_file.clone().unwrap_or_else(default_log_file)),
            Some(&a.log_level),
        );
    } else {
        init_logging(None, Some(&a.log_level));
    }
    let report = move |r: Result<(), String>| {
        if let Some(fd) = ready {
            let mut f = std::fs::File::from(fd);
            let _ = match &r {
                Ok(()) => writeln!(f, "ok"),
                Err(e) => writeln!(f, "error: {e}"),
            };
        } else if let Err(e) = &r {
            eprintln!("bsmount: {e}");
        }
    };
    match mount_main(&a, report) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

/// Everything that can fail before the mount is live is reported through `report`.
fn mount_main(a: &MountArgs, report: impl FnOnce(Result<(), String>)) -> Result<(), String> {
    let mp = match mount::check_mountpoint(&a.mountpoint) {
        Ok(mp) => mp,
        Err(e) => {
            report(Err(e.clone()));
            return Err(e);
        }
    };
    let creds = match load_credentials(a.config.as_deref(), a.api_server.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report(Err(e.to_string()));
            return Err(e.to_string());
        }
    };
    let levels = (|| -> Result<_, String> {
        let disk = a
            .cache_dir
            .as_ref()
            .map(|d| crate::read::disk::DiskCache::open(&mount::absolute(d), a.cache_dir_size));
        let disk = disk.transpose().map_err(|e| e.to_string())?;
        let shared = a
            .shared_cache_dir
            .as_ref()
            .map(|d| crate::read::shared::SharedCache::open(&mount::absolute(d), a.shared_cache_dir_size));
        Ok((disk, shared.transpose().map_err(|e| e.to_string())?))
    })();
    let (disk, shared) = match levels {
        Ok(l) => l,
        Err(e) => {
            report(Err(e.clone()));
            return Err(e);
        }
    };
    let rt = runtime();
    let policy = RetryPolicy {
        deadline: Duration::from_secs(a.io_timeout.max(1)),
        max_listing: a.max_listing,
        allow_private_addresses: a.allow_private_addresses,
        ..RetryPolicy::default()
    };
    let (api, user) = match connect(&rt, creds, policy) {
        Ok(x) => x,
        Err(e) => {
            report(Err(e.clone()));
            return Err(e);
        }
    };
    if let Err(e) = check_scopes(&rt, &api, a) {
        report(Err(e.clone()));
        return Err(e);
    }
    let opts = MountOptions {
        mountpoint: mp,
        cache_bytes: a.cache_size,
        disk,
        shared,
        metadata_ttl: Duration::from_secs(a.metadata_ttl),
        listing_memory: a.listing_memory,
        allow_other: a.allow_other,
        verify: !a.no_verify,
        passthrough: !a.no_passthrough,
        v2: !a.no_v2,
        write: a.write,
        allow_delete: a.allow_delete,
        write_through: a.write_through,
        spool_dir: a
            .spool_dir
            .as_deref()
            .map(mount::absolute)
            .unwrap_or_else(default_spool_dir),
    };
    let server = api.api_server().to_string();
    let r = mount::run_session(&rt, Arc::new(api), &server, &user, &opts, report);
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// `--write` needs a token that may create (`CREATE GLOBAL`), `--allow-delete` one that
/// may trash (`MOVETOTRASH GLOBAL`): refused before mounting, with the fix.
fn check_scopes(rt: &tokio::runtime::Runtime, api: &HttpClient, a: &MountArgs) -> Result<(), String> {
    let needed: Vec<&str> = [(a.write, "CREATE GLOBAL"), (a.allow_delete, "MOVETOTRASH GLOBAL")]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
    if needed.is_empty() {
        return Ok(());
    }
    let info = rt
        .block_on(api.token_info())
        .map_err(|e| format!("cannot read the token's scopes for --write: {e}"))?;
    let has: Vec<String> = info
        .get("Scopes")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .map(str::to_ascii_uppercase)
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = needed.into_iter().filter(|n| !has.iter().any(|h| h == n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the token lacks the {} scope{} that {} need{}; get a new token with: bsmount auth --force{}",
        missing.join(" and "),
        if missing.len() > 1 { "s" } else { "" },
        if a.allow_delete {
            "--write --allow-delete"
        } else {
            "--write"
        },
        if a.allow_delete { "" } else { "s" },
        a.config.as_deref().map(|c| format!(" -c {c}")).unwrap_or_default()
    ))
}

/// Builds the client and checks the token with `users/current` (fails fast).
fn connect(
    rt: &tokio::runtime::Runtime,
    creds: Credentials,
    policy: RetryPolicy,
) -> Result<(HttpClient, serde_json::Value), String> {
    let server = creds.api_server.clone();
    let quick = RetryPolicy {
        max_attempts: 3,
        deadline: Duration::from_secs(20),
        request_timeout: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    let probe = HttpClient::new(creds.clone(), quick).map_err(|e| e.to_string())?;
    let (_, user) = rt.block_on(probe.current_user()).map_err(|e| match e {
        crate::api::ApiError::Transport { .. } | crate::api::ApiError::Deadline { .. } => {
            format!("cannot reach BaseSpace at {server}: {e}")
        }
        other => other.to_string(),
    })?;
    let client = HttpClient::new(creds, policy).map_err(|e| e.to_string())?;
    Ok((client, user))
}

/// Re-runs this command in the background and waits until it reports the mount live.
fn spawn_daemon(a: &MountArgs) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("bsmount: cannot create a pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    // SAFETY: pipe2 just returned these two fds to us.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wfd = fds[1];
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bsmount"));
    let log = a.log_file.clone().unwrap_or_else(default_log_file);
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&a.relaunch)
        .env(READY_FD_ENV, wfd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(match open_log(&log) {
            Ok(f) => std::process::Stdio::from(f),
            Err(_) => std::process::Stdio::null(),
        });
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let flags = libc::fcntl(wfd, libc::F_GETFD);
            libc::fcntl(wfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bsmount: cannot start the mount process: {e}");
            return 1;
        }
    };
    drop(w);
    let mut msg = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut msg);
    let msg = msg.trim();
    if msg == "ok" {
        let mp = mount::absolute(&a.mountpoint);
        println!(
            "Mounted BaseSpace at {} (pid {}, log {}).",
            mp.display(),
            child.id(),
            log.display()
        );
        println!("To unmount: bsmount unmount {}", mp.display());
        0
    } else {
        let reason = msg
            .strip_prefix("error: ")
            .unwrap_or(if msg.is_empty() { "" } else { msg });
        if reason.is_empty() {
            eprintln!(
                "bsmount: the mount process exited without mounting; see {}",
                log.display()
            );
        } else {
            eprintln!("bsmount: {reason}");
        }
        1
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn cmd_demo(mountpoint: &Path) -> i32 {
    init_logging(None, None);
    let abs = mount::absolute(mountpoint);
    if mount::mounted_type(&abs).is_some() {
        // A leftover from an earlier demo that was killed: clear it.
        if let Err(e) = mount::unmount(&abs) {
            eprintln!("bsmount: {e}");
            return 1;
        }
    }
    if !abs.exists() {
        if let Err(e) = std::fs::create_dir_all(&abs) {
            eprintln!("bsmount: cannot create {}: {e}", abs.display());
            return 1;
        }
    }
    let mp = match mount::check_mountpoint(&abs) {
        Ok(mp) => mp,
        Err(e) => {
            eprintln!("bsmount: {e}");
            return 1;
        }
    };
    eprintln!("Generating the demo account (FASTQ, BAM, VCF, a run folder)...");
    let rt = runtime();
    let emu = match rt.block_on(emulator::start(emulator::demo::account(), EmulatorOptions::default())) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bsmount: cannot start the demo server: {e}");
            return 1;
        }
    };
    let creds = Credentials {
        api_server: emu.base_url.clone(),
        token: Token::new(emu.token.clone()),
        source: "demo".into(),
    };
    let (api, user) = match connect(&rt, creds, RetryPolicy::default()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bsmount: {e}");
            return 1;
        }
    };
    let opts = MountOptions {
        mountpoint: mp.clone(),
        cache_bytes: 512 << 20,
        disk: None,
        shared: None,
        metadata_ttl: Duration::from_secs(300),
        listing_memory: crate::tree::budget::DEFAULT_LISTING_MEMORY,
        allow_other: false,
        verify: true,
        passthrough: true,
        v2: true,
        write: false,
        allow_delete: false,
        write_through: false,
        spool_dir: default_spool_dir(),
    };
    let m = mp.display().to_string();
    let ar = format!(
        "{m}/Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)/AppResults/NA12878 DRAGEN Germline/Files"
    );
    let fq = format!("{m}/Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)/Samples/NA12878/Files/NA12878_S1_L001_R1_001.fastq.gz");
    let report = |r: Result<(), String>| match r {
        Ok(()) => {
            println!(
                "Demo BaseSpace account mounted at {m} (emulated server {}).\n",
                emu.base_url
            );
            println!("Try, in another terminal:");
            println!("  ls -R {}", shell_quote(&format!("{m}/Projects")));
            println!(
                "  ls -a {}",
                shell_quote(&format!("{m}/Runs/240116_A01234_0042_AHDEMOXX/Files"))
            );
            println!(
                "  samtools view {} chr1:100000-101000 | head -3",
                shell_quote(&format!("{ar}/NA12878.bam"))
            );
            println!(
                "  tabix {} chr2:1-50000 | head -3",
                shell_quote(&format!("{ar}/NA12878.hard-filtered.vcf.gz"))
            );
            println!("  zcat {} | head -8", shell_quote(&fq));
            println!("  md5sum {}/NA12878.*", shell_quote(&ar));
            println!(
                "  ls {}              # API v2: datasets by biosample",
                shell_quote(&format!("{m}/BioSamples/NA12878/Datasets"))
            );
            println!(
                "  ls -l {}  # what the analysis read",
                shell_quote(&format!("{ar}/../Properties/Input.Samples"))
            );
            println!(
                "\nPress Ctrl-C here (or run: bsmount unmount {}) to unmount.",
                shell_quote(&m)
            );
            let _ = std::io::stdout().flush();
        }
        Err(e) => eprintln!("bsmount: {e}"),
    };
    let server = api.api_server().to_string();
    let r = mount::run_session(&rt, Arc::new(api), &server, &user, &opts, report);
    drop(emu);
    rt.shutdown_timeout(Duration::from_secs(1));
    match r {
        Ok(()) => {
            println!("Unmounted {m}.");
            0
        }
        Err(e) => {
            eprintln!("bsmount: {e}");
            1
        }
    }
}

fn cmd_emulator(a: EmulatorArgs) -> i32 {
    init_logging(None, None);
    let account = if let Some(dir) = &a.data {
        source::from_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))
    } else if let Some(spec) = &a.synthetic {
        Ok(source::synthetic(spec))
    } else if let Some(cat) = &a.catalog {
        std::fs::read_to_string(cat)
            .map_err(|e| format!("cannot read {}: {e}", cat.display()))
            .and_then(|t| source::from_catalog(&t))
    } else {
        Ok(emulator::demo::account())
    };
    let account = match account {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bsmount: {e}");
            return 1;
        }
    };
    let rescan: Option<emulator::Rescan> = a.data.clone().map(|dir| {
        let f: emulator::Rescan = Arc::new(move || source::from_dir(&dir).map_err(|e| e.to_string()));
        f
    });
    let opts = EmulatorOptions {
        rescan,
        listen: a.listen,
        token: a.token.clone(),
        scopes: (!a.scopes.is_empty()).then(|| a.scopes.iter().map(|s| s.trim().to_string()).collect()),
        url_ttl: Duration::from_secs(a.url_ttl),
        net: NetProfile {
            latency: Duration::from_millis(a.latency_ms),
            bandwidth: a.bandwidth,
            fail_rate: a.fail_rate,
            reset_rate: a.reset_rate,
            throttle_rate: a.throttle_rate,
            seed: a.seed,
        },
    };
    let rt = runtime();
    rt.block_on(async move {
        let emu = match emulator::start(account, opts).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("bsmount: cannot listen on {}: {e}", a.listen);
                return 1;
            }
        };
        println!("API server: {}", emu.base_url);
        println!("Access token: {}", emu.token);
        let _ = std::io::stdout().flush();
        use tokio::signal::unix::{signal, SignalKind};
        let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(i), Ok(t)) => (i, t),
            _ => return 1,
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        emu.stop().await;
        0
    })
}

/// The mount-helper form: `mount -t fuse.bsmount CONFIG DIR -o opts` (or an fstab line)
/// makes mount.fuse3 run `bsmount CONFIG DIR -o opts`. This turns that into
/// `bsmount mount DIR -c CONFIG …`; any other command line passes through unchanged.
pub fn helper_args(argv: &[std::ffi::OsString]) -> Result<Vec<std::ffi::OsString>, String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let first = match argv.get(1).and_then(|a| a.to_str()) {
        Some(f) => f,
        None => return Ok(argv.to_vec()),
    };
    let is_sub = cmd.get_subcommands().any(|s| s.get_name() == first) || first == "help" || first.starts_with('-');
    if is_sub || argv.len() < 3 {
        return Ok(argv.to_vec());
    }
    let (source, mountpoint) = (first.to_string(), argv[2].clone());
    let mut out: Vec<std::ffi::OsString> = vec![argv[0].clone(), "mount".into(), mountpoint];
    // Source "bsmount" (or "none") means the default credentials.
    if !matches!(source.as_str(), "bsmount" | "none" | "") {
        out.extend(["-c".into(), source.into()]);
    }
    let mut rest = argv[3..].iter();
    while let Some(a) = rest.next() {
        if a != "-o" {
            return Err(format!(
                "unexpected argument {a:?} in mount-helper form (expected -o OPTIONS)"
            ));
        }
        let opts = rest.next().and_then(|o| o.to_str()).ok_or("-o needs a value")?;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = o.split_once('=').map_or((o, None), |(k, v)| (k, Some(v)));
            let flag = match k {
                "config" => "--config",
                "api_server" => "--api-server",
                "cache_size" => "--cache-size",
                "cache_dir" => "--cache-dir",
                "cache_dir_size" => "--cache-dir-size",
                "shared_cache_dir" => "--shared-cache-dir",
                "shared_cache_dir_size" => "--shared-cache-dir-size",
                "metadata_ttl" => "--metadata-ttl",
                "io_timeout" => "--io-timeout",
                "max_listing" => "--max-listing",
                "listing_memory" => "--listing-memory",
                "log_file" => "--log-file",
                "log_level" => "--log-level",
                "allow_other" => {
                    out.push("--allow-other".into());
                    continue;
                }
                "no_verify" => {
                    out.push("--no-verify".into());
                    continue;
                }
                "no_passthrough" => {
                    out.push("--no-passthrough".into());
                    continue;
                }
                "allow_private_addresses" => {
                    out.push("--allow-private-addresses".into());
                    continue;
                }
                "no_v2" => {
                    out.push("--no-v2".into());
                    continue;
                }
                "write" => {
                    out.push("--write".into());
                    continue;
                }
                "allow_delete" => {
                    out.push("--allow-delete".into());
                    continue;
                }
                // Generic mount options mount(8) and mount.fuse3 pass along: nothing to do.
                "rw" | "ro" | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "auto" | "noauto" | "user" | "nouser"
                | "users" | "defaults" | "nofail" | "_netdev" | "async" | "sync" | "atime" | "noatime" | "relatime"
                | "x-systemd.automount" => continue,
                k if k.starts_with("x-") || k.starts_with("comment=") => continue,
                other => return Err(format!("unknown mount option {other:?} (known: config, api_server, cache_size, cache_dir, cache_dir_size, shared_cache_dir, shared_cache_dir_size, metadata_ttl, io_timeout, max_listing, listing_memory, allow_other, no_verify, no_passthrough, allow_private_addresses, no_v2, write, allow_delete, log_file, log_level)")),
            };
            let v = v.ok_or_else(|| format!("mount option {k} needs a value ({k}=...)"))?;
            out.extend([flag.into(), v.into()]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_existing_log_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bsmount.log");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_log(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "old\n",
            "appended to, not truncated"
        );
    }
}
