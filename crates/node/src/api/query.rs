//! Read endpoints over the ledger's records: devices, deployments, leases, epochs, rewards and
//! network statistics.
//!
//! Lists are paginated by cursor (`after` an address or id, `limit` at most [`MAX_LIMIT`]) and
//! never walk more than [`SCAN_BUDGET`] records under the node's lock in one request: a page
//! that ran out of budget comes back short, with `next` set, so a sparse filter over a million
//! devices costs several cheap requests rather than one that stalls block execution.

use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use cairn_ledger::Ledger;
use cairn_primitives::{
    Address, Amount, Deployment, DeploymentStatus, Device, DeviceStatus, Lease, Params,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

/// Most items in one page.
pub(super) const MAX_LIMIT: usize = 1_000;
/// Items in a page when the request does not say.
pub(super) const DEFAULT_LIMIT: usize = 100;
/// Most records one list request examines.
pub(super) const SCAN_BUDGET: usize = 100_000;

pub(super) fn limit(l: Option<usize>) -> Result<usize, ApiError> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::bad("bad_query", "limit must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad(
            "bad_query",
            format!("limit must be at most {MAX_LIMIT}"),
        )),
        Some(n) => Ok(n),
    }
}

/// One page of a list in key order, from strictly after `after`: at most `limit` items
/// `keep` accepts, examining at most [`SCAN_BUDGET`] records. Returns the items and, when the
/// walk stopped before the end, the cursor to resume from (the last key examined).
fn page<'a, K: Copy + 'a, V: 'a>(
    records: impl Iterator<Item = (&'a K, &'a V)>,
    after: Option<K>,
    limit: usize,
    keep: impl Fn(&V) -> bool,
    render: impl Fn(&K, &V) -> Value,
) -> (Vec<Value>, Option<K>) {
    let mut out = Vec::new();
    let mut last = after;
    for (scanned, (k, v)) in records.enumerate() {
        if out.len() == limit || scanned == SCAN_BUDGET {
            return (out, last);
        }
        last = Some(*k);
        if keep(v) {
            out.push(render(k, v));
        }
    }
    (out, None)
}

/// The status a query names, among `known` (name, value) pairs.
fn parse_status<T: Copy>(given: Option<&str>, known: &[(&str, T)]) -> Result<Option<T>, ApiError> {
    let Some(g) = given else { return Ok(None) };
    known
        .iter()
        .find(|(name, _)| *name == g)
        .map(|(_, v)| Some(*v))
        .ok_or_else(|| {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            ApiError::bad(
                "bad_query",
                format!("status '{g}' is not one of {}", names.join(", ")),
            )
        })
}

pub(super) fn parse_address(s: &str) -> Result<Address, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad("bad_address", "address must be base58 of 32 bytes"))
}

fn tokens(a: Amount, p: &Params) -> String {
    a.display(p.decimals)
}

/// The token value of `shares` of a pool.
fn share_value(d: &Device, shares: u64) -> Amount {
    if d.pool.shares == 0 {
        return Amount::ZERO;
    }
    let v = u128::from(d.pool.tokens.base()) * u128::from(shares) / u128::from(d.pool.shares);
    Amount::from_base(u64::try_from(v).unwrap_or(u64::MAX))
}

pub(super) fn device_json(a: &Address, d: &Device, l: &Ledger) -> Value {
    let p = l.params();
    // Rewards a closed epoch owes it, paid by its next transaction or a SettleRewards.
    let pending = l.pending_settlement(a).map(|s| {
        json!({
            "epoch": s.epoch,
            "capacity": tokens(s.capacity, p),
            "work": tokens(s.work, p),
            "stake": tokens(s.stake, p),
            "reputation_ppm": s.reputation_ppm,
        })
    });
    let class = p.classes.get(usize::from(d.class));
    let cpu = class.is_some_and(|c| c.kind == cairn_primitives::ClassKind::Cpu);
    let class = class.map_or("?", |c| c.name.as_str());
    json!({
        "address": a.to_string(),
        "owner": d.owner.to_string(),
        "class": class,
        "spec": d.spec,
        "region": d.region.as_str(),
        "price_per_hour": d.price_per_hour,
        "status": d.status,
        "available": d.available,
        "lease": d.lease,
        "reputation_ppm": d.reputation_ppm,
        "stake": {
            "tokens": tokens(d.pool.tokens, p),
            "shares": d.pool.shares,
            "required": tokens(d.required_stake, p),
        },
        "registered_ms": d.registered_ms,
        "verification": {
            "status": d.standing.status,
            "registered_height": d.standing.registered_height,
            "last_pass_epoch": d.standing.last_pass_epoch,
            "jailed_until_epoch": d.standing.jailed_until_epoch,
            "consecutive_fails": d.standing.fails,
            "round": d.standing.round,
            "verdict": d.standing.verdict,
            "lease_ended_ms": d.standing.lease_ended_ms,
            // A CPU class's cores as its latest pass measured them (what matching and
            // capacity rewards count, at most `spec.cpu_cores`); null for a GPU class.
            "cores": cpu.then_some(d.standing.cores),
            "results": l.results_of(d).iter().map(|(checker, v)| json!({
                "checker": checker.map(|c| c.to_string()),
                "code": v.code,
                "uptime": v.uptime,
                "cores": cpu.then_some(v.cores),
            })).collect::<Vec<_>>(),
            "checkers": l.checkers_of(a).iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        },
        "epoch_tally": {
            "epoch": d.tally_epoch,
            "verdict": d.tally_verdict,
            "uptime_ppm": cairn_ledger::assign::uptime_ppm(d.tally_uptime),
            "work": d.work,
        },
        "pending_rewards": pending,
    })
}

pub(super) fn round_json(height: u64, r: &cairn_primitives::Round) -> Value {
    json!({
        "height": height,
        "epoch": r.epoch,
        "ts_ms": r.ts_ms,
        "seed": r.seed.to_string(),
        "join": r.join,
        "since_height": r.since_height,
    })
}

pub(super) fn checker_json(a: &Address, c: &cairn_primitives::Checker, l: &Ledger) -> Value {
    let p = l.params();
    let epoch = l.globals().epoch;
    let in_committee = l
        .committee()
        .is_some_and(|m| m.members.iter().any(|x| x.checker == *a));
    json!({
        "address": a.to_string(),
        "endpoint": c.endpoint.as_str(),
        "stake": tokens(c.stake, p),
        "status": c.status,
        "since_epoch": c.since_epoch,
        "jailed_until_epoch": c.jailed_until_epoch,
        "strikes": c.strikes,
        "in_committee": in_committee,
        "open_disputes": l
            .disputes_of(a)
            .iter()
            .map(|(d, r)| json!({"device": d.to_string(), "round": r}))
            .collect::<Vec<_>>(),
        "epoch_tally": {
            "epoch": c.tally_epoch,
            "agreed": if c.tally_epoch == epoch { c.agreed } else { 0 },
            "posted": if c.tally_epoch == epoch { c.posted } else { 0 },
        },
    })
}

fn lease_json(id: u64, l: &Lease) -> Value {
    json!({
        "id": id,
        "deployment": l.deployment,
        "device": l.device.to_string(),
        "state": l.state,
        "price_per_hour": l.price_per_hour,
        "start_ms": l.start_ms,
        "end_ms": l.end_ms,
        "settled_ms": l.settled_ms,
        "last_seen_ms": l.last_seen_ms,
        "reason": l.reason.as_ref().map(|r| r.as_str()),
        "paid": l.paid,
        "deposit": l.deposit,
        "started": l.started,
        "exit_code": l.exit_code,
        "usage": l.usage,
    })
}

fn deployment_json(id: u64, d: &Deployment, leases: Option<Vec<Value>>) -> Value {
    let r = &d.request;
    let mut v = json!({
        "id": id,
        "owner": d.owner.to_string(),
        "status": d.status,
        "created_ms": d.created_ms,
        "replicas": r.replicas,
        "duration_secs": r.duration_secs,
        "max_price_per_hour": r.max_price_per_hour,
        "region": r.region.as_ref().map(|s| s.as_str()),
        "resources": {
            "classes": r.resources.classes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "min_vram_mib": r.resources.min_vram_mib,
            "gpu_count": r.resources.gpu_count,
            "cpu_cores": r.resources.cpu_cores,
            "ram_mib": r.resources.ram_mib,
        },
        "job": {
            "image": r.job.image.as_ref().map(|s| s.as_str()),
            "command": r.job.command.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "env": r.job.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            "network": r.job.network,
            // Public anyway (the transaction is on chain); the worker runs the job with them.
            "environment": r.job.env.iter().map(|(k, v)| (k.to_string(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
        },
        "deposit": d.deposit,
        "paid": d.paid,
        "refunded": d.refunded,
        "leases": d.leases,
    });
    if let Some(l) = leases {
        v["leases"] = Value::Array(l);
    }
    v
}

#[derive(Deserialize)]
pub(super) struct DeviceQuery {
    class: Option<String>,
    region: Option<String>,
    status: Option<String>,
    available: Option<bool>,
    owner: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// GET /v1/devices: filter by class, region, status, availability, owner; paginated.
pub(super) async fn devices(
    State(s): State<AppState>,
    Query(q): Query<DeviceQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(q.limit)?;
    let after = q.after.as_deref().map(parse_address).transpose()?;
    let owner = q.owner.as_deref().map(parse_address).transpose()?;
    let status = parse_status(
        q.status.as_deref(),
        &[
            ("active", DeviceStatus::Active),
            ("retired", DeviceStatus::Retired),
            ("slashed", DeviceStatus::Slashed),
        ],
    )?;
    Ok(Json(s.node.with_ledger(|l| {
        let p = l.params();
        let class = match &q.class {
            None => None,
            Some(name) => match p.class_by_name(name) {
                Some((id, _)) => Some(id),
                None => {
                    return Err(ApiError::bad(
                        "unknown_class",
                        format!("no class '{name}' in this chain's catalog"),
                    ));
                }
            },
        };
        let keep = |d: &Device| {
            class.is_none_or(|c| d.class == c)
                && q.region.as_deref().is_none_or(|r| d.region.as_str() == r)
                && status.is_none_or(|st| d.status == st)
                && q.available.is_none_or(|av| d.available == av)
                && owner.is_none_or(|o| d.owner == o)
        };
        let (out, next) = page(l.devices_after(after), after, limit, keep, |a, d| {
            device_json(a, d, l)
        });
        let next = next.map(|a| a.to_string());
        Ok(json!({"devices": out, "next": next}))
    })?))
}

/// GET /v1/devices/{address}
pub(super) async fn device(
    State(s): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = parse_address(&address)?;
    s.node.with_ledger(|l| {
        let d = l
            .device(&a)
            .ok_or_else(|| ApiError::not_found("unknown_device", format!("no device {a}")))?;
        let mut v = device_json(&a, d, l);
        v["lease"] = match d.lease {
            Some(id) => l.lease(id).map_or(Value::Null, |x| lease_json(id, x)),
            None => Value::Null,
        };
        Ok(Json(v))
    })
}

#[derive(Deserialize)]
pub(super) struct DeploymentQuery {
    owner: Option<String>,
    status: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// GET /v1/deployments: filter by owner and status; paginated by id.
pub(super) async fn deployments(
    State(s): State<AppState>,
    Query(q): Query<DeploymentQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(q.limit)?;
    let owner = q.owner.as_deref().map(parse_address).transpose()?;
    let status = parse_status(
        q.status.as_deref(),
        &[
            ("open", DeploymentStatus::Open),
            ("closed", DeploymentStatus::Closed),
            ("finished", DeploymentStatus::Finished),
        ],
    )?;
    Ok(Json(s.node.with_ledger(|l| {
        let (out, next) = page(
            l.deployments_after(q.after),
            q.after,
            limit,
            |d: &Deployment| {
                owner.is_none_or(|o| d.owner == o) && status.is_none_or(|st| d.status == st)
            },
            |id, d| deployment_json(*id, d, None),
        );
        json!({"deployments": out, "next": next})
    })))
}

/// GET /v1/deployments/{id}: the deployment with its leases.
pub(super) async fn deployment(
    State(s): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    s.node.with_ledger(|l| {
        let d = l.deployment(id).ok_or_else(|| {
            ApiError::not_found("unknown_deployment", format!("no deployment {id}"))
        })?;
        let leases = d
            .leases
            .iter()
            .filter_map(|i| l.lease(*i).map(|x| lease_json(*i, x)))
            .collect();
        Ok(Json(deployment_json(id, d, Some(leases))))
    })
}

/// GET /v1/leases/{id}
pub(super) async fn lease(
    State(s): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    s.node.with_ledger(|l| {
        l.lease(id)
            .map(|x| Json(lease_json(id, x)))
            .ok_or_else(|| ApiError::not_found("unknown_lease", format!("no lease {id}")))
    })
}

#[derive(Deserialize)]
pub(super) struct EpochQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

fn epoch_json(r: &cairn_primitives::EpochRecord, p: &Params) -> Value {
    json!({
        "epoch": r.epoch,
        "status": "closed",
        "closed_at_height": r.closed_at_height,
        "minted": tokens(r.minted, p),
        "burned": tokens(r.burned, p),
        "pools": {
            "capacity": tokens(r.capacity_pool, p),
            "work": tokens(r.work_pool, p),
            "stakers": tokens(r.stakers_pool, p),
            "checkers": tokens(r.checkers, p),
        },
        "paid": {
            "capacity": tokens(r.capacity, p),
            "work": tokens(r.work, p),
            "stakers": tokens(r.stakers, p),
            "checkers": tokens(r.checkers, p),
            "treasury": tokens(r.treasury, p),
        },
        "devices_rewarded": r.devices_rewarded,
        "weights": {
            "capacity": r.capacity_weight.to_string(),
            "work": r.work_weight.to_string(),
            "stake": r.stake_weight.to_string(),
        },
        "unsettled_devices": r.unsettled,
        "unpaid": tokens(r.unpaid, p),
    })
}

fn current_epoch_json(l: &Ledger) -> Value {
    let g = l.globals();
    let p = l.params();
    json!({
        "epoch": g.epoch,
        "status": "in_progress",
        "ends_ms": p.genesis_time_ms.saturating_add(p.epoch_ms.saturating_mul(g.epoch + 1)),
        "burned": tokens(g.epoch_burned, p),
    })
}

/// GET /v1/epochs: the epoch in progress and closed epochs, newest first.
pub(super) async fn epochs(
    State(s): State<AppState>,
    Query(q): Query<EpochQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(q.limit)?;
    Ok(Json(s.node.with_ledger(|l| {
        let list: Vec<Value> = l
            .epochs_before(q.before)
            .take(limit)
            .map(|r| epoch_json(r, l.params()))
            .collect();
        let next = (list.len() == limit)
            .then(|| list.last().and_then(|v| v["epoch"].as_u64()))
            .flatten();
        json!({"current": current_epoch_json(l), "epochs": list, "next": next})
    })))
}

/// GET /v1/epochs/{epoch}
pub(super) async fn epoch(
    State(s): State<AppState>,
    Path(e): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    s.node.with_ledger(|l| {
        if let Some(r) = l.epoch(e) {
            return Ok(Json(epoch_json(r, l.params())));
        }
        if e == l.globals().epoch {
            return Ok(Json(current_epoch_json(l)));
        }
        Err(ApiError::not_found(
            "unknown_epoch",
            format!("epoch {e} has not started, or closed without a record"),
        ))
    })
}

/// GET /v1/accounts/{address}/rewards: what each epoch paid this account (or device), newest
/// first.
pub(super) async fn rewards(
    State(s): State<AppState>,
    Path(address): Path<String>,
    Query(q): Query<EpochQuery>,
) -> Result<Json<Value>, ApiError> {
    let a = parse_address(&address)?;
    let limit = limit(q.limit)?;
    let node = s.node.clone();
    let (list, decimals) = tokio::task::spawn_blocking(move || {
        let decimals = node.with_ledger(|l| l.params().decimals);
        node.with_chain(|c| c.rewards(&a, q.before, limit))
            .map(|r| (r, decimals))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let t = |x: u64| Amount::from_base(x).display(decimals);
    let next = (list.len() == limit)
        .then(|| list.last().map(|r| r.epoch))
        .flatten();
    let rewards: Vec<Value> = list
        .iter()
        .map(|r| {
            json!({
                "epoch": r.epoch,
                "capacity": t(r.capacity),
                "work": t(r.work),
                "checkers": t(r.checkers),
                "staking": t(r.staking),
            })
        })
        .collect();
    Ok(Json(
        json!({"address": a.to_string(), "rewards": rewards, "next": next}),
    ))
}

/// What `/v1/accounts/{a}` adds about stake: delegations (with their token value) and stake
/// unbonding.
pub(super) fn stakes_json(l: &Ledger, a: &Address) -> (Value, Value) {
    let p = l.params();
    let stakes: Vec<Value> = l
        .stakes_of(a)
        .into_iter()
        .map(|(dev, shares)| {
            let value = l
                .device(&dev)
                .map_or(Amount::ZERO, |d| share_value(d, shares));
            json!({"device": dev.to_string(), "shares": shares, "tokens": tokens(value, p)})
        })
        .collect();
    let unbonding: Vec<Value> = l
        .unbondings()
        .filter(|(_, u)| u.owner == *a)
        .map(|(id, u)| json!({"id": id, "amount": tokens(u.amount, p), "release_ms": u.release_ms}))
        .collect();
    (Value::Array(stakes), Value::Array(unbonding))
}

/// Counting statistics walks every device and deployment under the node's lock; on a large
/// network an answer is reused for this many times as long as counting took, so that
/// statistics never hold the lock more than a tenth of the time. On a small one every new
/// block is counted afresh.
const STATS_REUSE_FACTOR: u32 = 10;

/// GET /v1/stats: the network at a glance.
pub(super) async fn stats(State(s): State<AppState>) -> Json<Value> {
    let height = s.node.height();
    {
        let cache = s.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h, at, cost, v)) = &*cache
            && (*h == height || at.elapsed() < *cost * STATS_REUSE_FACTOR)
        {
            return Json(v.clone());
        }
    }
    let tps = s.node.recent_tps();
    let started = Instant::now();
    let v = s.node.with_ledger(|l| {
        let p = l.params();
        let g = l.globals();
        let mut by_class: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        let (mut active, mut retired, mut slashed, mut leased) = (0u64, 0u64, 0u64, 0u64);
        let (mut gpus, mut cores, mut counted) = (0u64, 0u64, 0u64);
        for (_, d) in l.devices() {
            match d.status {
                DeviceStatus::Active => active += 1,
                DeviceStatus::Retired => retired += 1,
                DeviceStatus::Slashed => slashed += 1,
            }
            if d.status != DeviceStatus::Active {
                continue;
            }
            let class = p.classes.get(usize::from(d.class));
            if class.is_some_and(|c| c.kind == cairn_primitives::ClassKind::Cpu)
                && d.standing.status == cairn_primitives::CheckStatus::Verified
            {
                counted += u64::from(d.standing.cores);
            }
            let name = class.map_or("?", |c| c.name.as_str());
            let e = by_class.entry(name).or_default();
            e.0 += 1;
            if d.lease.is_some() {
                e.1 += 1;
                leased += 1;
            }
            e.2 += u64::from(d.spec.gpu_count.max(1));
            gpus += u64::from(d.spec.gpu_count);
            cores += u64::from(d.spec.cpu_cores);
        }
        let (mut open, mut total) = (0u64, 0u64);
        for (_, d) in l.deployments_after(None) {
            total += 1;
            open += u64::from(d.status == DeploymentStatus::Open);
        }
        let now = g.last_timestamp_ms;
        json!({
            "height": g.height,
            "epoch": g.epoch,
            "tx_per_sec": tps,
            "devices": {
                "active": active,
                "retired": retired,
                "slashed": slashed,
                "leased": leased,
                "marketable": l.marketable_devices(),
                "gpus": gpus,
                "cpu_cores": cores,
                "cpu_cores_counted": counted,
                "by_class": by_class.iter().map(|(k, (n, busy, _))| {
                    (k.to_string(), json!({"active": n, "leased": busy}))
                }).collect::<serde_json::Map<_, _>>(),
            },
            "deployments": {"open": open, "total": total},
            "leases": {"active": l.active_leases(), "total": g.next_lease},
            "tokens": {
                "supply": tokens(g.supply, p),
                "minted": tokens(g.minted, p),
                "burned": tokens(g.burned, p),
                "staked": tokens(g.staked, p),
                "unbonding": tokens(g.unbonding, p),
            },
            "payment_model": p.payment_model,
            "escrow": g.escrow,
            "credits_outstanding": g.credits_outstanding,
            "oracle_price_micro_usd": l.oracle_price(now),
        })
    });
    let cost = started.elapsed();
    *s.stats.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((height, Instant::now(), cost, v.clone()));
    Json(v)
}

/// What a customer asks a quote for (the fields of an `OpenDeployment`, without the job).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QuoteRequest {
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    min_vram_mib: u64,
    #[serde(default)]
    gpu_count: u16,
    #[serde(default)]
    cpu_cores: u32,
    #[serde(default)]
    ram_mib: u64,
    replicas: u16,
    region: Option<String>,
    duration_secs: u64,
    max_price_per_hour: u64,
}

/// POST /v1/quote: the devices a deployment would get now, their prices, and the deposit.
/// Matching in the block uses that block's hash for ties, so among equally priced devices
/// the ones booked may differ; the price per hour and the deposit do not.
pub(super) async fn quote(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    use cairn_primitives::{BoundedString, JobSpec, OpenDeployment, Resources};
    let q: QuoteRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("bad_request", format!("quote request: {e}")))?;
    let text = |s: &str, what: &str| {
        BoundedString::new(s).map_err(|e| ApiError::bad("bad_request", format!("{what}: {e}")))
    };
    let o = OpenDeployment {
        resources: Resources {
            classes: q
                .classes
                .iter()
                .map(|c| text(c, "class"))
                .collect::<Result<_, _>>()?,
            min_vram_mib: q.min_vram_mib,
            gpu_count: q.gpu_count,
            cpu_cores: q.cpu_cores,
            ram_mib: q.ram_mib,
        },
        replicas: q.replicas,
        region: q.region.as_deref().map(|r| text(r, "region")).transpose()?,
        duration_secs: q.duration_secs,
        max_price_per_hour: cairn_primitives::PayUnits(q.max_price_per_hour),
        job: JobSpec::default(),
    };
    s.node.with_ledger(|l| {
        let seed = cairn_primitives::Address(l.globals().last_block.0);
        let picked = l
            .quote(&o, seed)
            .map_err(|e| ApiError::bad(e.code(), e.to_string()))?;
        // Display sums for the quote (at most 64 replicas); the ledger's own are checked.
        let per_hour = picked.iter().fold(0u64, |t, p| t.saturating_add(p.1.0));
        let deposit = picked.iter().fold(0u64, |t, p| t.saturating_add(p.2.0));
        let devices: Vec<Value> = picked
            .iter()
            .map(|(a, price, dep)| {
                json!({"device": a.to_string(), "price_per_hour": price, "deposit": dep,
                       "region": l.device(a).map_or("", |d| d.region.as_str())})
            })
            .collect();
        Ok(Json(json!({
            "devices": devices,
            "price_per_hour": per_hour,
            "duration_secs": o.duration_secs,
            "deposit": deposit,
            "unit": match l.params().payment_model {
                cairn_primitives::PaymentModel::Bme => "credits",
                cairn_primitives::PaymentModel::Direct => "base tokens",
            },
        })))
    })
}
