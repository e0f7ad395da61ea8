//! `GET /v1/events`: finalized activity as server-sent events.
//!
//! Every finalized block sends a `block` event (height, hash, state root, transaction count),
//! so a subscriber always knows how far the chain got. Then the ledger's events: all of them
//! but per-address rewards (`epoch_closed` sums those), or, with `account`, `device` and/or
//! `deployment` given, every event that concerns any of them, rewards included;
//! with `account`, also one `tx` event per transaction that account signed (`final` or
//! `failed` with its code). Each SSE `id` is the block height.
//!
//! Only what finalizes after the subscription is sent. A subscriber too slow to keep up
//! gets a `lagged` event saying how many blocks it missed, and should read the state it cares
//! about from the other endpoints before going on; the stream itself continues.

use super::{ApiError, AppState, query::parse_address};
use crate::node::Finalized;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use cairn_primitives::Address;
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

#[derive(Deserialize)]
pub(super) struct EventQuery {
    account: Option<String>,
    device: Option<String>,
    deployment: Option<u64>,
}

/// What a subscriber asked for: nothing given means everything.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Filter {
    account: Option<Address>,
    device: Option<Address>,
    deployment: Option<u64>,
}

impl Filter {
    fn any(&self) -> bool {
        self.account.is_some() || self.device.is_some() || self.deployment.is_some()
    }

    fn wants(&self, e: &cairn_ledger::Event) -> bool {
        if !self.any() {
            // An epoch close pays every device: one event per address would be a million
            // events for every unfiltered subscriber. `epoch_closed` sums them; each address's
            // rewards are in `/v1/accounts/{a}/rewards` and in its filtered stream.
            return !matches!(
                e,
                cairn_ledger::Event::Reward { .. } | cairn_ledger::Event::StakingReward { .. }
            );
        }
        if self.deployment.is_some() && e.deployment() == self.deployment {
            return true;
        }
        if self.account.is_none() && self.device.is_none() {
            return false;
        }
        e.subjects()
            .iter()
            .any(|a| Some(*a) == self.account || Some(*a) == self.device)
    }

    /// What one finalized block yields for this filter, in order: (event name, data).
    fn items(&self, fin: &Finalized) -> Vec<(String, Value)> {
        let mut out = vec![(
            "block".to_string(),
            json!({
                "height": fin.height,
                "hash": fin.block_hash.to_string(),
                "state_root": fin.state_root.to_string(),
                "txs": fin.txs.len(),
            }),
        )];
        if let Some(acct) = self.account {
            for t in fin.txs.iter().filter(|t| t.sender == acct) {
                let status = if t.error.is_some() { "failed" } else { "final" };
                out.push((
                    "tx".to_string(),
                    json!({"height": fin.height, "hash": t.hash.to_string(),
                            "sender": acct.to_string(), "status": status, "code": t.error}),
                ));
            }
        }
        for (i, e) in &fin.events {
            if !self.wants(e) {
                continue;
            }
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            let kind = v["type"].as_str().unwrap_or("event").to_string();
            v["height"] = json!(fin.height);
            v["tx"] = match i.and_then(|i| fin.txs.get(i as usize)) {
                Some(t) => json!(t.hash.to_string()),
                None => Value::Null,
            };
            out.push((kind, v));
        }
        out
    }

    /// The SSE events one finalized block yields for this filter; the id is the height.
    fn render(&self, fin: &Finalized) -> Vec<SseEvent> {
        let id = fin.height.to_string();
        self.items(fin)
            .into_iter()
            .map(|(kind, data)| {
                SseEvent::default()
                    .event(kind)
                    .id(&id)
                    .data(data.to_string())
            })
            .collect()
    }
}

/// GET /v1/events[?account=A][&device=D][&deployment=N]
pub(super) async fn events(
    State(s): State<AppState>,
    Query(q): Query<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let filter = Filter {
        account: q.account.as_deref().map(parse_address).transpose()?,
        device: q.device.as_deref().map(parse_address).transpose()?,
        deployment: q.deployment,
    };
    struct St {
        rx: tokio::sync::broadcast::Receiver<std::sync::Arc<Finalized>>,
        closing: tokio::sync::watch::Receiver<bool>,
        queue: VecDeque<SseEvent>,
        filter: Filter,
    }
    let st = St {
        rx: s.node.subscribe(),
        closing: s.node.closing(),
        queue: VecDeque::new(),
        filter,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            if *st.closing.borrow() {
                return None;
            }
            tokio::select! {
                r = st.rx.recv() => match r {
                    Ok(fin) => st.queue.extend(st.filter.render(&fin)),
                    Err(RecvError::Lagged(n)) => st.queue.push_back(
                        SseEvent::default()
                            .event("lagged")
                            .data(json!({"missed_blocks": n}).to_string()),
                    ),
                    Err(RecvError::Closed) => return None,
                },
                changed = st.closing.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::FinalTx;
    use cairn_ledger::Event;
    use cairn_primitives::{Amount, Hash};

    fn kinds(f: &Filter, fin: &Finalized) -> Vec<String> {
        f.items(fin).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn filters_pick_what_concerns_the_subscriber() {
        let (alice, bob, dev) = (Address([1; 32]), Address([2; 32]), Address([3; 32]));
        let fin = Finalized {
            height: 7,
            block_hash: Hash::default(),
            state_root: Hash::default(),
            txs: vec![FinalTx {
                hash: Hash([9; 32]),
                sender: alice,
                error: None,
            }],
            events: vec![
                (
                    Some(0),
                    Event::Transfer {
                        from: alice,
                        to: bob,
                        amount: Amount::from_base(5),
                    },
                ),
                (
                    None,
                    Event::LeaseEnded {
                        lease: 4,
                        deployment: 2,
                        device: dev,
                        state: cairn_primitives::LeaseState::Expired,
                        paid: cairn_primitives::PayUnits(10),
                        refunded: cairn_primitives::PayUnits(0),
                    },
                ),
                (
                    None,
                    Event::Reward {
                        account: bob,
                        epoch: 1,
                        capacity: Amount::from_base(3),
                        work: Amount::ZERO,
                        checkers: Amount::ZERO,
                    },
                ),
            ],
        };
        let all = Filter::default();
        assert_eq!(kinds(&all, &fin), ["block", "transfer", "lease_ended"]);
        assert_eq!(all.render(&fin).len(), 3);
        let bob_only = Filter {
            account: Some(bob),
            ..Filter::default()
        };
        assert_eq!(kinds(&bob_only, &fin), ["block", "transfer", "reward"]);
        let alice_only = Filter {
            account: Some(alice),
            ..Filter::default()
        };
        assert_eq!(kinds(&alice_only, &fin), ["block", "tx", "transfer"]);
        let tx = &alice_only.items(&fin)[1].1;
        assert_eq!(
            (tx["status"].as_str(), tx["height"].as_u64()),
            (Some("final"), Some(7))
        );
        let deployment = Filter {
            deployment: Some(2),
            ..Filter::default()
        };
        assert_eq!(kinds(&deployment, &fin), ["block", "lease_ended"]);
        let device = Filter {
            device: Some(dev),
            ..Filter::default()
        };
        assert_eq!(kinds(&device, &fin), ["block", "lease_ended"]);
    }
}
