//! The Cairn node: a mempool, block production and finality over the ledger and its store,
//! and the HTTP API.

pub mod api;
pub mod mempool;
pub mod node;

pub use api::{ApiSettings, router};
pub use node::{Finalized, Node, ProducerSettings, StartError, now_ms};

use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// Serves the API on `listener` and produces blocks until `shutdown` resolves; then stops
/// taking requests, lets the block in progress finish its commit, and returns.
pub async fn run(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    api: ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let producer = {
        let node = node.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(node.block_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {}
                }
                let n = node.clone();
                match tokio::task::spawn_blocking(move || n.produce_block()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        // The store refuses further commits once one failed: stop producing
                        // and say why (the API keeps serving what is committed).
                        tracing::error!("block commit failed, no further blocks: {e}");
                        break;
                    }
                    Err(e) => {
                        tracing::error!("block producer panicked: {e}");
                        break;
                    }
                }
            }
        })
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let app = router(node, api);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.changed().await;
        })
        .await?;
    // The producer finishes the commit it is in, then stops.
    let _ = producer.await;
    Ok(())
}
