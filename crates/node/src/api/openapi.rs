//! The OpenAPI 3.1 document served at `/v1/openapi.json`. A test checks that every route the
//! router serves is described here and that nothing described is missing from the router.

use serde_json::{Value, json};

fn err(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}})
}

fn path_param(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": kind}})
}

fn query_param(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "schema": {"type": kind}})
}

fn page_params(cursor: &str, kind: &str) -> [Value; 2] {
    [
        query_param(cursor, kind, "cursor: the `next` of the previous page"),
        query_param("limit", "integer", "items per page: 1 to 1000, default 100"),
    ]
}

/// The OpenAPI 3.1 description of the endpoints this node serves.
pub fn openapi_document() -> Value {
    let address = path_param("address", "string", "base58 address");
    let [after_addr, limit] = page_params("after", "string");
    let [after_id, _] = page_params("after", "integer");
    let [before, _] = page_params("before", "integer");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cairn node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Token amounts are decimal strings in whole tokens; `_base` fields and payment units (credits under bme, token base units under direct) are integers. Lists are paginated by cursor and examine at most 100,000 records per request: a short page with `next` set means there may be more."
        },
        "paths": {
            "/v1/txs": {"post": {
                "summary": "Submit signed transactions",
                "description": "application/octet-stream: one transaction's canonical bytes; application/json: {\"tx\": hex} or {\"txs\": [hex]} (at most 10,000).",
                "responses": {
                    "202": ok("admitted: {hash, status: pending}, or {results: [...]} for a batch, each a {hash, status} or an {error}"),
                    "400": err("malformed_tx, malformed_json, bad_signature, wrong_chain, stale_nonce, nonce_too_high, or the ledger's reason (insufficient_balance, overflow, ...)"),
                    "409": err("duplicate, nonce_taken"),
                    "413": err("body_too_large, batch_too_large"),
                    "503": err("mempool_full, account_pending_limit (with a Retry-After header)")
                }}},
            "/v1/txs/{hash}": {"get": {
                "summary": "Transaction status: pending, final (height, index) or failed (height, index, code)",
                "parameters": [path_param("hash", "string", "transaction hash, hex")],
                "responses": {"200": ok("status"), "400": err("bad_hash"), "404": err("unknown_tx")}}},
            "/v1/accounts/{address}": {"get": {
                "summary": "Balance, nonce, credits, stakes (device, shares, token value) and stake unbonding",
                "parameters": [address, query_param("prove", "boolean", "add an inclusion proof of the account record against `state_root`")],
                "responses": {"200": ok("account"), "400": err("bad_address")}}},
            "/v1/accounts/{address}/rewards": {"get": {
                "summary": "What each closed epoch paid this account (capacity, work, checkers) or device (staking), newest first",
                "parameters": [address, before, limit],
                "responses": {"200": ok("{address, rewards: [{epoch, capacity, work, checkers, staking}], next}"), "400": err("bad_address, bad_query")}}},
            "/v1/devices": {"get": {
                "summary": "Registered devices, by address",
                "parameters": [
                    query_param("class", "string", "class name from the catalog, e.g. H100-SXM or CPU"),
                    query_param("region", "string", "region label"),
                    query_param("status", "string", "active, retired or slashed"),
                    query_param("available", "boolean", "offered for leases"),
                    query_param("owner", "string", "owner address"),
                    after_addr, limit],
                "responses": {"200": ok("{devices: [...], next}"), "400": err("bad_query, unknown_class, bad_address")}}},
            "/v1/devices/{address}": {"get": {
                "summary": "A device: class, spec, region, price, status, stake pool, reputation, the lease it serves",
                "parameters": [path_param("address", "string", "the device key's address")],
                "responses": {"200": ok("device"), "400": err("bad_address"), "404": err("unknown_device")}}},
            "/v1/deployments": {"get": {
                "summary": "Deployments, by id",
                "parameters": [
                    query_param("owner", "string", "the customer's address"),
                    query_param("status", "string", "open, closed or finished"),
                    after_id, limit],
                "responses": {"200": ok("{deployments: [...], next}"), "400": err("bad_query, bad_address")}}},
            "/v1/deployments/{id}": {"get": {
                "summary": "A deployment: request, escrow (deposit, paid, refunded) and its leases",
                "parameters": [path_param("id", "integer", "deployment id")],
                "responses": {"200": ok("deployment"), "404": err("unknown_deployment")}}},
            "/v1/quote": {"post": {
                "summary": "What a deployment would get now: devices, price per hour, deposit. Body: {classes?, min_vram_mib?, gpu_count?, cpu_cores?, ram_mib?, replicas, region?, duration_secs, max_price_per_hour}",
                "responses": {"200": ok("{devices, price_per_hour, duration_secs, deposit, unit}"),
                              "400": err("bad_request, not_enough_capacity, unknown_class, …")}}},
            "/v1/leases/{id}": {"get": {
                "summary": "A lease: device, price, times, payment, state, exit code or the reason it failed, usage",
                "parameters": [path_param("id", "integer", "lease id")],
                "responses": {"200": ok("lease"), "404": err("unknown_lease")}}},
            "/v1/leases/{id}/logs": {
                "get": {
                    "summary": "The lease's job output from `offset` (at most 1 MiB; headers x-cairn-log-length, x-cairn-lease-state). Signed request (x-cairn-key, x-cairn-time, x-cairn-signature) from the deployment's owner",
                    "parameters": [path_param("id", "integer", "lease id"),
                                   query_param("offset", "integer", "first byte, default 0")],
                    "responses": {
                        "200": {"description": "log bytes", "content": {"application/octet-stream": {}}},
                        "401": err("unauthenticated: missing, stale or bad signature"),
                        "403": err("forbidden: not the deployment's owner"),
                        "404": err("unknown_lease")}},
                "post": {
                    "summary": "Append the job's output (the body) at `offset`; bytes already stored are skipped. Signed request from the lease's device",
                    "parameters": [path_param("id", "integer", "lease id"),
                                   query_param("offset", "integer", "where the body starts, default 0")],
                    "responses": {
                        "200": ok("{lease, length}"),
                        "401": err("unauthenticated"),
                        "403": err("forbidden: not the lease's device"),
                        "404": err("unknown_lease"),
                        "409": err("log_gap: starts past the stored length"),
                        "413": err("log_too_large")}}},
            "/v1/rounds": {"get": {
                "summary": "The kept rounds (this epoch's and the last), oldest first: a checker that fell behind reads every round it has not handled",
                "parameters": [query_param("after", "integer", "only rounds started after this height (default 0)"), limit.clone()],
                "responses": {"200": ok("{rounds: [{height, epoch, ts_ms, seed, join, since_height}], next}"), "400": err("bad_query")}}},
            "/v1/rounds/latest": {"get": {
                "summary": "The latest round: its height, epoch, time, seed (each device's nonce is SHA-256 of \"cairn/round/nonce\", the seed and its address), whether it is a join round",
                "responses": {"200": ok("{height, epoch, ts_ms, seed, join, since_height}"), "404": err("no_round")}}},
            "/v1/rounds/{height}": {"get": {
                "summary": "The round a block started (this epoch's and the last are kept)",
                "parameters": [path_param("height", "integer", "the height of the block that started it")],
                "responses": {"200": ok("{height, epoch, ts_ms, seed, join, since_height}"), "400": err("bad_path"), "404": err("unknown_round")}}},
            "/v1/committee": {"get": {
                "summary": "The open epoch's committee: the checkers devices are drawn from, with stake and endpoint",
                "responses": {"200": ok("{epoch, seed, start_height, per_device, members: [{checker, stake, endpoint}]}")}}},
            "/v1/classes": {"get": {
                "summary": "The device class catalog: claims, reward weights, stake multipliers, reference int8 rates and memory bandwidth (a challenge's size and deadlines follow from them)",
                "responses": {"200": ok("{classes: [...]}")}}},
            "/v1/checkers": {"get": {
                "summary": "Checkers by address: endpoint, stake, status, strikes, this epoch's agreeing and posted results",
                "parameters": [after_addr.clone(), limit.clone()],
                "responses": {"200": ok("{checkers: [...], next}"), "400": err("bad_address, bad_query")}}},
            "/v1/checkers/{address}": {"get": {
                "summary": "One checker",
                "parameters": [address.clone()],
                "responses": {"200": ok("checker"), "400": err("bad_address"), "404": err("unknown_checker")}}},
            "/v1/checkers/{address}/devices": {"get": {
                "summary": "The devices assigned to a checker in an epoch, in assignment order: position i is the i-th result of its PostResults",
                "parameters": [address.clone(), query_param("first", "integer", "position to start at (default 0)"), query_param("epoch", "integer", "the open epoch (default) or the one before"), limit.clone()],
                "responses": {"200": ok("{epoch, first, devices: [...], next}"), "400": err("bad_address, bad_query"), "404": err("unknown_checker, unknown_epoch")}}},
            "/v1/epochs": {"get": {
                "summary": "The epoch in progress and closed epochs (minted, burned, each pool and what it has paid so far, devices not yet settled), newest first",
                "parameters": [before, limit],
                "responses": {"200": ok("{current, epochs: [...], next}"), "400": err("bad_query")}}},
            "/v1/epochs/{epoch}": {"get": {
                "summary": "One epoch: its record once closed, or the one in progress",
                "parameters": [path_param("epoch", "integer", "epoch number")],
                "responses": {"200": ok("epoch"), "404": err("unknown_epoch")}}},
            "/v1/stats": {"get": {
                "summary": "Network statistics: devices by status and class, GPUs and cores, deployments, leases, token supply and stake, escrow, oracle price, recent tx/s",
                "responses": {"200": ok("stats")}}},
            "/v1/events": {"get": {
                "summary": "Finalized activity as server-sent events",
                "description": "A `block` event per finalized block; the ledger's events (`transfer`, `device_registered`, `deployment_opened`, `lease_reported`, `lease_ended`, `reward`, ...), all of them but per-address rewards (paid as each device is settled; `epoch_closed` gives the pools), or every event concerning the account, device or deployment given, its `reward`s included; with `account`, a `tx` event per transaction it signed. The SSE id is the block height. A subscriber that falls behind gets `lagged` with the number of blocks missed.",
                "parameters": [
                    query_param("account", "string", "an account address"),
                    query_param("device", "string", "a device address"),
                    query_param("deployment", "integer", "a deployment id")],
                "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "400": err("bad_address")}}},
            "/v1/status": {"get": {
                "summary": "Chain id, height, state root, epoch, supply, pending transactions, validators",
                "responses": {"200": ok("status")}}},
            "/v1/blocks/{height}": {"get": {
                "summary": "A finalized block's header, transaction hashes and the state root after it",
                "parameters": [path_param("height", "integer", "block height")],
                "responses": {"200": ok("block"), "404": err("unknown_block")}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok("OpenAPI 3.1")}}},
            "/healthz": {"get": {"summary": "Liveness: 503 `halted` once a finalized block could not be executed",
                "responses": {"200": {"description": "ok"}, "503": err("halted")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}}
        },
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string"}}}}
        }}}
    })
}
