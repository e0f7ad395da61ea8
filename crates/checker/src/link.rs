//! The connection between a device and a checker: TCP, upgraded by commonware-stream (a SAKE
//! handshake signed by both ed25519 keys, then ChaCha20-Poly1305 records), the same upgrade
//! validators use between themselves. The worker dials (it is never a server) and must reach
//! the checker's on-chain key; the checker admits only keys of registered devices.

use crate::wire::MAX_MESSAGE;
use cairn_primitives::{Address, Keypair, PublicKey};
use commonware_codec::{Encode, Read};
use commonware_cryptography::ChaCha20Poly1305;
use commonware_runtime::{Network as _, SinkOf, StreamOf, Supervisor as _};
use commonware_stream::utils::Timeout;
use commonware_stream::{SakeCups, Upgrader, cups, sake};
use std::net::SocketAddr;
use std::time::Duration;

/// The runtime both sides run the link on.
pub type Ctx = commonware_runtime::tokio::Context;
type Up = Timeout<SakeCups<commonware_cryptography::ed25519::PrivateKey, ChaCha20Poly1305>>;
/// The sending half of an upgraded connection.
pub type LinkSender = <Up as Upgrader>::Sender<StreamOf<Ctx>, SinkOf<Ctx>>;
/// The receiving half of an upgraded connection.
pub type LinkReceiver = <Up as Upgrader>::Receiver<StreamOf<Ctx>, SinkOf<Ctx>>;

/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TCP could not connect or accept.
    #[error("network: {0}")]
    Network(String),
    /// The handshake failed (wrong key, timeout, clock skew).
    #[error("handshake: {0}")]
    Handshake(String),
    /// Sending or receiving failed (the connection is gone).
    #[error("connection: {0}")]
    Io(String),
    /// The peer sent a message that does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The address is not a public key.
    #[error("{0} is not an ed25519 public key")]
    NotAKey(Address),
}

fn upgrader(key: &Keypair) -> Up {
    Timeout::new(
        cups::Cups::new(
            sake::Sake {
                signer: key.private_key().clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        ),
        HANDSHAKE_TIMEOUT,
    )
}

/// The handshake's namespace: bound to the chain, so a connection for one network is refused
/// by another.
pub fn namespace(chain_id: &str) -> Vec<u8> {
    format!("cairn/check/{chain_id}").into_bytes()
}

/// Dials `checker` at `addr` as `device`: succeeds only if the far end holds the checker's key.
pub async fn dial(
    ctx: &Ctx,
    device: &Keypair,
    chain_id: &str,
    checker: &Address,
    addr: SocketAddr,
) -> Result<(LinkSender, LinkReceiver), LinkError> {
    let peer = checker.public_key().ok_or(LinkError::NotAKey(*checker))?;
    let (sink, stream) = ctx
        .dial(addr)
        .await
        .map_err(|e| LinkError::Network(e.to_string()))?;
    upgrader(device)
        .dial(
            ctx.child("link"),
            &namespace(chain_id),
            MAX_MESSAGE,
            peer,
            stream,
            sink,
        )
        .await
        .map_err(|e| LinkError::Handshake(e.to_string()))
}

/// Upgrades an accepted connection as `checker`, admitting the dialer only if `admit` says so
/// for its claimed key (the handshake then proves it holds that key).
pub async fn accept<F>(
    ctx: &Ctx,
    checker: &Keypair,
    chain_id: &str,
    sink: SinkOf<Ctx>,
    stream: StreamOf<Ctx>,
    admit: F,
) -> Result<(PublicKey, LinkSender, LinkReceiver), LinkError>
where
    F: FnOnce(&PublicKey) -> bool + Send + 'static,
{
    upgrader(checker)
        .listen(
            ctx.child("link"),
            &namespace(chain_id),
            MAX_MESSAGE,
            move |k: PublicKey| {
                let ok = admit(&k);
                async move { ok }
            },
            stream,
            sink,
        )
        .await
        .map_err(|e| LinkError::Handshake(e.to_string()))
}

/// Sends one message.
pub async fn send<T: Encode>(s: &mut LinkSender, msg: &T) -> Result<(), LinkError> {
    s.send(msg.encode().to_vec())
        .await
        .map_err(|e| LinkError::Io(e.to_string()))
}

/// Receives one message; a message that does not decode is an error (the caller refuses it
/// and closes the connection).
pub async fn recv<T: Read<Cfg = ()>>(r: &mut LinkReceiver) -> Result<T, LinkError> {
    let bytes = r.recv().await.map_err(|e| LinkError::Io(e.to_string()))?;
    let bytes = bytes.coalesce();
    crate::wire::decode(bytes.as_ref()).map_err(|e| LinkError::Malformed(e.to_string()))
}

/// Resolves `host:port` (blocking: call it off the runtime's threads or before it starts).
pub fn resolve(endpoint: &str) -> Result<SocketAddr, LinkError> {
    use std::net::ToSocketAddrs;
    endpoint
        .to_socket_addrs()
        .map_err(|e| LinkError::Network(format!("{endpoint}: {e}")))?
        .next()
        .ok_or_else(|| LinkError::Network(format!("{endpoint}: no address")))
}
