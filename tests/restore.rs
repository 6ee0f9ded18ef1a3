//! Restore isolation: collections that cannot be restored at start-up (a corrupt vector blob,
//! unreadable index settings, chunking the model cannot take) are registered as `failed` beside
//! a healthy one, which keeps serving; the failed ones answer 503 with the reason, show in
//! `/readyz`, and can be deleted with their rows and snapshot.

mod common;

use std::path::Path;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use common::{App, assert_error};

/// Runs statements against the data directory's database while no service has it open.
async fn tamper(data: &Path, statements: &[&'static str]) {
    let url = format!("sqlite://{}", data.join("vicinity.db").display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    for &sql in statements {
        let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
        assert!(done.rows_affected() > 0, "{sql} changed nothing");
    }
    conn.close().await.unwrap();
}

async fn ok(app: &App, method: Method, uri: &str, body: Option<Value>) -> Value {
    let (status, body) = app.send(method, uri, body).await;
    assert!(status.is_success(), "{uri}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_that_cannot_be_restored_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // A healthy text collection, and three that will be damaged in different ways.
    let app = App::tiny(data).await;
    ok(&app, Method::PUT, "/collections/healthy", Some(json!({}))).await;
    ok(
        &app,
        Method::POST,
        "/collections/healthy/documents",
        Some(json!({"documents": [
            {"id": "cat", "text": "the cat sleeps on the warm mat"},
            {"id": "sea", "text": "waves break on the rocky shore"},
        ]})),
    )
    .await;
    let vectors = Some(json!({"documents": [
        {"id": "a", "vector": [1.0, 0.0, 0.0, 0.0]},
        {"id": "b", "vector": [0.0, 1.0, 0.0, 0.0]},
    ]}));
    for name in ["blob", "settings"] {
        let uri = format!("/collections/{name}");
        ok(&app, Method::PUT, &uri, Some(json!({"dimension": 4}))).await;
        ok(
            &app,
            Method::POST,
            &format!("{uri}/documents"),
            vectors.clone(),
        )
        .await;
    }
    ok(&app, Method::PUT, "/collections/chunking", Some(json!({}))).await;
    let blob_id = app.store.get_collection("blob").await.unwrap().unwrap().id;
    app.close().await;

    tamper(
        data,
        &[
            // A vector blob of the wrong length: loading the vectors fails.
            "UPDATE passages SET vector = x'00010203' WHERE doc_id = 'b' AND collection_id = \
             (SELECT id FROM collections WHERE name = 'blob')",
            // Index settings that are a JSON object, as the schema demands, but not ours.
            "UPDATE collections SET index_config = '{\"type\": \"bogus\"}' WHERE name = 'settings'",
            // Chunking no model can take: the overlap exceeds the passage size.
            "UPDATE collections SET chunking = '{\"max_tokens\": 16, \"overlap\": 30}' \
             WHERE name = 'chunking'",
        ],
    )
    .await;
    // An index snapshot left by the damaged collection, which its deletion must remove.
    let snapshot = data.join("indexes").join(blob_id.to_string());
    std::fs::create_dir_all(&snapshot).unwrap();

    // The server starts.
    let app = App::tiny(data).await;

    // The healthy collection serves.
    let healthy = ok(&app, Method::GET, "/collections/healthy", None).await;
    assert_eq!(healthy["status"], "ready", "{healthy}");
    assert!(healthy.get("error").is_none(), "{healthy}");
    assert_eq!(healthy["documents"], 2);
    let hits = ok(
        &app,
        Method::POST,
        "/collections/healthy/query",
        Some(json!({"query": "a cat on a mat", "k": 2})),
    )
    .await;
    assert_eq!(hits["results"].as_array().unwrap().len(), 2, "{hits}");
    ok(
        &app,
        Method::POST,
        "/collections/healthy/documents",
        Some(json!({"documents": [{"id": "owl", "text": "an owl hunts at night"}]})),
    )
    .await;

    // Each damaged one is described as failed, with its reason.
    for (name, reason) in [
        ("blob", "passage"),
        ("settings", "index settings"),
        ("chunking", "overlap"),
    ] {
        let info = ok(&app, Method::GET, &format!("/collections/{name}"), None).await;
        assert_eq!(info["status"], "failed", "{info}");
        let error = info["error"].as_str().unwrap();
        assert!(error.contains(reason), "{name}: {error}");
        assert_eq!(info["documents"], 0);
    }

    // Every other operation on a failed collection answers 503 naming the reason.
    for (method, uri, body) in [
        (
            Method::POST,
            "/collections/blob/query",
            Some(json!({"vector": [1.0, 0.0, 0.0, 0.0], "k": 1})),
        ),
        (Method::POST, "/collections/blob/documents", vectors.clone()),
        (
            Method::POST,
            "/collections/blob/documents/get",
            Some(json!({"ids": ["a"]})),
        ),
        (
            Method::POST,
            "/collections/chunking/query",
            Some(json!({"query": "cat", "k": 1})),
        ),
        // Creating it again with the same settings finds it failed, not created.
        (
            Method::PUT,
            "/collections/blob",
            Some(json!({"dimension": 4})),
        ),
    ] {
        let r = app.send(method.clone(), uri, body).await;
        assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "collection_failed");
        let message = r.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("could not be restored"), "{message}");
    }
    let r = app
        .send(
            Method::POST,
            "/collections/blob/query",
            Some(json!({"vector": [1.0, 0.0, 0.0, 0.0]})),
        )
        .await;
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("passage"),
        "{}",
        r.1
    );

    // The list shows every collection with its status; the server is ready and says which
    // collections failed.
    let list = ok(&app, Method::GET, "/collections", None).await;
    let statuses: Vec<(&str, &str)> = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("blob", "failed"),
            ("chunking", "failed"),
            ("healthy", "ready"),
            ("settings", "failed")
        ]
    );
    let ready = ok(&app, Method::GET, "/readyz", None).await;
    assert_eq!(ready["status"], "ready");
    let failed: Vec<&str> = ready["failed_collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["blob", "chunking", "settings"], "{ready}");
    assert!(
        ready["failed_collections"][0]["error"]
            .as_str()
            .unwrap()
            .contains("passage")
    );

    // A failed collection can be deleted, rows and snapshot with it.
    let deleted = ok(&app, Method::DELETE, "/collections/blob", None).await;
    assert_eq!(deleted, json!({"deleted": "blob"}));
    let r = app.send(Method::GET, "/collections/blob", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "collection_not_found");
    let r = app.send(Method::DELETE, "/collections/blob", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "collection_not_found");
    assert!(app.store.get_collection("blob").await.unwrap().is_none());
    assert!(!snapshot.exists(), "the snapshot is removed");
    let ready = ok(&app, Method::GET, "/readyz", None).await;
    assert_eq!(ready["failed_collections"].as_array().unwrap().len(), 2);

    // Its name is free again.
    let created = app
        .send(
            Method::PUT,
            "/collections/blob",
            Some(json!({"dimension": 4})),
        )
        .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    ok(&app, Method::POST, "/collections/blob/documents", vectors).await;
    let hits = ok(
        &app,
        Method::POST,
        "/collections/blob/query",
        Some(json!({"vector": [0.0, 1.0, 0.0, 0.0], "k": 1})),
    )
    .await;
    assert_eq!(hits["results"][0]["document_id"], "b", "{hits}");

    // The healthy collection kept its documents throughout.
    let healthy = ok(&app, Method::GET, "/collections/healthy", None).await;
    assert_eq!(healthy["documents"], 3);

    // The schema documents the status, the reason and the readiness body.
    let doc = ok(&app, Method::GET, "/openapi.json", None).await;
    let schemas = &doc["components"]["schemas"];
    let collection = &schemas["CollectionResponse"];
    assert!(
        collection["properties"]["status"].is_object(),
        "{collection}"
    );
    assert!(
        collection["properties"]["error"].is_object(),
        "{collection}"
    );
    let required = collection["required"].as_array().unwrap();
    assert!(required.contains(&json!("status")), "{collection}");
    assert!(!required.contains(&json!("error")), "{collection}");
    assert!(
        schemas["CollectionStatus"].to_string().contains("failed"),
        "{schemas}"
    );
    let ready = &schemas["ReadyResponse"];
    assert!(
        ready["properties"]["failed_collections"].is_object(),
        "{ready}"
    );
    app.close().await;

    // No row of the deleted collection is left.
    let url = format!("sqlite://{}", data.join("vicinity.db").display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    for (table, sql) in [
        (
            "passages",
            "SELECT count(*) FROM passages WHERE collection_id = ?1",
        ),
        (
            "documents",
            "SELECT count(*) FROM documents WHERE collection_id = ?1",
        ),
    ] {
        let (left,): (i64,) = sqlx::query_as(sql)
            .bind(blob_id.0)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    conn.close().await.unwrap();
}
