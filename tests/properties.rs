//! Property tests of single layers, without a network: the read path against an in-memory
//! fake BaseSpace, the JSON/paging parsers against arbitrary input, and the naming rules.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bsmount::api::model::Page;
use bsmount::api::{ApiError, BaseSpaceApi, ContentMeta, Entity, EntityItem, FileInfo, ListKind, Listed, Pieces, User};
use bsmount::read::{Handle, ReadOptions, Reader, BLOCK_SIZE};
use bsmount::tree::names;
use bsmount::tree::RemoteFile;
use futures::future::BoxFuture;
use futures::FutureExt;
use proptest::prelude::*;
use serde_json::Value;

/// Content of fake file `id` at `offset`: every byte checkable without storing the file.
fn byte_at(id: u64, offset: u64) -> u8 {
    ((offset.wrapping_mul(31) ^ id.wrapping_mul(0x9E37)) % 251) as u8
}

/// A BaseSpace with files of given sizes, counting ranged requests and bytes.
struct FakeApi {
    sizes: Vec<u64>,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Time each ranged GET takes.
    delay: std::time::Duration,
}

impl FakeApi {
    fn new(sizes: Vec<u64>, delay: std::time::Duration) -> Arc<FakeApi> {
        Arc::new(FakeApi {
            sizes,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            delay,
        })
    }
}

impl BaseSpaceApi for FakeApi {
    fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>> {
        async { Ok((User::default(), Value::Null)) }.boxed()
    }
    fn list_entities(&self, _kind: ListKind) -> BoxFuture<'_, Result<Listed<EntityItem>, ApiError>> {
        async { Ok(Listed::default()) }.boxed()
    }
    fn list_files(&self, _kind: ListKind) -> BoxFuture<'_, Result<Listed<FileInfo>, ApiError>> {
        async { Ok(Listed::default()) }.boxed()
    }
    fn content_meta(&self, file_id: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>> {
        let url = format!("fake://{file_id}");
        async move {
            Ok(ContentMeta {
                href_content: url,
                expires: None,
                supports_range: Some(true),
            })
        }
        .boxed()
    }
    fn get_range(
        &self,
        url: &str,
        start: u64,
        len: u64,
        _etag: Option<&str>,
        pieces: Pieces,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>> {
        let id: u64 = url.trim_start_matches("fake://").parse().unwrap();
        let size = self.sizes[id as usize];
        async move {
            assert!(
                len > 0 && start + len <= size,
                "asked {start}+{len} of a {size}-byte file"
            );
            self.requests.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            tokio::time::sleep(self.delay).await;
            // Counted once delivered: a cancelled request transfers nothing.
            self.bytes.fetch_add(len, Ordering::Relaxed);
            let mut out = Vec::new();
            let mut o = start;
            while o < start + len {
                let n = (pieces.size as u64).min(start + len - o);
                let mut b = (pieces.alloc)(n as usize);
                b.extend((o..o + n).map(|o| byte_at(id, o)));
                out.push(b);
                o += n;
            }
            Ok(out)
        }
        .boxed()
    }
}

/// Two workers, like the mount's runtime on a small machine.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn handle(id: u64, size: u64) -> Handle {
    Handle::new(RemoteFile {
        id: id.to_string(),
        size,
        version: format!("v{id}-1"),
        has_etag: false,
    })
}

/// Reads: (file index, offset as a fraction of size × 1000, length).
fn reads() -> impl Strategy<Value = Vec<(usize, u64, u32)>> {
    prop::collection::vec((0usize..3, 0u64..1100, 1u32..(3 << 20)), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_reads_and_seeks_return_exact_bytes(
        sizes in prop::collection::vec(1u64..(24 << 20), 3),
        ops in reads(),
        cache_mib in 16u64..64,
        sequential_runs in 0usize..4,
        delay_us in prop::sample::select(vec![0u64, 200, 3000]),
    ) {
        let rt = runtime();
        let api = FakeApi::new(sizes.clone(), std::time::Duration::from_micros(delay_us));
        let budget = cache_mib << 20;
        let reader = Reader::new(api.clone(), ReadOptions { cache_bytes: budget, max_connections: 8, ..ReadOptions::default() });
        let handles: Vec<Handle> = sizes.iter().enumerate().map(|(i, s)| handle(i as u64, *s)).collect();
        rt.block_on(async {
            // Some sequential stretches (they trigger prefetch), then the random reads.
            for run in 0..sequential_runs {
                let h = &handles[run % 3];
                let mut off = 0;
                while off < h.file.size {
                    let b = reader.read(h, off, 1 << 20).await.unwrap();
                    prop_assert!(b.iter().enumerate().all(|(i, v)| *v == byte_at((run % 3) as u64, off + i as u64)));
                    off += b.len() as u64;
                }
            }
            for (f, frac, len) in &ops {
                let h = &handles[*f];
                let off = h.file.size * frac / 1000;
                let b = reader.read(h, off, *len).await.unwrap();
                let want = h.file.size.saturating_sub(off).min(*len as u64);
                prop_assert_eq!(b.len() as u64, want, "read {}+{} of {}", off, len, h.file.size);
                for (i, v) in b.iter().enumerate() {
                    prop_assert_eq!(*v, byte_at(*f as u64, off + i as u64));
                }
                prop_assert!(reader.cached_bytes() + reader.inflight_bytes() <= budget.max(16 << 20), "cache over budget");
            }
            // Closing the files cancels their prefetches; nothing is left in flight.
            drop(handles);
            for _ in 0..2000 {
                if reader.inflight_blocks() == 0 && reader.permits_held_bytes() == 0 { break; }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            prop_assert_eq!(reader.inflight_blocks(), 0);
            prop_assert_eq!(reader.inflight_bytes(), 0);
            prop_assert_eq!(reader.permits_held_bytes(), 0);
            prop_assert!(reader.cached_bytes() <= budget.max(16 << 20));
            Ok(())
        })?;
    }

    /// The kernel's readahead sends a sequential reader's requests concurrently and out of
    /// order; the prefetcher must take them in any order.
    #[test]
    fn concurrent_out_of_order_sequential_reads_return_exact_bytes(
        size in (1u64 << 20)..(96 << 20),
        batch in 2usize..8,
        read_kib in prop::sample::select(vec![128u32, 256, 1024]),
        reverse in any::<bool>(),
    ) {
        let rt = runtime();
        let api = FakeApi::new(vec![size], std::time::Duration::from_micros(300));
        let reader = Reader::new(api.clone(), ReadOptions { cache_bytes: 64 << 20, ..ReadOptions::default() });
        let h = handle(0, size);
        let len = read_kib << 10;
        rt.block_on(async {
            let mut off = 0u64;
            while off < size {
                let mut offs: Vec<u64> = (0..batch as u64).map(|i| off + i * len as u64).filter(|o| *o < size).collect();
                if reverse {
                    offs.reverse();
                } else {
                    offs.rotate_left(1);
                }
                let got = futures::future::join_all(offs.iter().map(|o| reader.read(&h, *o, len))).await;
                for (o, b) in offs.iter().zip(got) {
                    let b = b.unwrap();
                    prop_assert_eq!(b.len() as u64, (size - o).min(len as u64));
                    prop_assert!(b.iter().enumerate().all(|(i, v)| *v == byte_at(0, o + i as u64)), "bytes at {}", o);
                }
                off += batch as u64 * len as u64;
            }
            Ok(())
        })?;
        prop_assert!(api.bytes.load(Ordering::Relaxed) <= size + (128 << 20), "no runaway prefetch");
    }

    #[test]
    fn a_small_random_read_fetches_at_most_two_blocks(size in (4u64 << 20)..(64 << 20), frac in 0u64..1000, len in 1u32..4096) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = FakeApi::new(vec![size], std::time::Duration::ZERO);
        let reader = Reader::new(api.clone(), ReadOptions::default());
        let h = handle(0, size);
        let off = size * frac / 1000;
        rt.block_on(reader.read(&h, off, len)).unwrap();
        prop_assert!(api.bytes.load(Ordering::Relaxed) <= 2 * BLOCK_SIZE);
        prop_assert!(api.requests.load(Ordering::Relaxed) <= 2);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_json(v in arb_json()) {
        let _ = Page::from_body(v.clone());
        let _ = Entity::parse(&v);
        let _ = FileInfo::parse(&v);
        let _ = serde_json::from_value::<ContentMeta>(v.clone());
        let _ = serde_json::from_value::<bsmount::api::model::Envelope>(v.clone());
        let _ = bsmount::api::client::status_error(reqwest::StatusCode::BAD_GATEWAY, v.to_string().as_bytes());
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&b) {
            let _ = Page::from_body(v.clone());
        }
        let _ = bsmount::api::client::status_error(reqwest::StatusCode::FORBIDDEN, &b);
        let _ = bsmount::api::model::parse_date(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn display_names_are_unique_legal_and_stable(raw in prop::collection::vec(("[0-9]{1,6}", any::<String>()), 1..30)) {
        let mut seen_ids = HashSet::new();
        let entries: Vec<(&str, &str)> = raw.iter().filter(|(id, _)| seen_ids.insert(id.clone())).map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let names1 = names::disambiguate(&entries, &HashSet::new());
        let uniq: HashSet<&String> = names1.iter().collect();
        prop_assert_eq!(uniq.len(), names1.len());
        for n in &names1 {
            prop_assert!(!n.is_empty() && n.len() <= 255 && !n.contains('/') && !n.contains('\0') && n != "." && n != "..", "{:?}", n);
        }
        // Order of the listing does not change the names.
        let mut rev = entries.clone();
        rev.reverse();
        let mut names2 = names::disambiguate(&rev, &HashSet::new());
        names2.reverse();
        prop_assert_eq!(names1, names2);
    }
}

/// Arbitrary JSON, biased towards BaseSpace-like keys so parsers get past the first check.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Id".to_string()),
        Just("Name".to_string()),
        Just("Items".to_string()),
        Just("Response".to_string()),
        Just("Paging".to_string()),
        Just("TotalCount".to_string()),
        Just("DisplayedCount".to_string()),
        Just("Size".to_string()),
        Just("Path".to_string()),
        Just("HrefContent".to_string()),
        Just("ResponseStatus".to_string()),
        Just("DateCreated".to_string()),
        "[A-Za-z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn a_plain_md5_etag_is_verified_on_sequential_reads() {
    use md5::Digest;
    let size = 5u64 << 20; // several parts and reads
    let content: Vec<u8> = (0..size).map(|o| byte_at(0, o)).collect();
    let good = hex::encode(md5::Md5::digest(&content));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (etag, ok) in [
        (good.clone(), true),
        ("0123456789abcdef0123456789abcdef".to_string(), false),
    ] {
        let api = FakeApi::new(vec![size], std::time::Duration::ZERO);
        let reader = Reader::new(api, ReadOptions::default());
        let h = Handle::new(RemoteFile {
            id: "0".into(),
            size,
            version: etag,
            has_etag: true,
        });
        let result = rt.block_on(async {
            // Reads issued together complete in any order, as the kernel's readahead does.
            let futs = (0..size.div_ceil(256 << 10)).map(|i| reader.read(&h, i * (256 << 10), 256 << 10));
            futures::future::join_all(futs)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        });
        assert_eq!(result.is_ok(), ok, "{result:?}");
        if !ok {
            assert!(matches!(result.unwrap_err(), bsmount::read::ReadError::Corrupt { .. }));
            assert_eq!(reader.cached_bytes(), 0, "a corrupt file's blocks are dropped");
        }
    }
}

#[test]
fn a_seek_cancels_prefetch_for_the_old_position_and_leaves_nothing_behind() {
    // Each GET takes 300 ms: prefetches are still running when the reader jumps away.
    let size = 512u64 << 20;
    let api = FakeApi::new(vec![size], std::time::Duration::from_millis(300));
    let reader = Reader::new(api.clone(), ReadOptions::default());
    let rt = runtime();
    rt.block_on(async {
        let h = handle(0, size);
        // Sequential reads grow the window: 4, 8, 16, 32 blocks ahead.
        for i in 0..5u64 {
            reader.read(&h, i << 20, 1 << 20).await.unwrap();
        }
        let started = reader.inflight_blocks();
        assert!(started >= 24, "prefetch running: {started} blocks");
        // Jump to the end of the file: the old window is useless.
        let far = size - (4 << 20);
        let b = reader.read(&h, far, 4096).await.unwrap();
        assert!(b.iter().enumerate().all(|(i, v)| *v == byte_at(0, far + i as u64)));
        assert!(reader.stats.prefetch_cancelled.load(Ordering::Relaxed) >= 4);
        // Cancelled parts leave the in-flight map and give back their memory at once; the
        // bytes fetched are those of the reads plus at most the parts that had finished.
        // (Uncancelled, the parts would run for another 300 ms.)
        let t0 = std::time::Instant::now();
        while reader.inflight_blocks() > 0 && t0.elapsed() < std::time::Duration::from_millis(100) {
            tokio::task::yield_now().await;
        }
        assert_eq!(reader.inflight_blocks(), 0, "cancelled parts deregistered");
        assert_eq!(reader.permits_held_bytes(), 0);
        assert_eq!(reader.inflight_bytes(), 0);
        let fetched = api.bytes.load(Ordering::Relaxed);
        assert!(
            fetched < (started as u64) << 20,
            "{fetched} bytes fetched despite the seek"
        );
        // A block of a cancelled part is fetched again when wanted, correctly.
        let b = reader.read(&h, 20 << 20, 1 << 20).await.unwrap();
        assert!(b
            .iter()
            .enumerate()
            .all(|(i, v)| *v == byte_at(0, (20 << 20) + i as u64)));
    });
}

#[test]
fn closing_a_file_cancels_its_prefetch_but_not_another_readers_fetch() {
    let size = 256u64 << 20;
    let api = FakeApi::new(vec![size], std::time::Duration::from_millis(200));
    let reader = Reader::new(api.clone(), ReadOptions::default());
    let rt = runtime();
    rt.block_on(async {
        let a = handle(0, size);
        for i in 0..4u64 {
            reader.read(&a, i << 20, 1 << 20).await.unwrap();
        }
        // Another reader of the same file wants a block that a's newest prefetch part
        // (blocks 11-19, just started) is fetching, and joins it.
        let b = handle(0, size);
        let r = reader.clone();
        let other = tokio::spawn(async move { r.read(&b, 15 << 20, 1 << 20).await });
        tokio::task::yield_now().await;
        drop(a);
        let got = other.await.unwrap().expect("the other reader gets its bytes");
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, v)| *v == byte_at(0, (15 << 20) + i as u64)));
        assert!(reader.stats.prefetch_cancelled.load(Ordering::Relaxed) >= 1);
        assert_eq!(reader.inflight_blocks(), 0);
        assert_eq!(reader.permits_held_bytes(), 0);
    });
}

#[test]
fn many_sequential_readers_share_the_cache_without_fetching_twice() {
    // 12 files of 24 MiB read at once through a 48 MiB cache: what one reader prefetches must
    // not be evicted for another before it is read.
    let (files, size) = (12usize, 24u64 << 20);
    let api = FakeApi::new(vec![size; files], std::time::Duration::from_millis(2));
    let reader = Reader::new(
        api.clone(),
        ReadOptions {
            cache_bytes: 48 << 20,
            ..ReadOptions::default()
        },
    );
    let rt = runtime();
    rt.block_on(async {
        let tasks: Vec<_> = (0..files as u64)
            .map(|id| {
                let reader = reader.clone();
                tokio::spawn(async move {
                    let h = handle(id, size);
                    let mut off = 0;
                    while off < size {
                        let b = reader.read(&h, off, 1 << 20).await.unwrap();
                        assert!(b.iter().enumerate().all(|(i, v)| *v == byte_at(id, off + i as u64)));
                        off += b.len() as u64;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let fetched = api.bytes.load(Ordering::Relaxed);
    let total = files as u64 * size;
    assert!(
        fetched <= total + total / 10,
        "fetched {} MiB to read {} MiB",
        fetched >> 20,
        total >> 20
    );
}
