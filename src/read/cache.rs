//! The block cache levels, keyed by a file version and block index.
//!
//! A read looks in memory ([`MemoryCache`], whose byte budget is shared with fetches in
//! flight), then in each [`CacheLevel`] below it in order (the local disk, then a
//! directory shared by many hosts), then asks the content source. Whatever a lower level
//! or the source gives is written to every level above it on the way back, off the read
//! path; no level ever calls another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::pool::BufPool;

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
pub struct MemoryCache {
    lru: Mutex<(lru::LruCache<BlockKey, Bytes>, u64)>,
    pub budget: u64,
    inflight: AtomicU64,
}

impl MemoryCache {
    pub fn new(budget: u64) -> MemoryCache {
        MemoryCache {
            lru: Mutex::new((lru::LruCache::unbounded(), 0)),
            budget,
            inflight: AtomicU64::new(0),
        }
    }

    pub fn get(&self, k: &BlockKey) -> Option<Bytes> {
        self.lru.lock().0.get(k).cloned()
    }

    pub fn put(&self, k: BlockKey, v: Bytes) {
        let mut g = self.lru.lock();
        let (lru, bytes) = &mut *g;
        if let Some(old) = lru.put(k, v.clone()) {
            *bytes -= old.len() as u64;
        }
        *bytes += v.len() as u64;
        Self::evict(
            lru,
            bytes,
            self.budget.saturating_sub(self.inflight.load(Ordering::Relaxed)),
        );
    }

    fn evict(lru: &mut lru::LruCache<BlockKey, Bytes>, bytes: &mut u64, limit: u64) {
        while *bytes > limit {
            match lru.pop_lru() {
                Some((_, b)) => *bytes -= b.len() as u64,
                None => break,
            }
        }
    }

    /// Makes room for a fetch of `n` bytes.
    pub fn reserve(&self, n: u64) {
        let inflight = self.inflight.fetch_add(n, Ordering::Relaxed) + n;
        let mut g = self.lru.lock();
        let (lru, bytes) = &mut *g;
        Self::evict(lru, bytes, self.budget.saturating_sub(inflight));
    }

    /// Gives back what [`MemoryCache::reserve`] took.
    pub fn release(&self, n: u64) {
        self.inflight.fetch_sub(n, Ordering::Relaxed);
    }

    /// Moves blocks to the cold end: first to go when room is needed.
    pub fn demote(&self, keys: impl Iterator<Item = BlockKey>) {
        let mut g = self.lru.lock();
        for k in keys {
            g.0.demote(&k);
        }
    }

    /// Drops every block of an object of `blocks` blocks: by index, or by a scan of the
    /// cache when that is shorter (it runs at every close of a verified file).
    pub fn purge(&self, object: &ObjectId, blocks: u64) {
        let mut g = self.lru.lock();
        let (lru, bytes) = &mut *g;
        let keys: Vec<BlockKey> = match blocks <= lru.len() as u64 {
            true => (0..blocks)
                .map(|index| BlockKey {
                    object: object.clone(),
                    index,
                })
                .collect(),
            false => lru
                .iter()
                .filter(|(k, _)| &k.object == object)
                .map(|(k, _)| k.clone())
                .collect(),
        };
        for k in keys {
            if let Some(b) = lru.pop(&k) {
                *bytes -= b.len() as u64;
            }
        }
    }

    /// Bytes held by cached blocks.
    pub fn bytes(&self) -> u64 {
        self.lru.lock().1
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
