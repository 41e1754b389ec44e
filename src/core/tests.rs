//! The filesystem core driven directly, as the kernel would through the adapter: no
//! `/dev/fuse`, the in-crate fake API (the emulator's account model) underneath.

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::api::fake::FakeApi;
use crate::api::faulty::Faulty;
use crate::api::BaseSpaceApi;
use crate::emulator::account::{Account, AccountBuilder, Content};
use crate::read::{ReadOptions, Reader};
use crate::stats::MountStats;
use crate::tree::tests::{rt, tree_over};
use crate::tree::ROOT;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 31) as u8) ^ seed).collect()
}

/// Project P, sample S with `big.bin` (20 MiB + 7: a multipart ETag) and `small.txt`.
fn account(seed: u8) -> Account {
    let mut b = AccountBuilder::stable("Tester");
    let p = b.project("P");
    let s = b.sample(p, "S", None);
    let big = pattern((20 << 20) + 7, seed);
    b.file(s, "big.bin", big.len() as u64, Content::Memory(Bytes::from(big)), None);
    b.file(s, "small.txt", 5, Content::Memory(Bytes::from_static(b"hello")), None);
    b.build()
}

fn core_over(api: Arc<dyn BaseSpaceApi>) -> Arc<FsCore> {
    core_with(
        api,
        ReadOptions {
            cache_bytes: 64 << 20,
            ..ReadOptions::default()
        },
    )
}

fn core_with(api: Arc<dyn BaseSpaceApi>, opts: ReadOptions) -> Arc<FsCore> {
    let tree = tree_over(api.clone());
    let reader = Reader::new(api.clone(), opts);
    let stats = Arc::new(MountStats::new(
        "http://fake",
        "/mnt",
        api,
        reader.clone(),
        tree.clone(),
    ));
    FsCore::new(tree, reader, stats)
}

async fn path(c: &FsCore, p: &str) -> Result<Attr, FsError> {
    let mut a = c.getattr(ROOT)?;
    for part in p.split('/') {
        a = c.lookup(a.ino, OsStr::new(part)).await?;
    }
    Ok(a)
}

/// Reads a whole file in 1 MiB requests, in order, as `cat` through the kernel does.
async fn read_all(c: &FsCore, fh: u64, size: u64) -> Result<Vec<u8>, FsError> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let b = c.read(fh, out.len() as u64, 1 << 20).await?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

#[test]
fn lookup_open_read_release_returns_the_exact_bytes() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        assert_eq!(a.size, (20 << 20) + 7);
        let o = c.open(a.ino, false).await.unwrap();
        assert_eq!(
            o.cache,
            CacheMode::Refresh,
            "not verified yet: pages not kept across opens"
        );
        assert_eq!(read_all(&c, o.fh, a.size).await.unwrap(), pattern((20 << 20) + 7, 1));
        let tail = c.read(o.fh, a.size - 3, 100).await.unwrap();
        assert_eq!(&tail[..], &pattern((20 << 20) + 7, 1)[(20 << 20) + 4..]);
        assert!(c.read(o.fh, a.size, 10).await.unwrap().is_empty());
        c.release(o.fh);
        assert_eq!(c.open_handles(), 0);
        // Verified whole (multipart ETag, 8 MiB parts): now its pages may stay.
        let again = c.open(a.ino, false).await.unwrap();
        assert_eq!(again.cache, CacheMode::Keep);
    });
}

#[test]
fn writes_are_refused_as_a_read_only_filesystem() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/small.txt").await.unwrap();
        assert_eq!(c.open(a.ino, true).await.unwrap_err().errno, libc::EROFS);
        assert_eq!(c.access(a.ino, true).unwrap_err().errno, libc::EROFS);
        assert!(c.access(a.ino, false).is_ok());
    });
}

#[test]
fn errors_reach_the_kernel_as_errnos() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        assert_eq!(path(&c, "Projects/nope").await.unwrap_err().errno, libc::ENOENT);
        let f = path(&c, "README").await.unwrap();
        assert_eq!(c.lookup(f.ino, OsStr::new("x")).await.unwrap_err().errno, libc::ENOTDIR);
        assert_eq!(c.open(ROOT, false).await.unwrap_err().errno, libc::EISDIR);
        assert_eq!(c.read(12345, 0, 1).await.unwrap_err().errno, libc::EBADF);
        let o = c.open(f.ino, false).await.unwrap();
        assert_eq!(c.readdir(o.fh).unwrap_err().errno, libc::ENOTDIR);
        assert_eq!(c.getattr(987_654).unwrap_err().errno, libc::ENOENT);
    });
}

#[test]
fn opendir_snapshots_entries_with_dots_first() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        let d = path(&c, "Projects/P/Samples/S/Files").await.unwrap();
        let fh = c.opendir(d.ino).await.unwrap();
        let e = c.readdir(fh).unwrap();
        let names: Vec<_> = e.iter().map(|(n, _)| n.to_string_lossy().into_owned()).collect();
        assert_eq!(names, [".", "..", "big.bin", "small.txt"]);
        assert_eq!(e[0].1.ino, d.ino);
        c.releasedir(fh);
        assert_eq!(c.readdir(fh).unwrap_err().errno, libc::EBADF);
    });
}

#[test]
fn readdir_across_a_refill_shows_the_new_listing() {
    let api = FakeApi::new(account(1));
    let c = core_over(api.clone());
    rt().block_on(async {
        let d = path(&c, "Projects/P/Samples/S/Files").await.unwrap();
        let before = c.readdir(c.opendir(d.ino).await.unwrap()).unwrap();
        let mut b = AccountBuilder::stable("Tester");
        let p = b.project("P");
        let s = b.sample(p, "S", None);
        b.file(s, "small.txt", 5, Content::Memory(Bytes::from_static(b"hello")), None);
        b.file(s, "new.txt", 2, Content::Memory(Bytes::from_static(b"hi")), None);
        api.replace(b.build());
        c.refresh(d.ino).unwrap();
        let after = c.readdir(c.opendir(d.ino).await.unwrap()).unwrap();
        let names = |e: &DirSnapshot| {
            e.iter()
                .map(|(n, _)| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&before), [".", "..", "big.bin", "small.txt"]);
        assert_eq!(names(&after), [".", "..", "new.txt", "small.txt"]);
        let small = |e: &DirSnapshot| e.iter().find(|(n, _)| n == "small.txt").unwrap().1.ino;
        assert_eq!(small(&before), small(&after), "unchanged entries keep their inode");
    });
}

#[test]
fn refreshing_a_file_refreshes_its_directory() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        let f = path(&c, "Projects/P/Samples/S/Files/small.txt").await.unwrap();
        let d = path(&c, "Projects/P/Samples/S/Files").await.unwrap();
        assert_eq!(c.refresh(f.ino).unwrap(), d.ino);
        let fills = c.tree().fills.load(Ordering::Relaxed);
        c.opendir(d.ino).await.unwrap();
        assert_eq!(c.tree().fills.load(Ordering::Relaxed), fills + 1);
    });
}

#[test]
fn the_stats_file_is_generated_at_open_and_bypasses_the_page_cache() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        let s = path(&c, ".bsmount/stats").await.unwrap();
        let o = c.open(s.ino, false).await.unwrap();
        assert_eq!(o.cache, CacheMode::Direct);
        let b = c.read(o.fh, 0, 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v["inodes"].as_u64().unwrap() > 5, "{v}");
    });
}

#[test]
fn wrong_bytes_fail_the_read_that_completes_the_file_and_every_read_after() {
    let faulty = Faulty::new(FakeApi::new(account(1)));
    faulty.corrupt_ranges.store(true, Ordering::Relaxed);
    let c = core_over(faulty.clone());
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        let e = read_all(&c, o.fh, a.size).await.unwrap_err();
        assert_eq!(e.errno, libc::EIO);
        // The kernel re-reads the failed pages: they fail again, whatever the source says now.
        faulty.corrupt_ranges.store(false, Ordering::Relaxed);
        assert_eq!(c.read(o.fh, a.size - 7, 7).await.unwrap_err().errno, libc::EIO);
        assert_eq!(c.read(o.fh, 0, 10).await.unwrap_err().errno, libc::EIO);
        c.release(o.fh);
        // Nothing wrong stayed cached: a new open reads the right bytes and is verified.
        let o = c.open(a.ino, false).await.unwrap();
        assert_eq!(o.cache, CacheMode::Refresh);
        assert_eq!(read_all(&c, o.fh, a.size).await.unwrap(), pattern((20 << 20) + 7, 1));
    });
}

// Part digests hashed as a copy's files are fetched ahead are the digests of the bytes those
// files are read from: right bytes verify with them, wrong ones fail the read that completes
// each file, as when its reader hashes them itself.
#[test]
fn part_digests_hashed_ahead_verify_a_copy_and_catch_wrong_bytes() {
    let cohort = || {
        let mut b = AccountBuilder::stable("Tester");
        let p = b.project("P");
        for i in 0..3 {
            let s = b.sample(p, &format!("s{i}"), None);
            let data = pattern((16 << 20) + 7, i as u8);
            let id = b.file(s, "r.fq", data.len() as u64, Content::Memory(Bytes::from(data)), None);
            b.uploaded_in_parts(id, 8 << 20);
        }
        b.build()
    };
    for wrong in [false, true] {
        let faulty = Faulty::new(FakeApi::new(cohort()));
        faulty.corrupt_ranges.store(wrong, Ordering::Relaxed);
        let c = core_over(faulty);
        rt().block_on(async {
            for i in 0..3 {
                path(&c, &format!("Projects/P/Samples/s{i}/Files/r.fq")).await.unwrap();
            }
            for i in 0..3 {
                let a = path(&c, &format!("Projects/P/Samples/s{i}/Files/r.fq")).await.unwrap();
                let o = c.open(a.ino, false).await.unwrap();
                match wrong {
                    false => assert_eq!(
                        read_all(&c, o.fh, a.size).await.unwrap(),
                        pattern((16 << 20) + 7, i as u8)
                    ),
                    true => assert_eq!(
                        read_all(&c, o.fh, a.size).await.unwrap_err().errno,
                        libc::EIO,
                        "file {i}"
                    ),
                }
                c.release(o.fh);
            }
            let s = c.stats.snapshot();
            let (ahead, taken) = (&s["fetch"]["parts_hashed_ahead"], &s["fetch"]["part_digests_taken"]);
            assert!(taken.as_u64() > Some(0) && taken.as_u64() <= ahead.as_u64(), "{s}");
            let verified = s["fetch"]["files_verified"].as_u64();
            assert_eq!(verified, Some(if wrong { 0 } else { 3 }), "{s}");
        });
    }
}

/// Parallel readahead: the read of the file's last bytes is answered before the reads of
/// the bytes ahead of it arrive. The read that completes the file must still fail.
#[test]
fn wrong_bytes_fail_when_the_tail_is_read_before_the_rest() {
    let faulty = Faulty::new(FakeApi::new(account(1)));
    faulty.corrupt_ranges.store(true, Ordering::Relaxed);
    let c = core_over(faulty);
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        let tail = 20 << 20;
        assert_eq!(
            c.read(o.fh, tail, 1 << 20).await.unwrap().len(),
            7,
            "tail alone: no verdict yet"
        );
        let mut off = 0;
        let mut failed = false;
        while off < tail {
            match c.read(o.fh, off, 1 << 20).await {
                Ok(b) => off += b.len() as u64,
                Err(e) => {
                    assert_eq!(e.errno, libc::EIO);
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "every byte of a corrupt file was handed out without an error");
    });
}

/// `big.bin` as an uploader with 10 MiB parts would have left it: its ETag fits 8 MiB
/// parts too, which BaseSpace's uploaders use and are tried first.
fn account_10mib_parts(seed: u8) -> Account {
    let mut b = AccountBuilder::stable("Tester");
    let p = b.project("P");
    let s = b.sample(p, "S", None);
    let big = pattern((20 << 20) + 7, seed);
    let id = b.file(s, "big.bin", big.len() as u64, Content::Memory(Bytes::from(big)), None);
    b.uploaded_in_parts(id, 10 << 20);
    b.build()
}

#[test]
fn a_multipart_etag_of_another_part_size_is_settled_by_a_second_pass() {
    let c = core_over(FakeApi::new(account_10mib_parts(1)));
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        assert_eq!(read_all(&c, o.fh, a.size).await.unwrap(), pattern((20 << 20) + 7, 1));
        let s = c.stats.snapshot();
        assert_eq!(s["fetch"]["files_verified"].as_u64(), Some(1), "{s}");
        assert_eq!(s["fetch"]["checksum_failures"].as_u64(), Some(0), "{s}");
    });
    // Wrong bytes under that ETag: both passes fail, and the read with them.
    let faulty = Faulty::new(FakeApi::new(account_10mib_parts(1)));
    faulty.corrupt_ranges.store(true, Ordering::Relaxed);
    let c = core_over(faulty);
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        assert_eq!(read_all(&c, o.fh, a.size).await.unwrap_err().errno, libc::EIO);
    });
}

#[test]
fn a_small_file_with_wrong_bytes_is_refused_at_once() {
    let faulty = Faulty::new(FakeApi::new(account(1)));
    faulty.corrupt_ranges.store(true, Ordering::Relaxed);
    let c = core_over(faulty);
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/small.txt").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        assert_eq!(c.read(o.fh, 0, 4096).await.unwrap_err().errno, libc::EIO);
    });
}

#[test]
fn a_file_replaced_under_an_open_handle_reads_as_stale() {
    let api = FakeApi::new(account(1));
    let c = core_over(api.clone());
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        let first = c.read(o.fh, 0, 1 << 20).await.unwrap();
        assert_eq!(&first[..], &pattern(1 << 20, 1)[..]);
        api.replace(account(2)); // same ids and paths, other bytes
        let e = c.read(o.fh, 15 << 20, 1 << 20).await.unwrap_err();
        assert_eq!(e.errno, libc::ESTALE);
        assert_eq!(
            c.read(o.fh, 0, 1 << 20).await.unwrap_err().errno,
            libc::ESTALE,
            "stays stale"
        );
    });
}

#[test]
fn a_failed_read_retried_at_once_fails_at_once() {
    let faulty = Faulty::new(FakeApi::new(account(1)));
    let c = core_over(faulty.clone());
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        faulty.fail_ranges.store(1, Ordering::Relaxed);
        assert_eq!(c.read(o.fh, 4 << 20, 4096).await.unwrap_err().errno, libc::EIO);
        let ranges = faulty.counters();
        // The kernel's retry of the same pages: no second wait, no second request.
        assert_eq!(c.read(o.fh, 4 << 20, 4096).await.unwrap_err().errno, libc::EIO);
        assert_eq!(faulty.counters(), ranges);
        // Other blocks are unaffected.
        assert_eq!(c.read(o.fh, 0, 5).await.unwrap().len(), 5);
    });
}

#[test]
fn forget_through_the_core_frees_what_the_kernel_dropped() {
    let c = core_over(FakeApi::new(account(1)));
    rt().block_on(async {
        let base = c.tree().len();
        let d = path(&c, "Projects/P/Samples/S/Files").await.unwrap();
        c.releasedir(c.opendir(d.ino).await.unwrap());
        let grown = c.tree().len();
        assert!(grown > base);
        c.forget(d.ino, 1);
        assert!(c.tree().len() < grown);
    });
}

#[test]
fn without_verification_nothing_is_hashed_and_pages_are_kept() {
    let c = core_with(
        FakeApi::new(account(1)),
        ReadOptions {
            verify: false,
            ..ReadOptions::default()
        },
    );
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/S/Files/big.bin").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        assert_eq!(o.cache, CacheMode::Keep);
        assert_eq!(read_all(&c, o.fh, a.size).await.unwrap().len() as u64, a.size);
        let s = c.stats.snapshot();
        assert_eq!(s["fetch"]["files_verified"].as_u64(), Some(0), "{s}");
    });
}

/// Samples s0..s{n-1} of project P, each with one file `r.fq` of `size(i)` bytes.
fn cohort(n: usize, size: impl Fn(usize) -> usize) -> Account {
    let mut b = AccountBuilder::stable("Tester");
    let p = b.project("P");
    for i in 0..n {
        let s = b.sample(p, &format!("s{i}"), None);
        let data = pattern(size(i), i as u8);
        b.file(s, "r.fq", data.len() as u64, Content::Memory(Bytes::from(data)), None);
    }
    b.build()
}

/// Opens sample `i`'s file, reads it whole in pieces of `piece` bytes and releases it;
/// returns the cache mode it was opened with.
async fn copy_one(c: &FsCore, i: usize, piece: u32) -> CacheMode {
    let a = path(c, &format!("Projects/P/Samples/s{i}/Files/r.fq")).await.unwrap();
    let o = c.open(a.ino, false).await.unwrap();
    let mut at = 0;
    while at < a.size {
        at += c.read(o.fh, at, piece).await.unwrap().len() as u64;
    }
    c.release(o.fh);
    o.cache
}

// Issue 19: a copy's files (opened in walk order, the ones before read to their end) are
// read around the page cache from the second on; files under 1 MiB, and copies reading in
// small pieces, keep it. Two files of which the first was read only in part (a BAM's header,
// then its index) are no copy.
#[test]
fn a_copy_reads_its_files_around_the_page_cache() {
    let mib = 1 << 20;
    let c = core_over(FakeApi::new(cohort(8, |i| if i == 4 { 4096 } else { 3 * mib / 2 })));
    rt().block_on(async {
        let mut modes = Vec::new();
        for i in 0..4 {
            modes.push(copy_one(&c, i, 512 << 10).await);
        }
        assert_ne!(modes[0], CacheMode::Direct);
        assert_eq!(
            &modes[1..],
            &[CacheMode::Direct; 3],
            "the first read to its end: a copy"
        );
        assert_ne!(
            copy_one(&c, 4, 512 << 10).await,
            CacheMode::Direct,
            "4 KiB: the page cache"
        );
        // A program reading 64 KiB at a time would send a request per read: the walk's
        // files after the first one it read that way keep the page cache.
        assert_eq!(copy_one(&c, 5, 64 << 10).await, CacheMode::Direct);
        assert_ne!(copy_one(&c, 6, 512 << 10).await, CacheMode::Direct);
        assert_eq!(c.stats.snapshot()["fetch"]["streamed_opens"], 4);
    });
    let c = core_over(FakeApi::new(cohort(2, |_| 3 * mib / 2)));
    rt().block_on(async {
        let a = path(&c, "Projects/P/Samples/s0/Files/r.fq").await.unwrap();
        let o = c.open(a.ino, false).await.unwrap();
        c.read(o.fh, 0, 512 << 10).await.unwrap();
        c.release(o.fh);
        assert_ne!(
            copy_one(&c, 1, 512 << 10).await,
            CacheMode::Direct,
            "a header, then an index"
        );
        assert_eq!(c.stats.snapshot()["fetch"]["files_ahead"], 0);
    });
}

// Issue 19: a copy seen only within one directory (its first file read to its end, then the
// next) fetches the file it opens and, at the directory's end, the next directory's first
// file: one file, not more, for a copy that stops there.
#[test]
fn a_copy_at_the_end_of_its_directory_fetches_one_file_beyond() {
    let mut b = AccountBuilder::stable("Tester");
    let p = b.project("P");
    for i in 0..3 {
        let s = b.sample(p, &format!("s{i}"), None);
        for name in ["a.fq", "b.fq"] {
            let data = pattern(3 << 20, i as u8);
            b.file(s, name, data.len() as u64, Content::Memory(Bytes::from(data)), None);
        }
    }
    let c = core_over(FakeApi::new(b.build()));
    rt().block_on(async {
        // Listed first, as a shell glob does.
        for i in 0..3 {
            path(&c, &format!("Projects/P/Samples/s{i}/Files/a.fq")).await.unwrap();
        }
        for name in ["a.fq", "b.fq"] {
            let a = path(&c, &format!("Projects/P/Samples/s0/Files/{name}")).await.unwrap();
            let o = c.open(a.ino, false).await.unwrap();
            assert_eq!(read_all(&c, o.fh, a.size).await.unwrap(), pattern(3 << 20, 0));
            c.release(o.fh);
        }
        // s0/b.fq (opened: the copy's first) and s1/a.fq.
        assert_eq!(c.stats.snapshot()["fetch"]["files_ahead"], 2);
    });
}

// Issue 19: a read at the start of a small file fetches all of it at once (the kernel asks a
// block at a time, the second only after the first arrived); larger files fetch what is asked.
#[test]
fn a_read_at_the_start_of_a_small_file_fetches_it_whole() {
    let mib = 1 << 20;
    // The second block: already there (2 MiB), or fetched when asked (3 MiB). Each on a mount
    // of its own: the second file after the first read whole would continue a copy.
    for (i, fetched) in [(0, false), (1, true)] {
        let api = FakeApi::new(cohort(2, |i| if i == 0 { 2 * mib } else { 3 * mib }));
        let c = core_over(api.clone());
        rt().block_on(async {
            let a = path(&c, &format!("Projects/P/Samples/s{i}/Files/r.fq")).await.unwrap();
            let o = c.open(a.ino, false).await.unwrap();
            let gets = || api.counters.ranges.load(Ordering::Relaxed);
            let before = gets();
            c.read(o.fh, 0, 1 << 20).await.unwrap();
            assert_eq!(gets() - before, 1, "file {i}: one GET for its first read");
            c.read(o.fh, 1 << 20, 1 << 20).await.unwrap();
            assert_eq!(gets() - before > 1, fetched, "file {i}: a GET for its second block");
            c.release(o.fh);
        });
    }
}
