//! `/v1/leases/{id}/logs`: the device serving a lease uploads its job's output; the owner of
//! the lease's deployment reads it. Both requests are signed (`cairn_primitives::request`):
//! an unsigned or badly signed one gets 401, a valid signature from anyone else 403.

use super::{ApiError, AppState};
use crate::logs::LogError;
use crate::node::now_ms;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cairn_primitives::Address;
use cairn_primitives::request::verify_request;
use serde::Deserialize;
use serde_json::{Value, json};

/// Most bytes one read returns.
const MAX_READ: usize = 1 << 20;

#[derive(Deserialize)]
pub(super) struct OffsetQuery {
    offset: Option<u64>,
}

fn signer(
    s: &AppState,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Address, ApiError> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    verify_request(
        s.node.chain_id(),
        method,
        path,
        |h| headers.get(h).and_then(|v| v.to_str().ok()),
        body,
        now_ms(),
    )
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

pub(super) async fn upload(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<OffsetQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = signer(&s, "POST", &uri, &headers, &body)?;
    let device = s
        .node
        .with_ledger(|l| l.lease(id).map(|x| x.device))
        .ok_or_else(|| ApiError::not_found("unknown_lease", format!("no lease {id}")))?;
    if who != device {
        return Err(forbidden(format!(
            "only lease {id}'s device {device} uploads its logs"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let logs = s.node.clone();
    let len = tokio::task::spawn_blocking(move || logs.logs().append(id, offset, &body))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            LogError::Gap { .. } => ApiError::new(StatusCode::CONFLICT, "log_gap", e.to_string()),
            LogError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "log_too_large",
                e.to_string(),
            ),
            LogError::Io(e) => ApiError::internal(e),
        })?;
    Ok(Json(json!({"lease": id, "length": len})))
}

pub(super) async fn read(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<OffsetQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = signer(&s, "GET", &uri, &headers, b"")?;
    let (owner, state) = s
        .node
        .with_ledger(|l| {
            let lease = l.lease(id)?;
            let owner = l.deployment(lease.deployment)?.owner;
            Some((owner, lease.state))
        })
        .ok_or_else(|| ApiError::not_found("unknown_lease", format!("no lease {id}")))?;
    if who != owner {
        return Err(forbidden(format!(
            "lease {id}'s logs are readable only by its deployment's owner"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let node = s.node.clone();
    let (bytes, len) = tokio::task::spawn_blocking(move || node.logs().read(id, offset, MAX_READ))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let state = serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("x-cairn-log-length"),
                len.to_string(),
            ),
            (
                header::HeaderName::from_static("x-cairn-lease-state"),
                state,
            ),
        ],
        bytes,
    )
        .into_response())
}
