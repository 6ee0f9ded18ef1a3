//! The passage cache: search results' rows kept in memory, so that answering a query does not
//! read SQLite for the passages that queries keep returning.
//!
//! Reading a query's ten hits back from SQLite costs more CPU than the approximate search that
//! found them (a hand-off to a connection thread, a statement run and rows decoded), and search
//! results are skewed: the same popular passages come back again and again. The cache holds the
//! rows without their vectors (the vectors are in the in-memory indexes), bounded by an
//! estimate of their size in bytes, and evicts with CLOCK-Pro (quick_cache), which keeps the
//! often-read passages through scans of once-read ones.
//!
//! # Why it is never stale
//! Passage ids come from `AUTOINCREMENT` and are never reused, and no statement updates a
//! passage row in place: replacing a document inserts new passages under new ids. So the row
//! cached for an id is the row stored under it for as long as it exists. Removals drop their
//! ids from the cache to free the memory; a read that raced with a removal may put a removed
//! row back, which costs only its memory until eviction: searches started after the removal
//! never return its id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::rows::{CollectionId, PassageId, PassageRecord};

/// Bytes counted for a cached row on top of its strings: the entry, the `Arc` and the
/// fixed-size fields, rounded up.
const ENTRY_OVERHEAD: u64 = 96;

/// A cached passage row: the record without its vector, and the collection it belongs to.
#[derive(Debug)]
struct Cached {
    collection: CollectionId,
    record: PassageRecord,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<PassageId, Arc<Cached>> for ByBytes {
    fn weight(&self, _id: &PassageId, row: &Arc<Cached>) -> u64 {
        let text = row.record.text.as_ref().map_or(0, |t| t.capacity());
        (row.record.doc_id.capacity() + text) as u64 + ENTRY_OVERHEAD
    }
}

/// Cache hits and misses since start, and the cache's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassageCacheStats {
    /// Rows found in the cache.
    pub hits: u64,
    /// Rows looked for in the cache and read from the database instead.
    pub misses: u64,
    /// Bytes the cached rows are estimated to take.
    pub bytes: u64,
}

/// Passage rows by id, bounded in bytes. A capacity of 0 disables it.
pub(crate) struct PassageCache {
    /// `None` when disabled.
    rows: Option<Cache<PassageId, Arc<Cached>, ByBytes>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PassageCache {
    /// A cache holding up to `capacity_bytes` of rows (0: none).
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        // The estimate only sizes the hash tables up front; ~200 bytes is a short passage.
        let estimated_items = usize::try_from(capacity_bytes / 200).unwrap_or(usize::MAX);
        PassageCache {
            rows: (capacity_bytes > 0)
                .then(|| Cache::with_weighter(estimated_items.max(16), capacity_bytes, ByBytes)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Looks `ids` up. Returns, in the order of `ids`, each id's row if cached (`None` where it
    /// is not, or where it belongs to another collection), and the ids to read from the
    /// database.
    pub(crate) fn lookup(
        &self,
        collection: CollectionId,
        ids: &[PassageId],
    ) -> (Vec<Option<PassageRecord>>, Vec<PassageId>) {
        let Some(rows) = &self.rows else {
            return (vec![None; ids.len()], ids.to_vec());
        };
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match rows.get(&id) {
                Some(c) if c.collection == collection => found.push(Some(c.record.clone())),
                // Another collection's passage is not in this one: the database would not
                // return it either.
                Some(_) => found.push(None),
                None => {
                    found.push(None);
                    missing.push(id);
                }
            }
        }
        self.hits
            .fetch_add((ids.len() - missing.len()) as u64, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        (found, missing)
    }

    /// Caches rows just read from `collection` (their vectors are not kept).
    pub(crate) fn insert(&self, collection: CollectionId, records: &[PassageRecord]) {
        let Some(rows) = &self.rows else { return };
        for r in records {
            // Field by field: cloning the record whole would copy its vector only to drop it.
            let record = PassageRecord {
                id: r.id,
                doc_id: r.doc_id.clone(),
                index: r.index,
                start: r.start,
                end: r.end,
                text: r.text.clone(),
                vector: None,
            };
            rows.insert(r.id, Arc::new(Cached { collection, record }));
        }
    }

    /// Forgets removed passages.
    pub(crate) fn remove(&self, ids: impl IntoIterator<Item = PassageId>) {
        if let Some(rows) = &self.rows {
            for id in ids {
                rows.remove(&id);
            }
        }
    }

    /// Forgets every passage of a deleted collection.
    pub(crate) fn remove_collection(&self, collection: CollectionId) {
        if let Some(rows) = &self.rows {
            rows.retain(|_, c| c.collection != collection);
        }
    }

    /// Hits, misses and size.
    pub(crate) fn stats(&self) -> PassageCacheStats {
        PassageCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.rows.as_ref().map_or(0, |r| r.weight()),
        }
    }
}

impl std::fmt::Debug for PassageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassageCache")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: PassageId, text: &str) -> PassageRecord {
        PassageRecord {
            id,
            doc_id: format!("doc-{id}"),
            index: 0,
            start: 0,
            end: text.chars().count(),
            text: Some(text.to_owned()),
            vector: Some(vec![1.0; 4]),
        }
    }

    #[test]
    fn returns_cached_rows_in_order_and_names_the_missing_ones() {
        let cache = PassageCache::new(1 << 20);
        let c = CollectionId(1);
        cache.insert(c, &[record(3, "three"), record(1, "one")]);
        let (found, missing) = cache.lookup(c, &[1, 2, 3]);
        assert_eq!(missing, vec![2]);
        assert_eq!(found[0].as_ref().unwrap().text.as_deref(), Some("one"));
        assert!(found[1].is_none());
        assert_eq!(found[2].as_ref().unwrap().text.as_deref(), Some("three"));
        // Vectors are not kept: the indexes hold them.
        assert!(found[0].as_ref().unwrap().vector.is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 1));
    }

    #[test]
    fn another_collections_passage_is_neither_returned_nor_read() {
        let cache = PassageCache::new(1 << 20);
        cache.insert(CollectionId(1), &[record(5, "five")]);
        let (found, missing) = cache.lookup(CollectionId(2), &[5]);
        assert!(found[0].is_none());
        assert!(missing.is_empty());
    }

    #[test]
    fn removals_and_deleted_collections_are_forgotten() {
        let cache = PassageCache::new(1 << 20);
        cache.insert(CollectionId(1), &[record(1, "a"), record(2, "b")]);
        cache.insert(CollectionId(2), &[record(3, "c")]);
        cache.remove([1]);
        cache.remove_collection(CollectionId(2));
        let (_, missing) = cache.lookup(CollectionId(1), &[1, 2]);
        assert_eq!(missing, vec![1]);
        let (_, missing) = cache.lookup(CollectionId(2), &[3]);
        assert_eq!(missing, vec![3]);
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = PassageCache::new(64 * 1024);
        let text = "x".repeat(1000);
        for id in 0..1000 {
            cache.insert(CollectionId(1), &[record(id, &text)]);
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.bytes > 0);
    }

    #[test]
    fn a_zero_capacity_cache_holds_nothing() {
        let cache = PassageCache::new(0);
        cache.insert(CollectionId(1), &[record(1, "a")]);
        let (found, missing) = cache.lookup(CollectionId(1), &[1]);
        assert!(found[0].is_none());
        assert_eq!(missing, vec![1]);
    }
}
