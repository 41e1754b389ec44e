//! Fitting in: `bsmount auth` (device flow) + config files, `whoami`, `refresh`, live
//! `status`, the mount-helper/fstab form, shell completions and the man page.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bsmount::emulator::{source, EmulatorOptions, NetProfile};
use common::fuse::*;
use common::Emu;

/// `bsmount ARGS` in `home`, with no BaseSpace variables in the environment.
fn in_home(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("BASESPACE_API_SERVER")
        .env_remove("BASESPACE_ACCESS_TOKEN")
        .output()
        .unwrap()
}

fn data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("Projects/Lab Project/Samples/S1");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("S1_R1.fastq.gz"), vec![1u8; 300_000]).unwrap();
    std::fs::create_dir_all(d.path().join("Runs/240101_RUN/Data")).unwrap();
    std::fs::write(d.path().join("Runs/240101_RUN/RunInfo.xml"), "<RunInfo/>\n").unwrap();
    d
}

fn dir_emulator(data: &Path, net: NetProfile) -> Emu {
    let dir = data.to_path_buf();
    let rescan: bsmount::emulator::Rescan = Arc::new(move || source::from_dir(&dir).map_err(|e| e.to_string()));
    Emu::start(
        source::from_dir(data).unwrap(),
        EmulatorOptions {
            rescan: Some(rescan),
            net,
            ..Default::default()
        },
    )
}

#[test]
fn auth_writes_a_private_config_that_mount_and_whoami_use() {
    use std::os::unix::fs::PermissionsExt;
    let data = data_dir();
    let emu = dir_emulator(data.path(), NetProfile::default());
    let home = tempfile::tempdir().unwrap();
    let o = in_home(home.path(), &["auth", "-c", "lab", "--api-server", &emu.base]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{}/oauth/device?code=", emu.base)),
        "prints the URL to open: {}",
        text(&o)
    );
    assert!(!text(&o).contains(&emu.token), "the token is not printed");
    let cfg = home.path().join(".basespace/lab.cfg");
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);
    let body = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(
        body,
        format!("apiServer = {}\naccessToken = {}\n", emu.base, emu.token),
        "bs CLI format"
    );
    // No overwrite without --force.
    let o = in_home(home.path(), &["auth", "-c", "lab", "--api-server", &emu.base]);
    assert!(!o.status.success() && text(&o).contains("--force"), "{}", text(&o));
    assert!(in_home(
        home.path(),
        &["auth", "-c", "lab", "--api-server", &emu.base, "--force"]
    )
    .status
    .success());
    // whoami and mount read it with no environment variables.
    let o = in_home(home.path(), &["whoami", "-c", "lab"]);
    assert!(o.status.success(), "{}", text(&o));
    let w = text(&o);
    assert!(
        w.contains("Emulated User") && w.contains(&emu.base) && w.contains("READ GLOBAL"),
        "{w}"
    );
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let o = in_home(home.path(), &["mount", mp.to_str().unwrap(), "-c", "lab"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(mp
        .join("Projects/Lab Project/Samples/S1/Files/S1_R1.fastq.gz")
        .is_file());
    assert!(in_home(home.path(), &["unmount", mp.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn refresh_shows_new_data_without_remounting() {
    let data = data_dir();
    let m = Mounted::new(dir_emulator(data.path(), NetProfile::default()));
    let samples = m.path("Projects/Lab Project/Samples");
    let ls = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ls(&samples), ["S1"]);
    let s1_id = std::fs::read_to_string(samples.join("S1/.id")).unwrap();
    // A new sample and a new file in an existing one appear upstream.
    let s2 = data.path().join("Projects/Lab Project/Samples/S2");
    std::fs::create_dir_all(&s2).unwrap();
    std::fs::write(s2.join("S2_R1.fastq.gz"), b"new sample\n").unwrap();
    std::fs::write(data.path().join("Runs/240101_RUN/SampleSheet.csv"), "[Data]\n").unwrap();
    m.emu().get_raw("_emulator/rescan", None);
    assert_eq!(ls(&samples), ["S1"], "listings are cached until refreshed");
    let o = m.cmd(&["refresh", samples.to_str().unwrap(), m.path("Runs").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ls(&samples), ["S1", "S2"]);
    assert_eq!(
        std::fs::read_to_string(samples.join("S2/Files/S2_R1.fastq.gz")).unwrap(),
        "new sample\n"
    );
    assert_eq!(
        std::fs::read_to_string(samples.join("S1/.id")).unwrap(),
        s1_id,
        "existing ids are stable"
    );
    assert!(
        m.path("Runs/240101_RUN/Files/SampleSheet.csv").is_file(),
        "refresh reaches everything below"
    );
    // Outside a bsmount filesystem: a clear error.
    let o = m.cmd(&["refresh", "/tmp"]);
    assert!(
        !o.status.success() && text(&o).contains("not inside a bsmount filesystem"),
        "{}",
        text(&o)
    );
}

#[test]
fn status_shows_live_figures_during_a_copy() {
    let emu = Emu::with_net(
        source::synthetic(
            &"projects=1,samples=1,sample_files=1,sample_file_size=64M,appresults=0,runs=0"
                .parse()
                .unwrap(),
        ),
        NetProfile {
            bandwidth: 16 << 20,
            ..Default::default()
        },
    );
    let m = Mounted::new(emu);
    let file = m.path(&format!(
        "Projects/{}",
        find_files(&m.path("Projects")).into_iter().next().unwrap()
    ));
    let dest = tempfile::tempdir().unwrap();
    let mut cp = Command::new("cp")
        .arg(&file)
        .arg(dest.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = || -> serde_json::Value {
        let o = m.cmd(&["status", m.mp.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    wait_until("bytes to flow", Duration::from_secs(30), || {
        status()["reads"]["bytes_served"].as_u64().unwrap() > 4 << 20
    });
    let live = status();
    assert!(live["api"]["content_requests"].as_u64().unwrap() > 0, "{live}");
    assert_eq!(live["server"], m.server.as_str());
    let human = m.cmd(&["status"]);
    let h = text(&human);
    assert!(
        h.contains(m.mp.to_str().unwrap())
            && h.contains("throughput")
            && h.contains("cache hit rate")
            && h.contains("retries"),
        "{h}"
    );
    assert!(cp.wait().unwrap().success());
    let done = status();
    assert!(done["reads"]["bytes_served"].as_u64().unwrap() >= 64 << 20, "{done}");
    assert_eq!(done["reads"]["in_flight"].as_u64(), Some(0));
}

#[test]
fn the_mount_helper_form_works_through_mount_fuse3() {
    let data = data_dir();
    let emu = dir_emulator(data.path(), NetProfile::default());
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("lab.cfg");
    std::fs::write(&cfg, format!("apiServer = {}\naccessToken = {}\n", emu.base, emu.token)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    // mount.fuse3 (from the fuse3 package) runs `bsmount SOURCE DIR -o OPTIONS`.
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("bsmount")).unwrap();
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("fuse3 provides mount.fuse3");
    let o = Command::new(helper)
        .args([
            &format!("bsmount#{}", cfg.display()),
            mp.to_str().unwrap(),
            "-o",
            "nofail,cache_size=64M,metadata_ttl=30",
        ])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(is_mounted(&mp));
    assert!(mp
        .join("Projects/Lab Project/Samples/S1/Files/S1_R1.fastq.gz")
        .is_file());
    run(BIN, &["unmount", mp.to_str().unwrap()]);
    // Unknown options are refused with the list of known ones.
    let o = in_home(
        home.path(),
        &[cfg.to_str().unwrap(), mp.to_str().unwrap(), "-o", "frobnicate=1"],
    );
    assert!(
        !o.status.success() && text(&o).contains("unknown mount option") && text(&o).contains("cache_size"),
        "{}",
        text(&o)
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let o = run(BIN, &["completions", "bash"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("bsmount") && s.contains("unmount") && s.contains("--cache-size"),
        "bash completion"
    );
    let o = run(BIN, &["manpage"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains(".TH bsmount") && s.contains("refresh"), "man page");
    let o = run(BIN, &["mount", "--api-server", "help", "/nonexistent"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("euc1"));
}
