use std::sync::Arc;

use super::*;

/// BM25 as tantivy defines it (k1 = 1.2, b = 0.75, Lucene's idf), computed by hand.
fn bm25(tf: f32, dl: f32, avgdl: f32, n_docs: f32, doc_freq: f32) -> f32 {
    let idf = (1.0 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5)).ln();
    idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
}

fn toy(dir: &Path, language: &str) -> LexicalIndex {
    let (index, opened) = LexicalIndex::open(dir, language).expect("open");
    assert_eq!(opened, Opened::Created);
    index
        .apply(
            &[],
            [
                (10, "apple banana apple"),
                (11, "banana cherry"),
                (12, "cherry date elderberry fig"),
            ],
        )
        .expect("apply");
    index
}

#[test]
fn bm25_scores_match_the_hand_computed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let index = toy(&tmp.path().join("lex"), "none");
    // Lengths 3, 2 and 4: the average is 3.
    let hits = index.search("apple", 10, None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, 10);
    assert!(
        (hits[0].1 - bm25(2.0, 3.0, 3.0, 3.0, 1.0)).abs() < 1e-4,
        "{hits:?}"
    );

    let hits = index.search("banana cherry", 10, None).unwrap();
    let expected_11 = 2.0 * bm25(1.0, 2.0, 3.0, 3.0, 2.0);
    let expected_10 = bm25(1.0, 3.0, 3.0, 3.0, 2.0);
    let expected_12 = bm25(1.0, 4.0, 3.0, 3.0, 2.0);
    assert_eq!(
        hits.iter().map(|h| h.0).collect::<Vec<_>>(),
        [11, 10, 12],
        "{hits:?}"
    );
    for (hit, want) in hits.iter().zip([expected_11, expected_10, expected_12]) {
        assert!((hit.1 - want).abs() < 1e-4, "{hit:?} against {want}");
    }
    // A term no passage has, and a query with no terms at all.
    assert!(index.search("grape", 10, None).unwrap().is_empty());
    assert!(index.search("  ,; ", 10, None).unwrap().is_empty());
    // k bounds the answer.
    assert_eq!(index.search("banana cherry", 2, None).unwrap().len(), 2);
}

#[test]
fn identifiers_are_found_by_their_parts_and_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _) = LexicalIndex::open(&tmp.path().join("lex"), "en").unwrap();
    index
        .apply(
            &[],
            [
                (1, "Use HashMap::entry to insert or update in place."),
                (2, "A map from keys to values; see the hash function."),
                (3, "Functions keep snake_case_names by convention."),
                (4, "The entry point of the program."),
            ],
        )
        .unwrap();
    let best = |q: &str| index.search(q, 10, None).unwrap()[0].0;
    assert_eq!(best("HashMap::entry"), 1);
    assert_eq!(best("hashmap"), 1);
    assert_eq!(best("HashMap entry"), 1);
    assert_eq!(best("snake_case_names"), 3);
    assert_eq!(best("case names"), 3);
    let found = |q: &str| -> Vec<u64> {
        let mut ids: Vec<u64> = index
            .search(q, 10, None)
            .unwrap()
            .iter()
            .map(|h| h.0)
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(found("entry"), [1, 4]);
    assert_eq!(found("names"), [3]);
}

#[test]
fn removals_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let index = toy(&tmp.path().join("lex"), "none");
    let allow: Arc<dyn Fn(u64) -> bool + Send + Sync> = Arc::new(|id| id != 11);
    let hits = index.search("banana cherry", 10, Some(allow)).unwrap();
    assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [10, 12]);

    index.apply(&[11], [(13, "banana split")]).unwrap();
    let mut ids = index.passage_ids().unwrap();
    ids.sort_unstable();
    assert_eq!(ids, [10, 12, 13]);
    let hits: Vec<u64> = index
        .search("banana", 10, None)
        .unwrap()
        .iter()
        .map(|h| h.0)
        .collect();
    assert!(hits.contains(&13) && hits.contains(&10) && !hits.contains(&11));
}

#[test]
fn reopening_keeps_the_index_and_a_damaged_or_foreign_one_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lex");
    let index = toy(&dir, "none");
    index.close();
    drop(index);

    let (index, opened) = LexicalIndex::open(&dir, "none").unwrap();
    assert_eq!(opened, Opened::Existing);
    assert_eq!(index.len(), 3);
    index.close();
    drop(index);

    // Another language means other terms: the index is rebuilt, not misread.
    let (index, opened) = LexicalIndex::open(&dir, "en").unwrap();
    assert!(
        matches!(opened, Opened::Replaced(ref r) if r.contains("language")),
        "{opened:?}"
    );
    assert!(index.is_empty());
    index.apply(&[], [(1, "some text")]).unwrap();
    index.close();
    drop(index);

    std::fs::write(dir.join("meta.json"), b"{ torn").unwrap();
    let (index, opened) = LexicalIndex::open(&dir, "en").unwrap();
    assert!(matches!(opened, Opened::Replaced(_)), "{opened:?}");
    assert!(index.is_empty());

    assert!(matches!(
        LexicalIndex::open(&tmp.path().join("other"), "klingon"),
        Err(LexicalError::UnknownLanguage(_))
    ));
}
