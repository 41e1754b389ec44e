//! Real-mount harness: runs the `bsmount` binary against a server and cleans up after.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Emu;

pub const BIN: &str = env!("CARGO_BIN_EXE_bsmount");

/// A live mount; unmounted (lazily if need be) on drop.
pub struct Mounted {
    emu: Option<Emu>,
    pub server: String,
    pub token: String,
    pub mp: PathBuf,
    pub _dir: tempfile::TempDir,
}

pub fn is_mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
}

/// Runs `bsmount ARGS` with the server's credentials in the environment.
pub fn bsmount_at(server: &str, token: &str, args: &[&str], home: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("BASESPACE_API_SERVER", server)
        .env("BASESPACE_ACCESS_TOKEN", token)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .output()
        .unwrap()
}

pub fn bsmount(emu: &Emu, args: &[&str], home: &Path) -> Output {
    bsmount_at(&emu.base, &emu.token, args, home)
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Mounted {
    /// Mounts any BaseSpace-like server with extra `mount` arguments.
    pub fn at(server: &str, token: &str, extra: &[&str], emu: Option<Emu>) -> Mounted {
        assert!(
            Path::new("/dev/fuse").exists(),
            "these tests mount for real: they need /dev/fuse (and root)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).unwrap();
        let mut args = vec!["mount", mp.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = bsmount_at(server, token, &args, dir.path());
        assert!(out.status.success(), "mount failed: {}", text(&out));
        assert!(is_mounted(&mp), "mount returned before the mount was live");
        Mounted {
            emu,
            server: server.to_string(),
            token: token.to_string(),
            mp,
            _dir: dir,
        }
    }

    pub fn with_args(emu: Emu, extra: &[&str]) -> Mounted {
        let (s, t) = (emu.base.clone(), emu.token.clone());
        Mounted::at(&s, &t, extra, Some(emu))
    }

    pub fn new(emu: Emu) -> Mounted {
        Mounted::with_args(emu, &[])
    }

    pub fn demo() -> Mounted {
        Mounted::new(Emu::demo())
    }

    pub fn emu(&self) -> &Emu {
        self.emu.as_ref().expect("mounted on an emulator")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    pub fn manifest(&self) -> BTreeMap<String, Value> {
        self.emu()
            .manifest()
            .into_iter()
            .map(|f| (f["path"].as_str().unwrap().to_string(), f))
            .collect()
    }

    /// `bsmount ARGS` with this mount's credentials and home.
    pub fn cmd(&self, args: &[&str]) -> Output {
        bsmount_at(&self.server, &self.token, args, self._dir.path())
    }

    pub fn unmount(&self) -> Output {
        self.cmd(&["unmount", self.mp.to_str().unwrap()])
    }

    /// The background log of this mount.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("state/bsmount/bsmount.log")).unwrap_or_default()
    }

    /// The daemon serving this mount.
    pub fn daemon_pid(&self) -> i32 {
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                if args.first().is_some_and(|a| a.ends_with(b"bsmount"))
                    && args.iter().any(|a| *a == self.mp.as_os_str().as_encoded_bytes())
                    && args.iter().any(|a| *a == b"mount")
                {
                    if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse().ok()) {
                        return pid;
                    }
                }
            }
        }
        panic!("no daemon found for {}", self.mp.display());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mp) {
            let _ = self.unmount();
        }
        if is_mounted(&self.mp) {
            let c = std::ffi::CString::new(self.mp.to_str().unwrap()).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        // A panic in the daemon costs a read (EIO) without failing the test that saw it.
        if !std::thread::panicking() {
            let log = self.log();
            assert!(!log.contains("panicked"), "the mount daemon panicked:\n{log}");
        }
    }
}

/// Runs a program that must succeed.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is required for this test: {e}"));
    assert!(o.status.success(), "{cmd} {args:?} failed: {}", text(&o));
    o
}

/// `md5sum` of many files at once: path → md5.
pub fn md5sums(files: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for chunk in files.chunks(200) {
        let o = Command::new("md5sum").arg("-z").args(chunk).output().unwrap();
        assert!(o.status.success(), "md5sum failed: {}", text(&o));
        for rec in o.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let s = String::from_utf8_lossy(rec);
            let (sum, path) = s.split_once("  ").unwrap();
            out.insert(PathBuf::from(path), sum.to_string());
        }
    }
    out
}

/// Every regular file below a `Files/` directory, as `find` sees it, relative to `root`.
pub fn find_files(root: &Path) -> BTreeSet<String> {
    let o = run(
        "find",
        &[root.to_str().unwrap(), "-type", "f", "-path", "*/Files/*", "-print0"],
    );
    o.stdout
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| {
            String::from_utf8(r.to_vec())
                .unwrap()
                .strip_prefix(&format!("{}/", root.display()))
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Polls `cond` (a state change in another process) until true or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
