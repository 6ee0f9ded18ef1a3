//! `/collections/{name}/documents…`: upsert, read one, read many, delete.

use axum::Json;

use crate::api::dto::{
    DeleteDocumentsRequest, DeleteDocumentsResponse, DocumentPageResponse, DocumentResponse,
    GetDocumentsRequest, UpsertRequest, UpsertResponse,
};
use crate::api::error::{ApiResult, ErrorResponse, responses};
use crate::api::extract::{ApiJson, ApiPath};
use crate::api::state::Ready;
use crate::service::Selector;

use super::collection_name;

/// Upsert documents (POST, or PUT as in Qdrant).
///
/// Each document is text (split into passages on the model's tokens, with overlap, preferring
/// sentence and paragraph boundaries; nothing is truncated), or a vector (one passage), with
/// optional metadata. A document whose id exists is replaced whole. The answer comes once the
/// write is committed and visible to queries, and is 200 whether documents were created or
/// replaced (each entry's `replaced` says which).
#[utoipa::path(
    method(post, put),
    path = "/collections/{name}/documents",
    tag = "documents",
    params(("name" = String, Path, description = "Collection name.")),
    request_body = UpsertRequest,
    responses(
        (status = 200, description = "Committed: each document's id and passage count, in request order.", body = UpsertResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn upsert_documents(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpsertRequest>,
) -> ApiResult<Json<UpsertResponse>> {
    let name = collection_name(name)?;
    let docs = body.documents.into_iter().map(Into::into).collect();
    let done = service.upsert_documents_versioned(&name, docs).await?;
    Ok(Json(UpsertResponse {
        documents: done.value.into_iter().map(Into::into).collect(),
        version: done.version,
    }))
}

/// Read one document.
#[utoipa::path(
    get,
    path = "/collections/{name}/documents/{id}",
    tag = "documents",
    params(
        ("name" = String, Path, description = "Collection name."),
        ("id" = String, Path, description = "Document id (percent-encode '/' and other reserved characters)."),
    ),
    responses(
        (status = 200, description = "The document.", body = DocumentResponse),
        (status = 404, description = "`collection_not_found` or `document_not_found`.", body = ErrorResponse),
        (status = 422, description = "`invalid_name`: collection names are 1 to 64 characters from `[A-Za-z0-9_-]`.", body = ErrorResponse),
        responses::Common,
    )
)]
pub async fn get_document(
    Ready(service): Ready,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<DocumentResponse>> {
    let name = collection_name(name)?;
    Ok(Json(service.get_document(&name, &id).await?.into()))
}

/// Read documents by ids or by a metadata filter (or all of them), a page at a time.
#[utoipa::path(
    post,
    path = "/collections/{name}/documents/get",
    tag = "documents",
    params(("name" = String, Path, description = "Collection name.")),
    request_body = GetDocumentsRequest,
    responses(
        (status = 200, description = "A page of documents.", body = DocumentPageResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn get_documents(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut body): ApiJson<GetDocumentsRequest>,
) -> ApiResult<Json<DocumentPageResponse>> {
    let name = collection_name(name)?;
    let selector = body.selector()?;
    let after = body.after.map(|a| a.0);
    let page = service
        .get_documents(&name, selector, after, body.limit)
        .await?;
    Ok(Json(page.into()))
}

/// Delete documents, with their passages, by ids or by a metadata filter (exactly one).
#[utoipa::path(
    post,
    path = "/collections/{name}/documents/delete",
    tag = "documents",
    params(("name" = String, Path, description = "Collection name.")),
    request_body = DeleteDocumentsRequest,
    responses(
        (status = 200, description = "The ids deleted.", body = DeleteDocumentsResponse),
        responses::Collection,
        responses::Common,
    )
)]
pub async fn delete_documents(
    Ready(service): Ready,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<DeleteDocumentsRequest>,
) -> ApiResult<Json<DeleteDocumentsResponse>> {
    let name = collection_name(name)?;
    let selector = Selector::try_from(body)?;
    let deleted = service.delete_documents_versioned(&name, selector).await?;
    Ok(Json(DeleteDocumentsResponse {
        deleted: deleted.value,
        version: deleted.version,
    }))
}
