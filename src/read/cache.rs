//! The block cache levels, keyed by a file version and block index.
//!
//! A read looks in memory ([`MemoryCache`], whose byte budget is shared with fetches in
//! flight), then in each [`CacheLevel`] below it in order (the local disk, then a
//! directory shared by many hosts), then asks the content source. Whatever a lower level
//! or the source gives is written to every level above it on the way back, off the read
//! path; no level ever calls another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::pool::BufPool;
use super::verify::PartDigest;

/// One version of one file: what cached bytes belong to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub file: Arc<str>,
    pub version: Arc<str>,
}

impl ObjectId {
    /// The listed version of `file`.
    pub fn of(file: &crate::tree::RemoteFile) -> ObjectId {
        ObjectId {
            file: Arc::from(file.id.as_str()),
            version: Arc::from(file.version.as_str()),
        }
    }
}

/// A block of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub object: ObjectId,
    pub index: u64,
}

/// A cache level below memory.
pub trait CacheLevel: Send + Sync + 'static {
    /// For logs and status.
    fn name(&self) -> &'static str;
    /// Whether the level holds the block, by its index (cheap; the block may still fail
    /// its checks when loaded). Decides which level a run of blocks is read from.
    fn contains(&self, key: &BlockKey) -> bool;
    /// Whether [`CacheLevel::contains`] knows (an index of its own), or only says "maybe"
    /// (a directory other hosts change: the block is looked for by reading it).
    fn exact(&self) -> bool {
        true
    }
    /// The block's `len` bytes, checked, or `None` (missing or damaged: the block is then
    /// fetched from further down). Buffers come from `pool`.
    fn get<'a>(&'a self, key: &'a BlockKey, len: usize, pool: &'a Arc<BufPool>) -> BoxFuture<'a, Option<Bytes>>;
    /// Several blocks at once (a part), all or nothing: `lens[i]` bytes for `keys[i]`.
    /// Levels with blocking I/O override it to pay one hand-off per part, not per block.
    fn get_many<'a>(
        &'a self,
        keys: &'a [BlockKey],
        lens: Vec<usize>,
        pool: &'a Arc<BufPool>,
    ) -> BoxFuture<'a, Option<Vec<Bytes>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for (k, len) in keys.iter().zip(lens) {
                out.push(self.get(k, len, pool).await?);
            }
            Some(out)
        })
    }
    /// Keeps a block; returns at once (the write happens in the background, or not at all
    /// when the level falls behind).
    fn put(&self, key: &BlockKey, data: Bytes);
    /// Drops a block (its bytes turned out wrong).
    fn discard(&self, key: &BlockKey);
}

/// The memory level: an LRU of blocks under a byte budget.
///
/// The budget covers cached blocks *and* parts being fetched: `inflight` counts the bytes
/// reserved by fetches, and the cache evicts so that `cached + inflight <= budget`.
///
/// Beside its blocks it keeps the digests of whole parts hashed from exactly these blocks as
/// they were fetched ahead of their reader ([`MemoryCache::put_part`]): an entry goes as soon
/// as any of its blocks leaves, so it never keeps a block alive beyond the cache, and the
/// blocks it names are the ones cached under its keys for as long as it exists.
pub struct MemoryCache {
    state: Mutex<Blocks>,
    pub budget: u64,
    inflight: AtomicU64,
}

struct Blocks {
    lru: lru::LruCache<BlockKey, Bytes>,
    bytes: u64,
    /// By the key of the part's first block (parts start at multiples of
    /// [`super::PART_BLOCKS`]).
    digests: HashMap<BlockKey, PartDigest>,
}

impl Blocks {
    /// A block left the cache: so does the digest of its part.
    fn gone(&mut self, k: BlockKey) {
        if !self.digests.is_empty() {
            let index = k.index - k.index % super::PART_BLOCKS;
            self.digests.remove(&BlockKey {
                object: k.object,
                index,
            });
        }
    }

    fn evict(&mut self, limit: u64) {
        while self.bytes > limit {
            match self.lru.pop_lru() {
                Some((k, b)) => {
                    self.bytes -= b.len() as u64;
                    self.gone(k);
                }
                None => break,
            }
        }
    }

    fn put(&mut self, k: BlockKey, v: Bytes) {
        self.bytes += v.len() as u64;
        if let Some(old) = self.lru.put(k.clone(), v) {
            self.bytes -= old.len() as u64;
            self.gone(k);
        }
    }
}

impl MemoryCache {
    pub fn new(budget: u64) -> MemoryCache {
        MemoryCache {
            state: Mutex::new(Blocks {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
                digests: HashMap::new(),
            }),
            budget,
            inflight: AtomicU64::new(0),
        }
    }

    fn limit(&self) -> u64 {
        self.budget.saturating_sub(self.inflight.load(Ordering::Relaxed))
    }

    pub fn get(&self, k: &BlockKey) -> Option<Bytes> {
        self.state.lock().lru.get(k).cloned()
    }

    pub fn put(&self, k: BlockKey, v: Bytes) {
        let mut g = self.state.lock();
        g.put(k, v);
        g.evict(self.limit());
    }

    /// The blocks of one part, and the digest hashed from exactly these blocks if there is
    /// one: kept while every block is.
    pub fn put_part(&self, keys: &[BlockKey], blocks: &[Bytes], digest: Option<PartDigest>) {
        let mut g = self.state.lock();
        for (k, b) in keys.iter().zip(blocks) {
            g.put(k.clone(), b.clone());
        }
        if let (Some(d), Some(k)) = (digest, keys.first()) {
            g.digests.insert(k.clone(), d);
        }
        g.evict(self.limit());
    }

    /// The digest of the part starting at block `first`, taken out, if one is kept.
    pub fn take_digest(&self, first: &BlockKey) -> Option<PartDigest> {
        let mut g = self.state.lock();
        match g.digests.is_empty() {
            true => None,
            false => g.digests.remove(first),
        }
    }

    /// Makes room for a fetch of `n` bytes.
    pub fn reserve(&self, n: u64) {
        let inflight = self.inflight.fetch_add(n, Ordering::Relaxed) + n;
        self.state.lock().evict(self.budget.saturating_sub(inflight));
    }

    /// Gives back what [`MemoryCache::reserve`] took.
    pub fn release(&self, n: u64) {
        self.inflight.fetch_sub(n, Ordering::Relaxed);
    }

    /// Moves blocks to the cold end: first to go when room is needed.
    pub fn demote(&self, keys: impl Iterator<Item = BlockKey>) {
        let mut g = self.state.lock();
        for k in keys {
            g.lru.demote(&k);
        }
    }

    /// Drops every block of an object of `blocks` blocks: by index, or by a scan of the
    /// cache when that is shorter (it runs at every close of a verified file).
    pub fn purge(&self, object: &ObjectId, blocks: u64) {
        let mut g = self.state.lock();
        let keys: Vec<BlockKey> = match blocks <= g.lru.len() as u64 {
            true => (0..blocks)
                .map(|index| BlockKey {
                    object: object.clone(),
                    index,
                })
                .collect(),
            false => g
                .lru
                .iter()
                .filter(|(k, _)| &k.object == object)
                .map(|(k, _)| k.clone())
                .collect(),
        };
        for k in keys {
            if let Some(b) = g.lru.pop(&k) {
                g.bytes -= b.len() as u64;
                g.gone(k);
            }
        }
    }

    /// Part digests kept now.
    pub fn digests(&self) -> usize {
        self.state.lock().digests.len()
    }

    /// Bytes held by cached blocks.
    pub fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }

    /// Bytes reserved by fetches in progress.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f: &str, i: u64) -> BlockKey {
        BlockKey {
            object: ObjectId {
                file: f.into(),
                version: "v".into(),
            },
            index: i,
        }
    }

    #[test]
    fn memory_stays_within_budget_counting_fetches_in_flight() {
        let m = MemoryCache::new(4 << 10);
        for i in 0..8 {
            m.put(key("a", i), Bytes::from(vec![0u8; 1 << 10]));
        }
        assert_eq!(m.bytes(), 4 << 10);
        assert!(m.get(&key("a", 0)).is_none() && m.get(&key("a", 7)).is_some());
        m.reserve(2 << 10);
        assert_eq!(m.bytes(), 2 << 10);
        m.release(2 << 10);
        assert_eq!(m.inflight_bytes(), 0);
    }

    // A part's digest lives exactly as long as every one of its blocks is cached: it goes
    // with the first block evicted, replaced or purged, and is taken once.
    #[test]
    fn a_part_digest_goes_with_any_of_its_blocks() {
        let part = super::super::PART_BLOCKS;
        let blocks: Vec<Bytes> = (0..part).map(|_| Bytes::from(vec![0u8; 1 << 10])).collect();
        let keys: Vec<BlockKey> = (0..part).map(|i| key("a", part + i)).collect();
        let digest = || Some(crate::read::verify::hash_part(blocks.clone()));
        let m = MemoryCache::new(64 << 10);
        m.put_part(&keys, &blocks, digest());
        assert!(m.take_digest(&keys[0]).is_some());
        assert!(m.take_digest(&keys[0]).is_none(), "taken once");
        // Evicted: the cache fills with other blocks until the part's oldest goes.
        m.put_part(&keys, &blocks, digest());
        for i in 0..64 - part {
            m.put(key("b", i), Bytes::from(vec![0u8; 1 << 10]));
        }
        assert_eq!(m.digests(), 1, "all its blocks still cached");
        m.put(key("b", 64), Bytes::from(vec![0u8; 1 << 10]));
        assert!(m.get(&keys[0]).is_none());
        assert_eq!(m.digests(), 0, "evicted");
        // Replaced, purged.
        let m = MemoryCache::new(64 << 10);
        m.put_part(&keys, &blocks, digest());
        m.put(keys[3].clone(), Bytes::from(vec![1u8; 1 << 10]));
        assert_eq!(m.digests(), 0, "replaced");
        m.put_part(&keys, &blocks, digest());
        m.purge(&keys[0].object, 2 * part);
        assert_eq!(m.digests(), 0, "purged");
        // Another part's blocks going leaves it.
        m.put_part(&keys, &blocks, digest());
        m.put(key("a", 0), Bytes::from(vec![0u8; 1 << 10]));
        m.purge(&key("c", 0).object, 1);
        assert_eq!(m.digests(), 1);
    }

    #[test]
    fn purge_drops_one_object_only() {
        let m = MemoryCache::new(1 << 20);
        m.put(key("a", 0), Bytes::from_static(b"aa"));
        m.put(key("b", 0), Bytes::from_static(b"bb"));
        m.purge(&key("a", 0).object, 1);
        assert!(m.get(&key("a", 0)).is_none());
        assert_eq!(m.get(&key("b", 0)).as_deref(), Some(&b"bb"[..]));
        assert_eq!(m.bytes(), 2);
    }
}
