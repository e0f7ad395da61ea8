//! Read endpoints for checking: rounds, the committee, checkers and their devices.

use super::query::{checker_json, device_json, parse_address, round_json};
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

/// GET /v1/rounds/latest
pub(super) async fn latest_round(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    s.node.with_ledger(|l| {
        let h = l.globals().last_round;
        let r = l
            .round(h)
            .ok_or_else(|| ApiError::not_found("no_round", "no round has started yet"))?;
        Ok(Json(round_json(h, r)))
    })
}

#[derive(Deserialize)]
pub(super) struct RoundsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// GET /v1/rounds: the kept rounds (this epoch's and the one before), oldest first, those
/// started after height `after`; `next` is the `after` of the next page.
pub(super) async fn rounds(
    State(s): State<AppState>,
    Query(q): Query<RoundsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = super::query::limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    s.node.with_ledger(|l| {
        let list: Vec<(u64, &cairn_primitives::Round)> =
            l.rounds_after(after, limit.saturating_add(1)).collect();
        let next = (list.len() > limit)
            .then(|| list.get(limit.saturating_sub(1)).map(|(h, _)| *h))
            .flatten();
        let out: Vec<Value> = list
            .iter()
            .take(limit)
            .map(|(h, r)| round_json(*h, r))
            .collect();
        Ok(Json(json!({"rounds": out, "next": next})))
    })
}

/// GET /v1/rounds/{height}
pub(super) async fn round(
    State(s): State<AppState>,
    Path(height): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    s.node.with_ledger(|l| {
        let r = l.round(height).ok_or_else(|| {
            ApiError::not_found(
                "unknown_round",
                format!(
                    "no round started at height {height} (only this epoch's and the last are kept)"
                ),
            )
        })?;
        Ok(Json(round_json(height, r)))
    })
}

/// GET /v1/classes: the chain's device class catalog (what each class claims, its weight,
/// stake multiplier and reference rates: what a challenge's size and deadlines come from).
pub(super) async fn classes(State(s): State<AppState>) -> Json<Value> {
    Json(
        s.node
            .with_ledger(|l| json!({"classes": l.params().classes})),
    )
}

/// GET /v1/committee: the open epoch's committee, with each member's endpoint.
pub(super) async fn committee(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    s.node.with_ledger(|l| {
        let epoch = l.globals().epoch;
        let Some(c) = l.committee() else {
            return Ok(Json(json!({"epoch": epoch, "members": []})));
        };
        let members: Vec<Value> = c
            .members
            .iter()
            .map(|m| {
                json!({
                    "checker": m.checker.to_string(),
                    "stake": m.stake.display(l.params().decimals),
                    "endpoint": l.checker(&m.checker).map(|x| x.endpoint.to_string()),
                })
            })
            .collect();
        Ok(Json(json!({
            "epoch": epoch,
            "seed": c.seed.to_string(),
            "start_height": c.start_height,
            "per_device": l.params().checking.committee,
            "members": members,
        })))
    })
}

#[derive(Deserialize)]
pub(super) struct CheckersQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// GET /v1/checkers
pub(super) async fn checkers(
    State(s): State<AppState>,
    Query(q): Query<CheckersQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = super::query::limit(q.limit)?;
    let after = q.after.as_deref().map(parse_address).transpose()?;
    s.node.with_ledger(|l| {
        let list = l.checkers_after(after, limit.saturating_add(1));
        let next = (list.len() > limit).then(|| list.get(limit - 1).map(|(a, _)| a.to_string()));
        let out: Vec<Value> = list
            .iter()
            .take(limit)
            .map(|(a, c)| checker_json(a, c, l))
            .collect();
        Ok(Json(json!({"checkers": out, "next": next.flatten()})))
    })
}

/// GET /v1/checkers/{address}
pub(super) async fn checker(
    State(s): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = parse_address(&address)?;
    s.node.with_ledger(|l| {
        let c = l
            .checker(&a)
            .ok_or_else(|| ApiError::not_found("unknown_checker", format!("no checker {a}")))?;
        Ok(Json(checker_json(&a, c, l)))
    })
}

#[derive(Deserialize)]
pub(super) struct DevicesQuery {
    first: Option<usize>,
    limit: Option<usize>,
    epoch: Option<u64>,
}

/// GET /v1/checkers/{address}/devices: the devices assigned to it in `epoch` (default: the
/// open one; the one before is also kept), in assignment order (the positions its
/// `PostResults` use), from position `first`.
pub(super) async fn checker_devices(
    State(s): State<AppState>,
    Path(address): Path<String>,
    Query(q): Query<DevicesQuery>,
) -> Result<Json<Value>, ApiError> {
    let a = parse_address(&address)?;
    let limit = super::query::limit(q.limit)?;
    let first = q.first.unwrap_or(0);
    s.node.with_ledger(|l| {
        if l.checker(&a).is_none() {
            return Err(ApiError::not_found(
                "unknown_checker",
                format!("no checker {a}"),
            ));
        }
        let open = l.globals().epoch;
        let epoch = q.epoch.unwrap_or(open);
        if epoch != open && epoch.saturating_add(1) != open {
            return Err(ApiError::not_found(
                "unknown_epoch",
                format!(
                    "epoch {epoch}'s assignment is not kept (only epochs {} and {open})",
                    open.saturating_sub(1)
                ),
            ));
        }
        let list = l.devices_of(&a, epoch, first, limit.saturating_add(1));
        let more = list.len() > limit;
        let out: Vec<Value> = list
            .iter()
            .take(limit)
            .filter_map(|d| Some(device_json(d, l.device(d)?, l)))
            .collect();
        let next = more.then(|| first.saturating_add(limit));
        Ok(Json(json!({
            "epoch": epoch,
            "first": first,
            "devices": out,
            "next": next,
        })))
    })
}
