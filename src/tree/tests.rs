//! The tree against the in-crate fake (the emulator's account model) and, for shapes the
//! emulator would never send, a scripted API.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::*;
use crate::api::fake::FakeApi;
use crate::api::model::{ContentMeta, ListItem, User};
use crate::api::{ApiError, EntityItem, Listed, Pieces};
use crate::emulator::account::{Account, AccountBuilder, Content};

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts() -> TreeOptions {
    TreeOptions {
        metadata_ttl: Duration::from_secs(3600),
        v2: true,
        listing_memory: budget::DEFAULT_LISTING_MEMORY,
    }
}

/// Project "P" with samples "S" (files a.txt, dir/b.txt) and "S" again, a run "R".
pub(crate) fn account(content: &[u8]) -> Account {
    let mut b = AccountBuilder::new("Tester");
    let p = b.project("P");
    let s = b.sample(p, "S", None);
    b.file(
        s,
        "a.txt",
        content.len() as u64,
        Content::Memory(Bytes::copy_from_slice(content)),
        None,
    );
    b.file(s, "dir/b.txt", 3, Content::Memory(Bytes::from_static(b"bbb")), None);
    b.sample(p, "S", None);
    let r = b.run("R");
    b.file(r, "Data/x.bcl", 4, Content::Memory(Bytes::from_static(b"xxxx")), None);
    b.build()
}

pub(crate) fn tree_over(api: Arc<dyn BaseSpaceApi>) -> Arc<Tree> {
    let user = json!({"Id": "19228209", "Name": "Tester"});
    Tree::new(api, "http://emulator", &user, opts())
}

/// Looks up each component of `path` from the root.
pub(crate) async fn walk(t: &Tree, path: &str) -> Result<Attr, TreeError> {
    let mut a = t.getattr(ROOT)?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        a = t.lookup(a.ino, OsStr::new(c)).await?;
    }
    Ok(a)
}

async fn names(t: &Tree, path: &str) -> Vec<String> {
    let d = walk(t, path).await.unwrap();
    t.readdir(d.ino)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .collect()
}

fn text(t: &Tree, ino: Ino) -> String {
    match t.content(ino).unwrap() {
        FileContent::Static(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("not generated text: {other:?}"),
    }
}

#[test]
fn the_root_shows_basemounts_top_level_and_hidden_files() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        let n = names(&t, "").await;
        for want in ["Projects", "Runs", "README", ".bsmount", ".id", ".type", ".json"] {
            assert!(n.iter().any(|x| x == want), "{want} missing from {n:?}");
        }
        let ty = walk(&t, ".type").await.unwrap();
        assert_eq!(text(&t, ty.ino), "users\n");
    });
}

#[test]
fn a_sample_file_is_found_by_path_with_its_size_and_etag() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        let a = walk(&t, "Projects/P/Samples/S/Files/a.txt").await.unwrap();
        assert_eq!((a.kind, a.size), (Kind::File, 5));
        let FileContent::Remote(r) = t.content(a.ino).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.etag(),
            Some(hex::encode(<md5::Md5 as md5::Digest>::digest(b"hello")).as_str())
        );
        let b = walk(&t, "Projects/P/Samples/S/Files/dir/b.txt").await.unwrap();
        assert_eq!(b.size, 3);
    });
}

#[test]
fn hidden_files_are_rendered_from_the_entity() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        let s = walk(&t, "Projects/P/Samples/S").await.unwrap();
        let id = t.lookup(s.ino, OsStr::new(".id")).await.unwrap();
        let ty = t.lookup(s.ino, OsStr::new(".type")).await.unwrap();
        let js = t.lookup(s.ino, OsStr::new(".json")).await.unwrap();
        let props = t.lookup(s.ino, OsStr::new("SampleProperties")).await.unwrap();
        assert_eq!(text(&t, ty.ino), "samples\n");
        // `.json` is the answer to the directory's own request, asked when read: `stat`
        // costs nothing and does not know its size.
        assert_eq!(js.size, 0);
        let sample_id = text(&t, id.ino).trim().to_string();
        let FileContent::Fetch(f) = t.content(js.ino).unwrap() else {
            panic!("not fetched")
        };
        assert_eq!(f, Fetch::Resource(format!("v1pre3/samples/{sample_id}")));
        let json: Value = serde_json::from_slice(&t.fetch(&f).await.unwrap()).unwrap();
        assert_eq!(json["Response"]["Name"], "S");
        assert_eq!(json["Response"]["Id"].as_str(), Some(sample_id.as_str()));
        assert!(text(&t, props.ino).contains("Name: S\n"));
        // A list directory has `.json` (every item, as BaseSpace lists them), `.href`, `.curl`.
        let samples = walk(&t, "Projects/P/Samples").await.unwrap();
        let lj = t.lookup(samples.ino, OsStr::new(".json")).await.unwrap();
        let FileContent::Fetch(f) = t.content(lj.ino).unwrap() else {
            panic!("not fetched")
        };
        let list: Value = serde_json::from_slice(&t.fetch(&f).await.unwrap()).unwrap();
        assert_eq!(list["Response"]["Items"].as_array().unwrap().len(), 2);
        // `.href`/`.curl` of a list directory answer lookups but are not listed: the first
        // hidden name is an `.id.` link.
        let href = t.lookup(samples.ino, OsStr::new(".href")).await.unwrap();
        assert!(text(&t, href.ino).ends_with("/samples\n"), "{}", text(&t, href.ino));
        assert!(t.lookup(samples.ino, OsStr::new(".curl")).await.is_ok());
        let listed = names(&t, "Projects/P/Samples").await;
        assert!(!listed.iter().any(|n| n == ".href" || n == ".curl"), "{listed:?}");
    });
}

#[test]
fn duplicate_names_get_suffixes_and_id_links_point_at_them() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        let n = names(&t, "Projects/P/Samples").await;
        assert!(
            n.contains(&"S".to_string()) && n.contains(&"S (2)".to_string()),
            "{n:?}"
        );
        let links: Vec<&String> = n.iter().filter(|x| x.starts_with(".id.")).collect();
        assert_eq!(links.len(), 2);
        let l = walk(&t, &format!("Projects/P/Samples/{}", links[1])).await.unwrap();
        let target = t.readlink(l.ino).unwrap();
        assert!(target == "S" || target == "S (2)", "{target}");
    });
}

#[test]
fn lookups_of_what_is_not_there_say_so() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        assert!(matches!(walk(&t, "Projects/nope").await, Err(TreeError::NotFound)));
        let f = walk(&t, "README").await.unwrap();
        assert!(matches!(t.lookup(f.ino, OsStr::new("x")).await, Err(TreeError::NotDir)));
        assert!(matches!(t.content(ROOT), Err(TreeError::IsDir)));
        assert!(matches!(t.getattr(999_999), Err(TreeError::NotFound)));
    });
}

#[test]
fn two_entities_with_one_id_never_share_a_folder() {
    // A sample and a run with the same Id, each with a `Data/` folder.
    let api = Scripted::new();
    api.entities(ListKind::Projects, vec![entity("100", "P")]);
    api.entities(ListKind::Samples("100".into()), vec![entity("100", "S")]);
    api.entities(ListKind::Runs, vec![entity("100", "R")]);
    api.files(
        ListKind::SampleFiles("100".into()),
        vec![file("1", "Data/sample.txt", "e1")],
    );
    api.files(ListKind::RunFiles("100".into()), vec![file("2", "Data/run.bcl", "e2")]);
    let t = tree_over(api);
    rt().block_on(async {
        let s = walk(&t, "Projects/P/Samples/S/Files/Data").await.unwrap();
        let r = walk(&t, "Runs/R/Files/Data").await.unwrap();
        assert_ne!(s.ino, r.ino);
        assert_eq!(names(&t, "Projects/P/Samples/S/Files/Data").await, ["sample.txt"]);
        assert_eq!(names(&t, "Runs/R/Files/Data").await, ["run.bcl"]);
    });
}

#[test]
fn an_unusable_id_skips_that_item_only_and_says_why() {
    let api = Scripted::new();
    api.entities(
        ListKind::Projects,
        vec![
            entity("1", "good"),
            entity("../../../../etc", "evil"),
            entity("2", "also good"),
        ],
    );
    let t = tree_over(api);
    rt().block_on(async {
        let n = names(&t, "Projects").await;
        assert!(n.contains(&"good".into()) && n.contains(&"also good".into()), "{n:?}");
        assert!(!n.iter().any(|x| x.contains('/') || x == "evil"), "{n:?}");
        let e = walk(&t, "Projects/.error").await.unwrap();
        assert!(text(&t, e.ino).contains("../../../../etc"));
    });
}

#[test]
fn appsession_outputs_link_inside_the_project_whatever_the_server_says() {
    let api = Scripted::new();
    api.entities(ListKind::Projects, vec![entity("1", "P")]);
    api.entities(ListKind::AppSessions("1".into()), vec![entity("7", "run it")]);
    let mut good = entity("ds.1", "out");
    good.entity.v1pre3_id = Some("sample.100".into());
    let mut evil = entity("ds.2", "x");
    evil.entity.v1pre3_id = Some("sample.100/../../../../../../../../etc".into());
    api.entities(ListKind::AppSessionOutputs("7".into()), vec![good, evil]);
    let t = tree_over(api);
    rt().block_on(async {
        let n = names(&t, "Projects/P/AppSessions/run it").await;
        let outs: Vec<&String> = n.iter().filter(|x| x.starts_with("Sample.")).collect();
        assert_eq!(outs, ["Sample.100.out"], "{n:?}");
        let l = walk(&t, "Projects/P/AppSessions/run it/Sample.100.out").await.unwrap();
        assert_eq!(t.readlink(l.ino).unwrap(), "../../Samples/.id.100");
        assert!(n.contains(&".error".to_string()));
        assert!(n.contains(&".json".to_string()), "hidden files stay beside the listing");
    });
}

#[test]
fn a_refill_keeps_unchanged_inodes_and_gives_new_versions_new_ones() {
    let api = Scripted::new();
    api.entities(ListKind::Projects, vec![entity("1", "P")]);
    api.entities(ListKind::Samples("1".into()), vec![entity("2", "S")]);
    let files = ListKind::SampleFiles("2".into());
    api.files(
        files.clone(),
        vec![
            file("10", "same.txt", "e1"),
            file("11", "changes.txt", "e1"),
            file("12", "goes.txt", "e1"),
        ],
    );
    let t = tree_over(api.clone());
    rt().block_on(async {
        let same = walk(&t, "Projects/P/Samples/S/Files/same.txt").await.unwrap();
        let changes = walk(&t, "Projects/P/Samples/S/Files/changes.txt").await.unwrap();
        let dir = walk(&t, "Projects/P/Samples/S/Files").await.unwrap();
        let before = t.len();
        api.files(
            files.clone(),
            vec![file("10", "same.txt", "e1"), file("11", "changes.txt", "e2")],
        );
        t.refresh(dir.ino);
        assert_eq!(
            names(&t, "Projects/P/Samples/S/Files").await,
            ["changes.txt", "same.txt"]
        );
        assert_eq!(
            walk(&t, "Projects/P/Samples/S/Files/same.txt").await.unwrap().ino,
            same.ino
        );
        let changed = walk(&t, "Projects/P/Samples/S/Files/changes.txt").await.unwrap();
        assert_ne!(changed.ino, changes.ino, "a new version is a new inode");
        // The old version is kept while the kernel holds it, then freed.
        assert!(t.getattr(changes.ino).is_ok());
        let held = t.len();
        t.forget(changes.ino, 1);
        assert!(t.getattr(changes.ino).is_err());
        assert_eq!(t.len(), held - 1);
        assert_eq!(held, before, "goes.txt was freed, the new changes.txt added");
    });
}

#[test]
fn relisting_versions_that_keep_changing_does_not_grow_the_table() {
    let api = Scripted::new();
    api.entities(ListKind::Runs, vec![entity("5", "R")]);
    let files = ListKind::RunFiles("5".into());
    let gen = |v: usize| {
        (0..1000)
            .map(|i| file(&i.to_string(), &format!("f{i}"), &format!("v{v}")))
            .collect()
    };
    api.files(files.clone(), gen(0));
    let t = tree_over(api.clone());
    rt().block_on(async {
        let dir = walk(&t, "Runs/R/Files").await.unwrap();
        t.readdir(dir.ino).await.unwrap();
        let size = t.len();
        for v in 1..50 {
            api.files(files.clone(), gen(v));
            t.refresh(dir.ino);
            t.readdir(dir.ino).await.unwrap();
        }
        assert_eq!(t.len(), size);
    });
}

#[test]
fn local_entries_survive_a_refill() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        let dir = walk(&t, "Projects/P/Samples/S/Files").await.unwrap();
        t.readdir(dir.ino).await.unwrap();
        let a = t
            .add_local(dir.ino, OsStr::new("upload.bam"), Arc::from(&b"partial"[..]))
            .unwrap();
        assert!(matches!(
            t.add_local(dir.ino, OsStr::new("a.txt"), Arc::from(&b""[..])),
            Err(TreeError::Exists)
        ));
        t.refresh(dir.ino);
        let n = names(&t, "Projects/P/Samples/S/Files").await;
        assert!(n.contains(&"upload.bam".into()) && n.contains(&"a.txt".into()), "{n:?}");
        assert_eq!(
            walk(&t, "Projects/P/Samples/S/Files/upload.bam").await.unwrap().ino,
            a.ino
        );
        assert_eq!(text(&t, a.ino), "partial");
        t.remove_local(dir.ino, OsStr::new("upload.bam")).unwrap();
        assert!(walk(&t, "Projects/P/Samples/S/Files/upload.bam").await.is_err());
    });
}

#[test]
fn forgetting_a_directory_frees_its_listing_until_it_is_looked_at_again() {
    let api = Scripted::new();
    api.entities(ListKind::Runs, vec![entity("5", "R")]);
    let many: Vec<FileInfo> = (0..5000)
        .map(|i| file(&i.to_string(), &format!("L{}/f{i}", i % 10), "e"))
        .collect();
    api.files(ListKind::RunFiles("5".into()), many);
    let t = tree_over(api);
    rt().block_on(async {
        let base = t.len();
        let files = walk(&t, "Runs/R/Files").await.unwrap();
        let l0 = t.lookup(files.ino, OsStr::new("L0")).await.unwrap();
        let f = t.lookup(l0.ino, OsStr::new("f0")).await.unwrap();
        assert!(t.len() > base + 5000);
        // The kernel forgets leaves before their parents.
        t.forget(f.ino, 1);
        t.forget(l0.ino, 1);
        assert!(t.len() > base + 5000, "Files/ itself is still held");
        t.forget(files.ino, 1);
        assert!(t.len() < base + 30, "{} nodes left of {base}", t.len());
        let fills = t.fills.load(Ordering::Relaxed);
        assert!(walk(&t, "Runs/R/Files/L0/f0").await.is_ok());
        assert_eq!(t.fills.load(Ordering::Relaxed), fills + 1, "listed again");
    });
}

#[test]
fn readdirplus_references_count_like_lookups() {
    let t = tree_over(FakeApi::new(account(b"hello")));
    rt().block_on(async {
        let files = walk(&t, "Projects/P/Samples/S/Files").await.unwrap();
        let entries = t.readdir(files.ino).await.unwrap();
        let a = entries.iter().find(|(n, _)| n == "a.txt").unwrap().1;
        t.remember(a.ino);
        t.forget(files.ino, 1);
        // a.txt is still held by the kernel: kept (as an orphan) until forgotten.
        assert!(t.getattr(a.ino).is_ok());
        t.forget(a.ino, 1);
        assert!(t.getattr(a.ino).is_err());
    });
}

#[test]
fn a_path_thousands_of_levels_deep_is_served_and_freed_without_recursion() {
    let api = Scripted::new();
    api.entities(ListKind::Runs, vec![entity("5", "R")]);
    let deep = "d/".repeat(4000) + "leaf.txt";
    api.files(ListKind::RunFiles("5".into()), vec![file("1", &deep, "e")]);
    let t = tree_over(api);
    let t2 = t.clone();
    // A small stack, as the runtime's worker threads have: recursion would overflow it.
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            rt().block_on(async {
                let a = walk(&t2, &format!("Runs/R/Files/{deep}")).await.unwrap();
                assert_eq!(a.kind, Kind::File);
                let files = walk(&t2, "Runs/R/Files").await.unwrap();
                t2.refresh(files.ino);
                t2.readdir(files.ino).await.unwrap();
            });
        })
        .unwrap()
        .join()
        .unwrap();
    drop(t);
}

#[test]
fn a_failed_listing_is_an_error_with_a_reason_and_a_stale_one_keeps_serving() {
    let api = Scripted::new();
    api.entities(ListKind::Projects, vec![entity("1", "P")]);
    let t = tree_over(api.clone());
    rt().block_on(async {
        let runs = walk(&t, "Runs").await.unwrap();
        let e = t.readdir(runs.ino).await.unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        let err = t.lookup(runs.ino, OsStr::new(".error")).await.unwrap();
        assert!(
            text(&t, err.ino).contains("v1pre3/users/current/runs"),
            "{}",
            text(&t, err.ino)
        );
        // A listing that worked once keeps serving when a refresh fails.
        let projects = walk(&t, "Projects").await.unwrap();
        assert_eq!(names(&t, "Projects").await, [".json", ".id.1", "P"]);
        api.fail(ListKind::Projects);
        t.refresh(projects.ino);
        assert!(names(&t, "Projects").await.contains(&"P".to_string()));
    });
}

/// An entity item as a server would list it.
fn entity(id: &str, name: &str) -> EntityItem {
    let v = json!({"Id": id, "Name": name, "DateCreated": "2024-01-01T00:00:00.0000000Z"});
    EntityItem::from_raw(&serde_json::value::to_raw_value(&v).unwrap()).unwrap()
}

fn file(id: &str, path: &str, etag: &str) -> FileInfo {
    let name = path.rsplit('/').next().unwrap();
    let v = json!({"Id": id, "Name": name, "Path": path, "Size": 3, "ETag": etag});
    FileInfo::from_raw(&serde_json::value::to_raw_value(&v).unwrap()).unwrap()
}

/// Answers listings from a table; lists not in it fail.
#[derive(Default)]
pub(crate) struct Scripted {
    entities: Mutex<HashMap<ListKind, Vec<EntityItem>>>,
    files: Mutex<HashMap<ListKind, Vec<FileInfo>>>,
}

impl Scripted {
    fn new() -> Arc<Scripted> {
        Arc::new(Scripted::default())
    }
    fn entities(&self, k: ListKind, v: Vec<EntityItem>) {
        self.entities.lock().insert(k, v);
    }
    fn files(&self, k: ListKind, v: Vec<FileInfo>) {
        self.files.lock().insert(k, v);
    }
    fn fail(&self, k: ListKind) {
        self.entities.lock().remove(&k);
        self.files.lock().remove(&k);
    }
}

fn missing(k: &ListKind) -> ApiError {
    ApiError::Server {
        status: 500,
        code: None,
        message: format!("no script for {}", k.href()),
        attempts: 1,
    }
}

impl BaseSpaceApi for Scripted {
    fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>> {
        async { Ok((User::default(), json!({}))) }.boxed()
    }
    fn list_entities(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<EntityItem>, ApiError>> {
        let r = self.entities.lock().get(&kind).cloned().ok_or_else(|| missing(&kind));
        async move {
            r.map(|items| Listed {
                items,
                skipped: vec![],
                subdirs: vec![],
            })
        }
        .boxed()
    }
    fn list_files(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<FileInfo>, ApiError>> {
        let r = self.files.lock().get(&kind).cloned().ok_or_else(|| missing(&kind));
        async move {
            r.map(|items| Listed {
                items,
                skipped: vec![],
                subdirs: vec![],
            })
        }
        .boxed()
    }
    fn content_meta(&self, _id: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>> {
        async { Err(ApiError::UrlExpired) }.boxed()
    }
    fn get_range(
        &self,
        _url: &str,
        _start: u64,
        _len: u64,
        _etag: Option<&str>,
        _pieces: Pieces,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>> {
        async { Err(ApiError::UrlExpired) }.boxed()
    }
}

#[test]
fn files_metadata_shows_the_folders_of_files_and_looks_them_up_without_a_request() {
    let api = FakeApi::new(account(b"hello"));
    let t = tree_over(api.clone());
    rt().block_on(async {
        assert_eq!(names(&t, "Projects/P/Samples/S/Files.metadata").await, ["dir"]);
        let before = t.fills.load(Ordering::Relaxed);
        // A folder already shown is found without the per-file listing (and without
        // holding the table's lock against itself: this lookup once deadlocked, so it runs
        // on a thread of its own and a hang fails the test).
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = t.clone();
        std::thread::spawn(move || {
            let _ = tx.send(rt().block_on(walk(&t2, "Projects/P/Samples/S/Files.metadata/dir")));
        });
        let dir = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the lookup returns (a deadlock on the inode table?)")
            .unwrap();
        assert_eq!(dir.kind, Kind::Dir);
        assert_eq!(
            t.fills.load(Ordering::Relaxed),
            before,
            "no listing for a mirrored folder"
        );
        let files = walk(&t, "Projects/P/Samples/S/Files/dir").await.unwrap();
        assert_eq!(dir.mtime, files.mtime, "dated as Files/ dates it");
        // A file's own directory (hidden from readdir) is found by `cd`.
        let b = walk(&t, "Projects/P/Samples/S/Files.metadata/dir/b.txt").await.unwrap();
        assert_eq!(b.kind, Kind::Dir);
    });
}
