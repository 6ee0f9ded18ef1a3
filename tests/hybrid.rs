//! Lexical and hybrid search through the HTTP API: the modes, their plans and legs, filters on
//! both legs, and the lexical index across restarts and behind the store.

mod common;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vicinity::api::ApiSettings;
use vicinity::store::{NewDocument, NewPassage};

use common::reference::Reference;
use common::{App, service_settings, tiny_worker};

const PUT: Method = Method::PUT;
const POST: Method = Method::POST;

#[track_caller]
fn assert_ok(got: &(StatusCode, Value)) {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

fn doc_ids(response: &Value) -> Vec<String> {
    response["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect()
}

fn corpus() -> Value {
    json!({"documents": [
        {"id": "r1", "text": "Use HashMap::entry to insert a value or update it in place.", "metadata": {"lang": "rust"}},
        {"id": "r2", "text": "A vector grows as elements are pushed onto its end.", "metadata": {"lang": "rust"}},
        {"id": "r3", "text": "Paths are joined with PathBuf::push, one component at a time.", "metadata": {"lang": "rust"}},
        {"id": "p1", "text": "The os.path.join function joins path components.", "metadata": {"lang": "python"}},
        {"id": "p2", "text": "Functions keep snake_case_names by convention.", "metadata": {"lang": "python"}},
        {"id": "p3", "text": "Dictionaries map keys to values; see dict.setdefault for an entry.", "metadata": {"lang": "python"}},
    ]})
}

async fn query(app: &App, body: Value) -> Value {
    let r = app.send(POST, "/collections/docs/query", Some(body)).await;
    assert_ok(&r);
    r.1
}

/// Creates the text collection `docs` with default settings and stores [`corpus`] in it.
async fn create_corpus(app: &App) {
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    assert_ok(
        &app.send(POST, "/collections/docs/documents", Some(corpus()))
            .await,
    );
}

#[tokio::test]
async fn lexical_and_hybrid_queries_find_exact_terms() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let r = app.send(PUT, "/collections/docs", None).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_eq!(r.1["lexical"]["language"], "en");
    assert_eq!(r.1["lexical"]["status"], "ready");
    assert_ok(
        &app.send(POST, "/collections/docs/documents", Some(corpus()))
            .await,
    );

    // Lexical: identifiers by their whole and by their parts; BM25 scores, no distance.
    let r = query(&app, json!({"query": "HashMap::entry", "mode": "lexical"})).await;
    assert_eq!(r["plan"], "lexical");
    assert_eq!(doc_ids(&r)[0], "r1");
    assert!(r["results"][0]["score"].as_f64().unwrap() > 0.0);
    assert!(r["results"][0].get("distance").is_none(), "{r}");
    assert!(r.get("legs").is_none(), "{r}");
    let r = query(&app, json!({"query": "entry", "mode": "lexical"})).await;
    let mut found = doc_ids(&r);
    found.sort();
    assert_eq!(found, ["p3", "r1"]);
    let r = query(&app, json!({"query": "case names", "mode": "lexical"})).await;
    assert_eq!(doc_ids(&r), ["p2"]);
    let r = query(&app, json!({"query": "zeppelin", "mode": "lexical"})).await;
    assert!(doc_ids(&r).is_empty());

    // Hybrid: both legs, with their paths and times; the passage only the lexical leg finds
    // still comes first, whatever the tiny model's dense ranking.
    for body in [
        json!({"query": "os.path.join", "mode": "hybrid"}),
        json!({"query": "os.path.join"}),
        json!({"query": "os.path.join", "fusion": "dbsf", "alpha": 0.3}),
        json!({"query": "os.path.join", "fusion": "rrf", "rrf_k": 1, "candidates": 20}),
    ] {
        let r = query(&app, body.clone()).await;
        assert_eq!(r["plan"], "hybrid", "{body}");
        assert_eq!(doc_ids(&r)[0], "p1", "{body}: {r}");
        let legs = r["legs"].as_array().expect("legs");
        assert_eq!(legs.len(), 2);
        assert_eq!(legs[0]["leg"], "dense");
        assert_eq!(legs[0]["plan"], "flat");
        assert_eq!(legs[1]["leg"], "lexical");
        assert_eq!(legs[1]["plan"], "lexical");
        // os.path.join, and the two others that mention paths or joining.
        assert_eq!(legs[1]["candidates"], 3, "{r}");
        for leg in legs {
            assert!(leg["time_ms"].as_f64().unwrap() >= 0.0);
        }
        assert!(r["results"][0].get("distance").is_none());
    }
    // Each leg returns `candidates`, and never fewer than the answer needs.
    let r = query(
        &app,
        json!({"query": "os.path.join", "k": 2, "candidates": 3}),
    )
    .await;
    assert_eq!(r["legs"][0]["candidates"], 3);
    let r = query(
        &app,
        json!({"query": "os.path.join", "k": 4, "candidates": 3}),
    )
    .await;
    assert_eq!(r["legs"][0]["candidates"], 4);
    // DBSF scores are normalised: within [0, 1].
    let r = query(&app, json!({"query": "path", "fusion": "dbsf"})).await;
    for h in r["results"].as_array().unwrap() {
        let s = h["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "{h}");
    }

    // Dense is what it was: the metric's score and distance, no legs.
    let r = query(
        &app,
        json!({"query": "os.path.join", "mode": "dense", "k": 6}),
    )
    .await;
    assert_eq!(r["plan"], "flat");
    assert_eq!(r["results"].as_array().unwrap().len(), 6);
    let top = &r["results"][0];
    let (score, distance) = (
        top["score"].as_f64().unwrap(),
        top["distance"].as_f64().unwrap(),
    );
    assert!((score + distance - 1.0).abs() < 1e-5, "{top}");

    // Filters apply to both legs.
    let python = json!({"lang": "python"});
    let mut lexical_found = 0;
    for mode in ["lexical", "hybrid"] {
        let r = query(
            &app,
            json!({"query": "HashMap::entry path join", "mode": mode, "filter": python, "k": 6,
                   "include": ["metadata"]}),
        )
        .await;
        let hits = r["results"].as_array().unwrap();
        assert!(!hits.is_empty(), "{mode}");
        for h in hits {
            assert_eq!(h["metadata"]["lang"], "python", "{mode}: {r}");
        }
        if mode == "lexical" {
            lexical_found = hits.len();
        } else {
            // The lexical leg found what the filtered lexical query found.
            assert_eq!(r["legs"][1]["candidates"], lexical_found, "{r}");
        }
    }
    let r = query(
        &app,
        json!({"query": "os.path.join", "mode": "lexical", "filter": {"lang": "rust"}}),
    )
    .await;
    assert!(
        !doc_ids(&r).contains(&"p1".to_string()),
        "a filtered-out passage: {r}"
    );

    // Replacements and deletes follow their documents.
    assert_ok(
        &app.send(
            POST,
            "/collections/docs/documents",
            Some(json!({"documents": [{"id": "p1", "text": "Nowadays pathlib does this."}]})),
        )
        .await,
    );
    let r = query(&app, json!({"query": "os.path.join", "mode": "lexical"})).await;
    assert!(!doc_ids(&r).contains(&"p1".to_string()), "{r}");
    let r = query(&app, json!({"query": "pathlib", "mode": "lexical"})).await;
    assert_eq!(doc_ids(&r), ["p1"]);
    assert_ok(
        &app.send(
            POST,
            "/collections/docs/documents/delete",
            Some(json!({"ids": ["r1"]})),
        )
        .await,
    );
    let r = query(&app, json!({"query": "HashMap::entry", "mode": "lexical"})).await;
    assert!(!doc_ids(&r).contains(&"r1".to_string()), "{r}");

    // Batches run every mode.
    let r = app
        .send(
            POST,
            "/collections/docs/query/batch",
            Some(json!({"queries": [
                {"query": "pathlib", "mode": "lexical"},
                {"query": "pathlib"},
                {"query": "pathlib", "mode": "dense", "k": 1},
            ]})),
        )
        .await;
    assert_ok(&r);
    let plans: Vec<&str> = r.1["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["plan"].as_str().unwrap())
        .collect();
    assert_eq!(plans, ["lexical", "hybrid", "flat"]);
    assert_eq!(doc_ids(&r.1["results"][0]), ["p1"]);
    app.close().await;
}

#[tokio::test]
async fn the_analyzer_follows_the_collections_language() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    for (name, language) in [("en", "en"), ("plain", "none")] {
        let r = app
            .send(
                PUT,
                &format!("/collections/{name}"),
                Some(json!({"lexical": {"language": language}})),
            )
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        assert_eq!(r.1["lexical"]["language"], language);
        assert_ok(
            &app.send(
                POST,
                &format!("/collections/{name}/documents"),
                Some(json!({"documents": [{"id": "d", "text": "The connections are running."}]})),
            )
            .await,
        );
    }
    let found = |name: &'static str, q: &'static str| {
        let app = &app;
        async move {
            let r = app
                .send(
                    POST,
                    &format!("/collections/{name}/query"),
                    Some(json!({"query": q, "mode": "lexical"})),
                )
                .await;
            assert_ok(&r);
            doc_ids(&r.1).len()
        }
    };
    // English stems; plain does not.
    assert_eq!(found("en", "connection run").await, 1);
    assert_eq!(found("plain", "connection run").await, 0);
    assert_eq!(found("plain", "connections").await, 1);
    // Stop words alone match nothing in English, and a plain index keeps them.
    assert_eq!(found("en", "the are").await, 0);
    assert_eq!(found("plain", "the").await, 1);
    // Creating it again with the same settings is no conflict; with others it is.
    let again = app
        .send(
            PUT,
            "/collections/en",
            Some(json!({"lexical": {"language": "en"}})),
        )
        .await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    let default = app.send(PUT, "/collections/en", None).await;
    assert_eq!(default.0, StatusCode::OK, "{}", default.1);
    let other = app
        .send(
            PUT,
            "/collections/en",
            Some(json!({"lexical": {"language": "de"}})),
        )
        .await;
    assert_eq!(other.0, StatusCode::CONFLICT, "{}", other.1);
    app.close().await;
}

#[tokio::test]
async fn the_lexical_index_survives_restarts_and_catches_up_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        App::open(
            dir.path(),
            tiny_worker(),
            service_settings(dir.path()),
            ApiSettings::default(),
        )
    };
    let app = open().await;
    create_corpus(&app).await;
    let collection_id = app.store.get_collection("docs").await.unwrap().unwrap().id;
    app.close().await;

    // Reopened: the same answers, from the index on disk.
    let app = open().await;
    let r = query(
        &app,
        json!({"query": "snake_case_names", "mode": "lexical"}),
    )
    .await;
    assert_eq!(doc_ids(&r), ["p2"]);

    // The store moves on without the index (as after a crash between the store's commit and
    // the index's): a document written and one deleted behind its back.
    let (_, collections) = (
        (),
        app.store
            .upsert_documents(
                collection_id,
                &[NewDocument {
                    id: "late".into(),
                    text: Some("Written while the index was not looking: zeppelin.".into()),
                    metadata: Value::Null,
                    passages: vec![NewPassage {
                        start: 0,
                        end: 50,
                        text: Some("Written while the index was not looking: zeppelin.".into()),
                        vector: vec![0.5; 32],
                    }],
                }],
            )
            .await
            .unwrap(),
    );
    assert_eq!(collections.len(), 1);
    app.store
        .delete_documents(collection_id, &["p2".to_string()])
        .await
        .unwrap();
    app.close().await;

    // The restart replays the difference by passage id.
    let app = open().await;
    let r = query(&app, json!({"query": "zeppelin", "mode": "lexical"})).await;
    assert_eq!(doc_ids(&r), ["late"]);
    let r = query(
        &app,
        json!({"query": "snake_case_names", "mode": "lexical"}),
    )
    .await;
    assert!(doc_ids(&r).is_empty(), "{r}");
    app.close().await;

    // A missing index is rebuilt from the stored text; so is a damaged one.
    let lexical_dir = dir.path().join("lexical").join(collection_id.to_string());
    std::fs::remove_dir_all(&lexical_dir).unwrap();
    let app = open().await;
    let r = query(&app, json!({"query": "HashMap::entry", "mode": "lexical"})).await;
    assert_eq!(doc_ids(&r)[0], "r1");
    app.close().await;
    std::fs::write(lexical_dir.join("meta.json"), b"{ torn").unwrap();
    let app = open().await;
    let r = query(&app, json!({"query": "zeppelin", "mode": "lexical"})).await;
    assert_eq!(doc_ids(&r), ["late"]);

    // Deleting the collection removes its index.
    assert_eq!(
        app.send(Method::DELETE, "/collections/docs", None).await.0,
        StatusCode::OK
    );
    assert!(!lexical_dir.exists());
    app.close().await;
}

#[tokio::test]
async fn rerank_endpoint_and_reranked_queries() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny_with_reranker(dir.path()).await;
    let (_, info) = app.send(Method::GET, "/info", None).await;
    assert!(
        info["reranker"].as_str().is_some_and(|id| !id.is_empty()),
        "/info names the reranker: {info}"
    );

    // /rerank in TEI's shape, with sentence-transformers' scores for the same pairs.
    let reference = Reference::read(&common::tiny_cross_encoder_dir());
    let (pairs, scores, logits) = (&reference.pairs, &reference.scores, &reference.logits);
    for (i, (q, t)) in pairs.iter().enumerate() {
        if q.trim().is_empty() {
            // The endpoint refuses an empty query (below); the library scores it.
            continue;
        }
        for raw in [false, true] {
            let r = app
                .send(
                    POST,
                    "/rerank",
                    Some(json!({"query": q, "texts": [t], "raw_scores": raw})),
                )
                .await;
            assert_ok(&r);
            let got = r.1[0]["score"].as_f64().unwrap();
            let want = f64::from(if raw { logits[i] } else { scores[i] });
            assert!((got - want).abs() < 1e-4, "pair {i}: {got} against {want}");
        }
    }
    // Several texts: every one by index, most relevant first, each scored as it is alone.
    let q = pairs[0].0.clone();
    let texts: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let r = app
        .send(
            POST,
            "/rerank",
            Some(json!({"query": q, "texts": texts, "return_text": true})),
        )
        .await;
    assert_ok(&r);
    let ranked = r.1.as_array().expect("an array");
    assert_eq!(ranked.len(), texts.len());
    let mut seen = Vec::new();
    let mut previous = f64::INFINITY;
    for hit in ranked {
        let index = hit["index"].as_u64().unwrap() as usize;
        let score = hit["score"].as_f64().unwrap();
        assert!(score <= previous, "most relevant first: {}", r.1);
        previous = score;
        assert_eq!(hit["text"], texts[index]);
        let alone = app
            .send(
                POST,
                "/rerank",
                Some(json!({"query": q, "texts": [texts[index]]})),
            )
            .await;
        assert!((alone.1[0]["score"].as_f64().unwrap() - score).abs() < 1e-5);
        seen.push(index);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..texts.len()).collect::<Vec<_>>());
    let r = app
        .send(POST, "/rerank", Some(json!({"query": q, "texts": texts})))
        .await;
    assert_ok(&r);
    assert!(r.1[0].get("text").is_none(), "text only with return_text");

    // A reranked query: the first top_n hits in the cross-encoder's order, the best k kept.
    create_corpus(&app).await;
    let plain = query(
        &app,
        json!({"query": "path join entry", "k": 6, "include": ["text"]}),
    )
    .await;
    let candidates: Vec<String> = plain["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap().to_owned())
        .collect();
    let judged = app
        .send(
            POST,
            "/rerank",
            Some(json!({"query": "path join entry", "texts": candidates})),
        )
        .await;
    assert_ok(&judged);
    let r = query(
        &app,
        json!({"query": "path join entry", "k": 3, "rerank": {"top_n": 6}, "include": ["text"]}),
    )
    .await;
    let hits = r["results"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    for (hit, want) in hits.iter().zip(judged.1.as_array().unwrap()) {
        let want_text = &candidates[want["index"].as_u64().unwrap() as usize];
        assert_eq!(hit["text"].as_str().unwrap(), want_text, "{r}");
        let got = hit["rerank_score"].as_f64().unwrap();
        assert!((got - want["score"].as_f64().unwrap()).abs() < 1e-5);
        assert!(
            hit["score"].is_number(),
            "the search's score stays beside it"
        );
    }
    // Texts are read for the cross-encoder but returned only when asked for.
    let r = query(
        &app,
        json!({"query": "path join entry", "k": 2, "rerank": {}, "include": []}),
    )
    .await;
    assert!(r["results"][0].get("text").is_none());
    assert!(r["results"][0]["rerank_score"].is_number());

    // Bad input.
    let bad = [
        (
            json!({"query": "x", "rerank": {"top_n": 1001}}),
            "limit_exceeded",
        ),
        (
            json!({"query": "x", "k": 5, "rerank": {"top_n": 4}}),
            "invalid_parameter",
        ),
        (
            json!({"query": "x", "rerank": {"top_n": 0}}),
            "invalid_parameter",
        ),
        (
            json!({"query": "x", "rerank": {"top": 5}}),
            "invalid_request",
        ),
        (
            json!({"query": "x", "rerank": {}, "mmr": {}}),
            "invalid_parameter",
        ),
        (
            json!({"vector": vec![0.1; 32], "rerank": {}}),
            "text_required",
        ),
    ];
    for (body, code) in bad {
        let r = app
            .send(POST, "/collections/docs/query", Some(body.clone()))
            .await;
        common::assert_error(&r, StatusCode::BAD_REQUEST, code);
    }
    for (body, code) in [
        (json!({"query": "x", "texts": []}), "empty_input"),
        (json!({"query": " ", "texts": ["a"]}), "empty_input"),
        (
            json!({"query": "x", "texts": vec!["a"; 1001]}),
            "limit_exceeded",
        ),
        (json!({"query": "x"}), "invalid_request"),
        (
            json!({"query": "x", "texts": ["a"], "truncation_direction": "Left"}),
            "invalid_parameter",
        ),
    ] {
        let r = app.send(POST, "/rerank", Some(body)).await;
        common::assert_error(&r, StatusCode::BAD_REQUEST, code);
    }
    app.close().await;

    // A server without a reranker says so.
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    let r = app
        .send(POST, "/rerank", Some(json!({"query": "x", "texts": ["a"]})))
        .await;
    common::assert_error(&r, StatusCode::BAD_REQUEST, "reranker_unavailable");
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "x", "rerank": {"top_n": 5}})),
        )
        .await;
    common::assert_error(&r, StatusCode::BAD_REQUEST, "reranker_unavailable");
    app.close().await;
}
