//! The blocks' rollups kept in memory, in two forms:
//! - each live block's rows merged across its minutes: small (about 0.3 MiB for an hour of the
//!   demo's traffic), kept while the block lives, and all that a window covering the whole block
//!   reads (a day's service map reads 24 of them);
//! - the per-minute rows of the blocks read most recently (about 13 MiB for that hour), within
//!   a byte budget: the least recently used are dropped and read from their files again when
//!   wanted.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::rollup::Rollup;

pub(crate) struct RollupCache {
    /// Bytes the per-minute forms may take (estimated; the block read last is kept whatever
    /// its size).
    budget: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    minutes: HashMap<String, Entry>,
    /// Per block: its rows merged across minutes, and the minutes they span.
    whole: HashMap<String, Whole>,
    /// Bytes of the per-minute forms held.
    bytes: u64,
    /// Counts reads: an entry remembers the count at its last read.
    clock: u64,
}

struct Entry {
    rollup: Arc<Rollup>,
    bytes: u64,
    used: u64,
}

/// A block's rows merged across minutes (dated at the first), and its first and last minute.
#[derive(Clone)]
pub(crate) struct Whole {
    pub rollup: Arc<Rollup>,
    pub first: i64,
    pub last: i64,
}

impl RollupCache {
    pub fn new(budget: u64) -> Self {
        Self { budget, inner: Mutex::new(Inner::default()) }
    }

    /// A block's per-minute rows, if held (and marked as just used).
    pub fn minutes(&self, id: &str) -> Option<Arc<Rollup>> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let entry = inner.minutes.get_mut(id)?;
        entry.used = clock;
        Some(Arc::clone(&entry.rollup))
    }

    pub fn whole(&self, id: &str) -> Option<Whole> {
        self.inner.lock().whole.get(id).cloned()
    }

    /// Holds a block's per-minute rows, dropping the least recently used beyond the budget
    /// (never the one just added: a block read is held at least until the next one is).
    pub fn insert_minutes(&self, id: &str, rollup: Arc<Rollup>) {
        let bytes = rollup.heap_bytes() as u64;
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.minutes.insert(id.to_string(), Entry { rollup, bytes, used }) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.budget && inner.minutes.len() > 1 {
            let oldest = inner.minutes.iter().filter(|(_, e)| e.used != used).min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            let dropped = inner.minutes.remove(&oldest).expect("the entry just found");
            inner.bytes -= dropped.bytes;
        }
    }

    pub fn insert_whole(&self, id: &str, whole: Whole) {
        self.inner.lock().whole.insert(id.to_string(), whole);
    }

    /// Forgets a block (retired by compaction or retention).
    pub fn remove(&self, id: &str) {
        let mut inner = self.inner.lock();
        if let Some(dropped) = inner.minutes.remove(id) {
            inner.bytes -= dropped.bytes;
        }
        inner.whole.remove(id);
    }

    /// Estimated bytes of the per-minute forms held, and how many blocks they belong to.
    pub fn held(&self) -> (u64, usize) {
        let inner = self.inner.lock();
        (inner.bytes, inner.minutes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollup_of(rows: usize) -> Arc<Rollup> {
        let row = |minute| crate::rollup::RootMinute {
            minute_unix_nano: minute,
            service: "api".into(),
            operation: "GET /".into(),
            kind: "server".into(),
            spans: 1,
            errors: 0,
            duration_nanos: 1,
        };
        let mut rollup = Rollup::default();
        rollup.adoption.roots = (0..rows as i64).map(row).collect();
        Arc::new(rollup)
    }

    #[test]
    fn the_least_recently_read_blocks_are_dropped_beyond_the_budget() {
        let one = rollup_of(100).heap_bytes() as u64;
        let cache = RollupCache::new(2 * one + one / 2);
        cache.insert_minutes("a", rollup_of(100));
        cache.insert_minutes("b", rollup_of(100));
        assert!(cache.minutes("a").is_some());
        cache.insert_minutes("c", rollup_of(100));
        assert!(cache.minutes("b").is_none(), "b was read least recently");
        assert!(cache.minutes("a").is_some() && cache.minutes("c").is_some());
        assert_eq!(cache.held(), (2 * one, 2));
        // A block larger than the budget is still held until the next one comes.
        cache.insert_minutes("d", rollup_of(1_000));
        assert_eq!(cache.held().1, 1);
        assert!(cache.minutes("d").is_some());
        cache.remove("d");
        assert_eq!(cache.held(), (0, 0));
    }
}
