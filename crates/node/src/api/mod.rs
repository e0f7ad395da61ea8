//! The HTTP API under `/v1` (axum), plus `/healthz` and `/metrics`.
//!
//! Every error has the body `{"error": {"code": "...", "message": "..."}}`; codes are stable.
//! Request bodies are limited to [`ApiSettings::max_body_bytes`].

use crate::mempool::AdmitError;
use crate::node::Node;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_primitives::wire::{DecodeExt, Encode};
use cairn_primitives::{Address, Hash, SignedTx, StateKey};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

mod checking;
mod events;
mod logs;
mod openapi;
mod query;

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most transactions in one submission.
    pub max_batch: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_batch: 10_000,
        }
    }
}

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut r = (self.status, body).into_response();
        if let Some(s) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

fn admit_error(e: &AdmitError) -> ApiError {
    match e {
        AdmitError::Full(_) | AdmitError::AccountFull(_) => ApiError {
            retry_after_secs: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
        },
        AdmitError::Duplicate | AdmitError::NonceTaken(_) => {
            ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
        }
        _ => ApiError::bad(e.code(), e.to_string()),
    }
}

/// The last `/v1/stats` answer: height, when, how long counting took, body.
type StatsCache = Arc<Mutex<Option<(u64, std::time::Instant, std::time::Duration, Value)>>>;

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    settings: ApiSettings,
    stats: StatsCache,
}

/// The router.
pub fn router(node: Arc<Node>, settings: ApiSettings) -> Router {
    let limit = settings.max_body_bytes;
    Router::new()
        .route("/v1/txs", post(submit))
        .route("/v1/txs/{hash}", get(tx_status))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/accounts/{address}/rewards", get(query::rewards))
        .route("/v1/devices", get(query::devices))
        .route("/v1/devices/{address}", get(query::device))
        .route("/v1/deployments", get(query::deployments))
        .route("/v1/deployments/{id}", get(query::deployment))
        .route("/v1/quote", post(query::quote))
        .route("/v1/leases/{id}", get(query::lease))
        .route("/v1/leases/{id}/logs", get(logs::read).post(logs::upload))
        .route("/v1/rounds", get(checking::rounds))
        .route("/v1/rounds/latest", get(checking::latest_round))
        .route("/v1/rounds/{height}", get(checking::round))
        .route("/v1/committee", get(checking::committee))
        .route("/v1/classes", get(checking::classes))
        .route("/v1/checkers", get(checking::checkers))
        .route("/v1/checkers/{address}", get(checking::checker))
        .route(
            "/v1/checkers/{address}/devices",
            get(checking::checker_devices),
        )
        .route("/v1/epochs", get(query::epochs))
        .route("/v1/epochs/{epoch}", get(query::epoch))
        .route("/v1/stats", get(query::stats))
        .route("/v1/events", get(events::events))
        .route("/v1/status", get(status))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no_route", "no such endpoint") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                // Refuse from the declared length, before reading any of the body.
                let declared = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                if declared.is_some_and(|n| n > limit) {
                    return too_large(limit).into_response();
                }
                next.run(req).await
            },
        ))
        .with_state(AppState {
            node,
            settings,
            stats: StatsCache::default(),
        })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body over {limit} bytes"),
    )
}

#[derive(Deserialize)]
struct JsonSubmit {
    /// One transaction, canonical bytes in hex.
    tx: Option<String>,
    /// Several.
    txs: Option<Vec<String>>,
}

fn decode_tx(bytes: &[u8]) -> Result<SignedTx, ApiError> {
    SignedTx::decode(cairn_primitives::wire::Copying(bytes))
        .map_err(|e| ApiError::bad("malformed_tx", format!("transaction does not decode: {e}")))
}

/// POST /v1/txs: `application/octet-stream` (one transaction's canonical bytes) or JSON
/// `{"tx": "<hex>"}` / `{"txs": ["<hex>", ...]}`.
async fn submit(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(s.settings.max_body_bytes)
        } else {
            ApiError::bad("bad_body", e.body_text())
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let txs: Vec<SignedTx> = if is_json {
        let j: JsonSubmit = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("malformed_json", e.to_string()))?;
        let list: Vec<String> = match (j.tx, j.txs) {
            (Some(t), None) => vec![t],
            (None, Some(ts)) => ts,
            _ => return Err(ApiError::bad("malformed_json", "give either `tx` or `txs`")),
        };
        if list.len() > s.settings.max_batch {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!("at most {} transactions per request", s.settings.max_batch),
            ));
        }
        list.iter()
            .map(|h| {
                hex::decode(h)
                    .map_err(|e| ApiError::bad("malformed_tx", format!("not hex: {e}")))
                    .and_then(|b| decode_tx(&b))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![decode_tx(&body)?]
    };
    let single = txs.len() == 1;
    let node = s.node.clone();
    let verdicts = tokio::task::spawn_blocking(move || node.submit(txs))
        .await
        .map_err(ApiError::internal)?;
    if single && let Some(Err(e)) = verdicts.first() {
        return Err(admit_error(e));
    }
    let results: Vec<Value> = verdicts
        .iter()
        .map(|r| match r {
            Ok(h) => json!({"hash": h.to_string(), "status": "pending"}),
            Err(e) => json!({"error": {"code": e.code(), "message": e.to_string()}}),
        })
        .collect();
    let body = if single {
        results.into_iter().next().unwrap_or(Value::Null)
    } else {
        json!({ "results": results })
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn parse_hash(s: &str) -> Result<Hash, ApiError> {
    s.parse().map_err(|e: String| ApiError::bad("bad_hash", e))
}

/// GET /v1/txs/{hash}: pending, final (height, index) or failed (height, code).
async fn tx_status(
    State(s): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let h = parse_hash(&hash)?;
    let landed = s
        .node
        .with_chain(|c| c.tx_status(&h))
        .map_err(ApiError::internal)?;
    match landed {
        Some((height, index, None)) => Ok(Json(
            json!({"hash": hash, "status": "final", "height": height, "index": index}),
        )),
        Some((height, index, Some(code))) => Ok(Json(json!({
            "hash": hash, "status": "failed", "height": height, "index": index, "code": code
        }))),
        None if s.node.is_pending(&h) => Ok(Json(json!({"hash": hash, "status": "pending"}))),
        None => Err(ApiError::not_found(
            "unknown_tx",
            "no such transaction (never seen, or refused at submission)",
        )),
    }
}

#[derive(Deserialize)]
struct ProveQuery {
    #[serde(default)]
    prove: bool,
}

/// GET /v1/accounts/{address}[?prove=true]
async fn account(
    State(s): State<AppState>,
    Path(address): Path<String>,
    Query(q): Query<ProveQuery>,
) -> Result<Json<Value>, ApiError> {
    let a: Address = query::parse_address(&address)?;
    let body = s.node.with_ledger(|l| {
        let (stakes, unbonding) = query::stakes_json(l, &a);
        let acct = l.account(&a);
        let g = l.globals();
        let decimals = l.params().decimals;
        let mut v = json!({
            "address": a.to_string(),
            "balance": acct.balance.display(decimals),
            "balance_base": acct.balance.base(),
            "nonce": acct.nonce,
            "credits": acct.credits.0,
            "stakes": stakes,
            "unbonding": unbonding,
            "height": g.height,
        });
        if q.prove {
            let proof = l.prove(&StateKey::Account(a));
            v["state_root"] = json!(l.state_root().to_string());
            v["proof"] = serde_json::to_value(&proof).unwrap_or(Value::Null);
        }
        v
    });
    Ok(Json(body))
}

/// GET /healthz: 200 while finalized blocks are being executed; 503 with why once execution
/// stopped.
async fn healthz(State(s): State<AppState>) -> Response {
    match s.node.halted() {
        None => "ok".into_response(),
        Some(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "halted", why).into_response(),
    }
}

/// GET /v1/status
async fn status(State(s): State<AppState>) -> Json<Value> {
    let pending = s.node.mempool_len();
    let validators = s.node.with_chain(|c| c.genesis().validators.len());
    let halted = s.node.halted();
    Json(s.node.with_ledger(|l| {
        let g = l.globals();
        let p = l.params();
        json!({
            "chain_id": p.chain_id,
            "token": p.symbol,
            "decimals": p.decimals,
            "height": g.height,
            "last_block": g.last_block.to_string(),
            "last_block_time_ms": g.last_timestamp_ms,
            "state_root": l.state_root().to_string(),
            "epoch": g.epoch,
            "genesis_time_ms": p.genesis_time_ms,
            "epoch_ms": p.epoch_ms,
            "last_round": g.last_round,
            "supply": g.supply.display(p.decimals),
            "minted": g.minted.display(p.decimals),
            "burned": g.burned.display(p.decimals),
            "pending_txs": pending,
            "min_fee_base": p.min_fee.base(),
            "validators": validators,
            "halted": halted,
        })
    }))
}

/// GET /v1/blocks/{height}
async fn block(
    State(s): State<AppState>,
    Path(height): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let b = s
        .node
        .block(height)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("unknown_block", format!("no block {height}")))?;
    let h = &b.header;
    let after = s.node.root_at(height).map(|r| r.to_string());
    Ok(Json(json!({
        "height": h.height,
        "state_root_after": after,
        "hash": b.hash().to_string(),
        "parent": h.parent.to_string(),
        "timestamp_ms": h.timestamp_ms,
        "proposer": h.proposer.to_string(),
        "state_height": h.state_height,
        "state_root": h.state_root.to_string(),
        "tx_root": h.tx_root.to_string(),
        "txs": b.txs.iter().map(|t| t.hash().to_string()).collect::<Vec<_>>(),
        "size_bytes": b.encode().len(),
    })))
}

/// GET /metrics (Prometheus text format).
async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.node.metrics;
    let (height, supply) = s
        .node
        .with_ledger(|l| (l.globals().height, l.globals().supply.base()));
    let pending = s.node.mempool_len();
    let text = format!(
        "# HELP cairn_height Height of the last finalized block.\n# TYPE cairn_height gauge\n\
         cairn_height {height}\n\
         # HELP cairn_mempool_txs Transactions waiting for a block.\n# TYPE cairn_mempool_txs gauge\n\
         cairn_mempool_txs {pending}\n\
         # HELP cairn_supply_base Token supply in base units.\n# TYPE cairn_supply_base gauge\n\
         cairn_supply_base {supply}\n\
         # HELP cairn_txs_admitted_total Transactions admitted to the mempool.\n# TYPE cairn_txs_admitted_total counter\n\
         cairn_txs_admitted_total {}\n\
         # HELP cairn_txs_refused_total Transactions refused at submission.\n# TYPE cairn_txs_refused_total counter\n\
         cairn_txs_refused_total {}\n\
         # HELP cairn_blocks_total Blocks finalized since start.\n# TYPE cairn_blocks_total counter\n\
         cairn_blocks_total {}\n\
         # HELP cairn_txs_finalized_total Transactions finalized since start.\n# TYPE cairn_txs_finalized_total counter\n\
         cairn_txs_finalized_total {}\n",
        m.admitted.load(Ordering::Relaxed),
        m.refused.load(Ordering::Relaxed),
        m.blocks.load(Ordering::Relaxed),
        m.finalized_txs.load(Ordering::Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// GET /v1/openapi.json
async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

pub use openapi::openapi_document;
