//! Mount lifecycle: checking the mountpoint, running the FUSE session until a signal or an
//! external unmount, and `bsmount unmount` (busy reports, dead mounts).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::BaseSpaceApi;
use crate::core::FsCore;
use crate::fs::BsFs;
use crate::read::{ReadOptions, Reader};
use crate::stats::MountStats;
use crate::tree::{Tree, TreeOptions};

/// What `mount` and `demo` need besides the API.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub cache_bytes: u64,
    pub disk: Option<Arc<crate::read::disk::DiskCache>>,
    pub shared: Option<Arc<crate::read::shared::SharedCache>>,
    pub metadata_ttl: Duration,
    /// `--listing-memory`: what all listings together may hold ([`crate::tree::budget`]).
    pub listing_memory: u64,
    pub allow_other: bool,
    /// Check whole-file reads against their ETags.
    pub verify: bool,
    /// Hand files kept whole in the cache directory to the kernel (FUSE passthrough).
    pub passthrough: bool,
    /// Show the API v2 views.
    pub v2: bool,
    /// `--write`: uploads and creates.
    pub write: bool,
    /// `--allow-delete`: `rmdir` moves to the trash.
    pub allow_delete: bool,
    /// `--write-through`: close waits for the upload (no spool).
    pub write_through: bool,
    /// Root of the upload spool (`--spool-dir`).
    pub spool_dir: PathBuf,
}

/// The mounts listed in /proc/self/mountinfo: (mount point, fs type, source).
fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let point = PathBuf::from(unescape_mountinfo(f.get(4)?));
            Some((
                point,
                f.get(sep + 1)?.to_string(),
                f.get(sep + 2).unwrap_or(&"").to_string(),
            ))
        })
        .collect()
}

/// Mount points of every bsmount filesystem.
pub fn bsmount_mounts() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(_, t, src)| t.starts_with("fuse") && src == "bsmount")
        .map(|(p, _, _)| p)
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() + 1 && b.len() >= i + 4 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fs type mounted exactly at `mp`, if any.
pub fn mounted_type(mp: &Path) -> Option<String> {
    mounts().into_iter().rev().find(|(p, _, _)| p == mp).map(|(_, t, _)| t)
}

/// An absolute path for `p` without following symlinks or touching a dead mount.
pub fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // Normalise `.`/`..` lexically so it matches /proc/self/mountinfo.
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Checks a mountpoint before mounting; the error is one line a user can act on.
pub fn check_mountpoint(mp: &Path) -> Result<PathBuf, String> {
    let abs = absolute(mp);
    let shown = abs.display();
    if mounted_type(&abs).is_some() {
        if is_dead(&abs) {
            return Err(format!(
                "{shown} is a dead mount (Transport endpoint is not connected); clear it with: bsmount unmount {shown}"
            ));
        }
        return Err(format!(
            "{shown} is already mounted; unmount it first with: bsmount unmount {shown}"
        ));
    }
    let meta = std::fs::metadata(&abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("mountpoint {shown} does not exist; create it with: mkdir -p {shown}")
        }
        _ => format!("cannot use mountpoint {shown}: {e}"),
    })?;
    if !meta.is_dir() {
        return Err(format!("mountpoint {shown} is not a directory"));
    }
    let mut rd = std::fs::read_dir(&abs).map_err(|e| format!("cannot read mountpoint {shown}: {e}"))?;
    if rd.next().is_some() {
        return Err(format!("mountpoint {shown} is not empty; use an empty directory"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the module with `modprobe fuse` (in a container: --device /dev/fuse --cap-add SYS_ADMIN)".into());
    }
    Ok(abs)
}

/// The kernel's readahead on the mount, KiB, at most. The kernel gives a FUSE mount the
/// default 128 KiB and INIT may only lower it, so a copy reading 1 MiB at a time was asking
/// for 128 KiB at a time: 11 requests and as many waits per 2 MiB file. 4 MiB lets one read
/// of a small file ask for all of it at once, in 1 MiB requests (the largest FUSE sends)
/// side by side, and keeps a few ahead of a long stream.
const READAHEAD_KB: u64 = 4096;

/// The readahead for a memory cache of `cache_bytes`: every reader may have this much asked
/// for and not yet read, so a small cache gets less (24 readers on a 64 MiB cache peaked
/// 10-20 MiB higher with 1 MiB than with 128 KiB): 1/256 of it, from 128 KiB to 4 MiB
/// (2 MiB with the default 512 MiB: a 2 MiB file in one go).
pub fn readahead_kb(cache_bytes: u64) -> u64 {
    (cache_bytes / 256 / 1024).clamp(128, READAHEAD_KB)
}

/// Sets the mount's readahead through its backing device in sysfs (`/sys/class/bdi/M:N`),
/// which needs root; elsewhere the kernel's default stays, with a note in the log. The stat
/// waits until the kernel's INIT is answered, which would otherwise lower it again.
fn widen_readahead(mountpoint: &Path, kib: u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(m) => m.dev(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot stat the mountpoint to set its readahead");
            return;
        }
    };
    let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    match std::fs::write(&knob, kib.to_string()) {
        Ok(()) => tracing::debug!(%knob, kib, "readahead set"),
        Err(e) => tracing::info!(%knob, error = %e, "kernel readahead stays at its default (setting it needs root)"),
    }
}

fn is_dead(p: &Path) -> bool {
    matches!(std::fs::metadata(p), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Mounts and serves until SIGINT/SIGTERM or an external unmount. `on_ready` is called once
/// with the outcome of mounting, before serving.
/// Raises the soft limit on open files to the hard one, as a daemon holding many files
/// should: open handles, cached files handed to the kernel, and the upload spool's files
/// made ahead ([`crate::write::spool`]) all count against it.
pub fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on structs this function owns.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "cannot raise the open-files limit");
            }
        }
    }
}

pub fn run_session(
    rt: &tokio::runtime::Runtime,
    api: Arc<dyn BaseSpaceApi>,
    server: &str,
    user: &Value,
    opts: &MountOptions,
    on_ready: impl FnOnce(Result<(), String>),
) -> Result<(), String> {
    raise_open_files_limit();
    let tree = Tree::new(
        api.clone(),
        server,
        user,
        TreeOptions {
            metadata_ttl: opts.metadata_ttl,
            v2: opts.v2,
            listing_memory: opts.listing_memory,
        },
    );
    let reader = Reader::new(
        api.clone(),
        ReadOptions {
            cache_bytes: opts.cache_bytes,
            disk: opts.disk.clone(),
            shared: opts.shared.clone(),
            verify: opts.verify,
            ..ReadOptions::default()
        },
    );
    let mp = opts.mountpoint.display().to_string();
    let stats = Arc::new(MountStats::new(server, &mp, api.clone(), reader.clone(), tree.clone()));
    let uploader = crate::write::Uploader::new(api.clone());
    let spool = match opts.write && !opts.write_through {
        true => {
            use crate::write::spool::{account_dir, Spool};
            let id = user.get("Id").and_then(|v| v.as_str()).unwrap_or("");
            let account = account_dir(&opts.spool_dir, server, id);
            let s = match Spool::open(&account, uploader.clone(), api.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("cannot use the upload spool {}: {e}", account.display());
                    on_ready(Err(msg.clone()));
                    return Err(msg);
                }
            };
            let _in_runtime = rt.enter();
            s.resume();
            let _ = stats.uploads.set(s.clone());
            Some(s)
        }
        false => None,
    };
    let spool_at_end = spool.clone();
    let write = opts.write.then(|| crate::core::WriteMode {
        api: api.clone(),
        uploader,
        spool,
        allow_delete: opts.allow_delete,
    });
    let core = FsCore::with_write(tree, reader, stats, write);
    if !opts.passthrough {
        core.without_passthrough();
    } else if opts.disk.is_some() && !opts.verify {
        tracing::info!("--no-verify: files in the cache directory are read through the mount (only files verified whole are handed to the kernel)");
    }
    let fs = BsFs::new(core, rt.handle().clone());
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        if opts.write {
            fuser::MountOption::RW
        } else {
            fuser::MountOption::RO
        },
        fuser::MountOption::FSName("bsmount".into()),
        fuser::MountOption::Subtype("bsmount".into()),
        fuser::MountOption::NoAtime,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::DefaultPermissions,
    ];
    cfg.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    cfg.n_threads = Some(2);
    // Signal handlers go in before the mount exists: a SIGTERM that arrives right after
    // "ready" must unmount, not kill us with the default action and leave a dead mount.
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _rt = rt.enter();
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                let msg = format!("cannot install signal handlers: {e}");
                on_ready(Err(msg.clone()));
                return Err(msg);
            }
        }
    };
    let mut session = match fuser::Session::new(fs, &opts.mountpoint, &cfg) {
        Ok(s) => s,
        Err(e) => {
            let msg = mount_error(&opts.mountpoint, &e);
            on_ready(Err(msg.clone()));
            return Err(msg);
        }
    };
    let mut unmounter = session.unmount_callable();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let worker = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(r);
        })
        .map_err(|e| format!("cannot start the FUSE session thread: {e}"))?;
    widen_readahead(&opts.mountpoint, readahead_kb(opts.cache_bytes));
    on_ready(Ok(()));
    tracing::info!(mountpoint = %opts.mountpoint.display(), "mounted");
    let mp = opts.mountpoint.clone();
    let result = rt.block_on(async move {
        let (mut int, mut term) = signals;
        let mut done_rx = done_rx;
        tokio::select! {
            r = &mut done_rx => {
                tracing::info!("unmounted externally");
                return r.map_err(|e| e.to_string())?.map_err(|e| e.to_string());
            }
            _ = int.recv() => tracing::info!("SIGINT: unmounting"),
            _ = term.recv() => tracing::info!("SIGTERM: unmounting"),
        }
        if let Err(e) = unmounter.unmount() {
            tracing::warn!("unmount failed ({e}); detaching lazily so the mount does not outlive us");
            lazy_unmount(&mp);
        }
        match tokio::time::timeout(Duration::from_secs(10), done_rx).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    });
    drop(worker);
    // A file read just before the unmount is being put in place whole: let it land, so the
    // next mount finds it.
    if let Some(d) = &opts.disk {
        if !d.wait_promotions(PROMOTION_WAIT) {
            tracing::warn!("unmounted while files were still being kept whole; they will be read again");
        }
    }
    if let Some(s) = spool_at_end {
        s.close();
    }
    result
}

/// Longest an unmount waits for whole files being written to the cache directory (a
/// 1 GiB file flushes in a few seconds on any disk this decade).
const PROMOTION_WAIT: Duration = Duration::from_secs(30);

fn mount_error(mp: &Path, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "cannot mount {}: permission denied ({e}); as a non-root user install fuse3 (for fusermount3), and in a container add --device /dev/fuse --cap-add SYS_ADMIN",
            mp.display()
        ),
        Some(libc::ENOENT) if !Path::new("/dev/fuse").exists() => "/dev/fuse is missing: run `modprobe fuse`".into(),
        _ => format!("cannot mount {}: {e}", mp.display()),
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn lazy_unmount(p: &Path) {
    let c = cpath(p);
    // SAFETY: c is a valid NUL-terminated path.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

/// A process using something under the mountpoint.
#[derive(Debug)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub what: String,
}

/// Processes whose cwd, root or open files are under `mp`.
pub fn holders(mp: &Path) -> Vec<Holder> {
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = p.path();
        let command = std::fs::read_to_string(base.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let under = |link: PathBuf| std::fs::read_link(link).ok().filter(|t| t.starts_with(mp));
        let mut what = Vec::new();
        if let Some(t) = under(base.join("cwd")) {
            what.push(format!("working directory {}", t.display()));
        }
        if under(base.join("root")).is_some() {
            what.push("root directory".into());
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                if let Some(t) = under(fd.path()) {
                    what.push(format!("open file {}", t.display()));
                    break;
                }
            }
        }
        if !what.is_empty() {
            out.push(Holder {
                pid,
                command,
                what: what.join(", "),
            });
        }
    }
    out
}

/// `bsmount unmount`: unmounts, reports who keeps it busy, clears dead mounts.
pub fn unmount(mp: &Path) -> Result<String, String> {
    let abs = absolute(mp);
    let shown = abs.display().to_string();
    let Some(fstype) = mounted_type(&abs) else {
        return Err(format!("{shown} is not mounted"));
    };
    if !fstype.starts_with("fuse") {
        return Err(format!(
            "{shown} is a {fstype} mount, not a bsmount filesystem; refusing to unmount it"
        ));
    }
    let dead = is_dead(&abs);
    let c = cpath(&abs);
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let busy_err = |abs: &Path| {
        let h = holders(abs);
        let list = if h.is_empty() {
            "no process found (a shell's working directory inside it, or a process in another namespace?)".to_string()
        } else {
            h.iter()
                .map(|h| format!("  pid {} ({}): {}", h.pid, h.command, h.what))
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!("{shown} is busy; close these and retry:\n{list}")
    };
    if root {
        // SAFETY: c is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
        if rc == 0 {
            return Ok(if dead {
                format!("cleared dead mount {shown}")
            } else {
                format!("unmounted {shown}")
            });
        }
        let err = std::io::Error::last_os_error();
        if dead {
            lazy_unmount(&abs);
            return Ok(format!("cleared dead mount {shown}"));
        }
        if err.raw_os_error() == Some(libc::EBUSY) {
            return Err(busy_err(&abs));
        }
        return Err(format!("cannot unmount {shown}: {err}"));
    }
    let tool = ["fusermount3", "fusermount"]
        .into_iter()
        .find(|t| std::process::Command::new(t).arg("-V").output().is_ok())
        .ok_or("cannot unmount as a non-root user without fusermount3: install the fuse3 package")?;
    let args: &[&str] = if dead { &["-uz"] } else { &["-u"] };
    let out = std::process::Command::new(tool)
        .args(args)
        .arg(&abs)
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        return Ok(if dead {
            format!("cleared dead mount {shown}")
        } else {
            format!("unmounted {shown}")
        });
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    if msg.contains("busy") {
        return Err(busy_err(&abs));
    }
    Err(format!("cannot unmount {shown}: {}", msg.trim()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn readahead_follows_the_memory_cache_within_its_bounds() {
        use super::readahead_kb;
        assert_eq!(readahead_kb(1 << 20), 128, "never below the kernel's default");
        assert_eq!(readahead_kb(64 << 20), 256);
        assert_eq!(readahead_kb(512 << 20), 2048, "the default cache");
        assert_eq!(readahead_kb(64 << 30), 4096);
    }
}
