//! `/collections` and `/collections/{name}`: create, list, describe, delete.

use axum::Json;
use axum::http::StatusCode;

use crate::api::dto::{
    CollectionList, CollectionResponse, CreateCollectionRequest, DeleteCollectionResponse,
};
use crate::api::error::{ApiResult, ErrorResponse, responses};
use crate::api::extract::{ApiJson, ApiPath};
use crate::api::state::Ready;

use super::collection_name;

/// Create a collection.
///
/// Idempotent: when a collection of that name exists with the same settings (defaults
/// filled in), it is returned with 200; with other settings the answer is 409. The body may be
/// empty (a text collection with every default).
#[utoipa::path(
    put,
    path = "/collections/{name}",
    tag = "collections",
    params(("name" = String, Path, description = "Collection name: 1 to 64 characters from [A-Za-z0-9_-].")),
    request_body(content = CreateCollectionRequest, description = "Settings; `{}` or no body for the defaults."),
    responses(
        (status = 201, description = "Created.", body = CollectionResponse),
        (status = 200, description = "An identical collection already exists.", body = CollectionResponse),
        (status = 409, description = "`collection_conflict`: it exists with other settings (the message shows them); or `limit_exceeded`: the server holds `max_collections` already.", body = ErrorResponse),
        (status = 422, description = "`invalid_name`.", body = ErrorResponse),
        responses::Common,
    )
)]
pub async fn create_collection(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CreateCollectionRequest>,
) -> ApiResult<(StatusCode, Json<CollectionResponse>)> {
    let name = collection_name(name)?;
    let (info, created) = service.create_collection(&name, body.into()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info.into())))
}

/// List the collections, by name.
#[utoipa::path(
    get,
    path = "/collections",
    tag = "collections",
    responses(
        (status = 200, description = "Every collection.", body = CollectionList),
        responses::Common,
    )
)]
pub async fn list_collections(Ready(service): Ready) -> ApiResult<Json<CollectionList>> {
    let collections = service.list_collections().await?;
    Ok(Json(CollectionList {
        collections: collections.into_iter().map(Into::into).collect(),
    }))
}

/// Describe a collection: its settings, documents, passages, index state and memory.
#[utoipa::path(
    get,
    path = "/collections/{name}",
    tag = "collections",
    params(("name" = String, Path, description = "Collection name.")),
    responses(
        (status = 200, description = "The collection.", body = CollectionResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn get_collection(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<CollectionResponse>> {
    let name = collection_name(name)?;
    Ok(Json(service.get_collection(&name).await?.into()))
}

/// Delete a collection with its documents, passages and index snapshots.
#[utoipa::path(
    delete,
    path = "/collections/{name}",
    tag = "collections",
    params(("name" = String, Path, description = "Collection name.")),
    responses(
        (status = 200, description = "Deleted.", body = DeleteCollectionResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn delete_collection(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<DeleteCollectionResponse>> {
    let name = collection_name(name)?;
    service.delete_collection(&name).await?;
    Ok(Json(DeleteCollectionResponse { deleted: name }))
}
