//! Recycled block buffers.
//!
//! A sequential read at a few hundred MB/s turns over hundreds of 1 MiB blocks a second.
//! Allocated fresh, every block is a new mapping the kernel must fault in and zero page by
//! page (that was most of the mount's CPU time in a profile of a cold `cat`). Blocks evicted
//! from the cache come back here instead and the next fetch fills them again.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// The one buffer size pooled (a block); other sizes are plain allocations.
    size: usize,
    /// Free buffers kept at most: memory outside the cache budget, so kept small.
    keep: usize,
}

impl BufPool {
    pub fn new(size: usize, keep: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::with_capacity(keep)),
            size,
            keep,
        })
    }

    /// An empty buffer with room for `want` bytes: a recycled one for a whole block, an
    /// exact allocation otherwise (a short last block must not pin a whole block's memory).
    pub fn take(&self, want: usize) -> Vec<u8> {
        if want == self.size {
            if let Some(mut v) = self.free.lock().pop() {
                v.clear();
                return v;
            }
        }
        Vec::with_capacity(want)
    }

    fn give(&self, v: Vec<u8>) {
        if v.capacity() == self.size {
            let mut free = self.free.lock();
            if free.len() < self.keep {
                free.push(v);
            }
        }
    }

    /// Wraps a filled buffer; a block-sized one returns here when the last reference to
    /// its bytes is dropped.
    pub fn freeze(self: &Arc<Self>, v: Vec<u8>) -> Bytes {
        if v.capacity() == self.size {
            Bytes::from_owner(Pooled {
                buf: v,
                pool: self.clone(),
            })
        } else {
            Bytes::from(v)
        }
    }

    /// Free buffers held now.
    #[cfg(test)]
    fn free_buffers(&self) -> usize {
        self.free.lock().len()
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_buffers_come_back_and_others_do_not() {
        let pool = BufPool::new(16, 2);
        let mut a = pool.take(16);
        a.extend_from_slice(&[7; 16]);
        let ptr = a.as_ptr();
        let b = pool.freeze(a);
        let half = b.slice(4..8);
        drop(b);
        assert_eq!(pool.free_buffers(), 0, "a slice still holds it");
        assert_eq!(&half[..], &[7; 4]);
        drop(half);
        assert_eq!(pool.free_buffers(), 1);
        let again = pool.take(16);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0), "recycled and emptied");
        drop(pool.freeze(pool.take(5)));
        assert_eq!(pool.free_buffers(), 0, "short buffers are not pooled");
        for _ in 0..5 {
            drop(pool.freeze(Vec::with_capacity(16)));
        }
        assert_eq!(pool.free_buffers(), 2, "at most `keep` kept");
    }
}
