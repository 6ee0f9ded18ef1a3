//! `/collections/{name}/query` and `/collections/{name}/query/batch`.

use axum::Json;

use crate::api::dto::{BatchQueryRequest, BatchQueryResponse, QueryRequest, QueryResponse};
use crate::api::error::{ApiResult, responses};
use crate::api::extract::{ApiJson, ApiPath};
use crate::api::state::Ready;
use crate::service::Query;

use super::collection_name;

/// Find the passages nearest to a text or a vector, optionally filtered by metadata.
///
/// The planner scans exactly when the collection is small, when the filter matches few
/// passages, when `params.exact` is set or while the approximate index is building; otherwise
/// it searches the HNSW graph (or IVF cells). `plan` says which ran.
#[utoipa::path(
    post,
    path = "/collections/{name}/query",
    tag = "query",
    params(("name" = String, Path, description = "Collection name.")),
    request_body = QueryRequest,
    responses(
        (status = 200, description = "Hits, best first.", body = QueryResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn query(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<QueryRequest>,
) -> ApiResult<Json<QueryResponse>> {
    let name = collection_name(name)?;
    let min_version = body.min_version();
    let query = Query::try_from(body)?;
    Ok(Json(
        service.query_at(&name, query, min_version).await?.into(),
    ))
}

/// Run several queries; their texts are embedded together. One invalid query fails the batch.
#[utoipa::path(
    post,
    path = "/collections/{name}/query/batch",
    tag = "query",
    params(("name" = String, Path, description = "Collection name.")),
    request_body = BatchQueryRequest,
    responses(
        (status = 200, description = "One answer per query, in order.", body = BatchQueryResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn query_batch(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<BatchQueryRequest>,
) -> ApiResult<Json<BatchQueryResponse>> {
    let name = collection_name(name)?;
    let min_version = body
        .queries
        .iter()
        .filter_map(QueryRequest::min_version)
        .chain(body.consistency.map(|c| c.min_version))
        .max();
    let queries = body
        .queries
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            Query::try_from(q).map_err(|e| match e {
                crate::api::error::ApiError::BadRequest { code, message } => {
                    crate::api::error::ApiError::bad_request(
                        code,
                        format!("queries[{i}]: {message}"),
                    )
                }
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = service.query_batch_at(&name, queries, min_version).await?;
    Ok(Json(BatchQueryResponse {
        results: results.into_iter().map(Into::into).collect(),
    }))
}
