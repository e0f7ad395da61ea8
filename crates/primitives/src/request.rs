//! Signed API requests: how a device proves it uploads its own lease's logs, and how a
//! customer proves a deployment's logs are theirs to read.
//!
//! Three headers carry the proof: `x-cairn-key` (the signer's address), `x-cairn-time` (ms
//! since the Unix epoch) and `x-cairn-signature` (hex). The signature covers, under its own
//! namespace, the chain id, the method, the path with its query, the time and the SHA-256 of
//! the body: it cannot be moved to another network, endpoint or body, and the node refuses
//! one more than [`MAX_SKEW_MS`] away from its clock (reads are idempotent and uploads are
//! offset-checked, so a replay inside that window changes nothing).

use crate::{Address, Keypair, Signature, sha256, verify_signature};
use commonware_codec::{DecodeExt, Encode};

/// Namespace of request signatures (no transaction or block can be passed off as one).
pub const REQUEST_NAMESPACE: &[u8] = b"cairn/api-request";
/// How far a request's time may be from the node's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Header naming the signer.
pub const HEADER_KEY: &str = "x-cairn-key";
/// Header with the signing time.
pub const HEADER_TIME: &str = "x-cairn-time";
/// Header with the signature.
pub const HEADER_SIGNATURE: &str = "x-cairn-signature";

/// Why a signed request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestAuthError {
    /// A header is absent.
    #[error("the request is not signed: header {0} is missing")]
    Missing(&'static str),
    /// A header does not parse.
    #[error("header {0} is malformed")]
    Malformed(&'static str),
    /// The time is too far from the node's.
    #[error("the request was signed {0} ms away from the node's clock (at most {MAX_SKEW_MS})")]
    Stale(u64),
    /// The signature does not verify.
    #[error("the request's signature does not verify")]
    BadSignature,
}

fn message(chain_id: &str, method: &str, path: &str, time_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(chain_id.len() + method.len() + path.len() + 64);
    for part in [chain_id.as_bytes(), method.as_bytes(), path.as_bytes()] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&time_ms.to_be_bytes());
    m.extend_from_slice(&sha256(&[body]).0);
    m
}

/// The three headers signing `method path` with `body` at `time_ms`.
pub fn sign_request(
    key: &Keypair,
    chain_id: &str,
    method: &str,
    path: &str,
    time_ms: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let sig = key.sign(
        REQUEST_NAMESPACE,
        &message(chain_id, method, path, time_ms, body),
    );
    [
        (HEADER_KEY, key.address().to_string()),
        (HEADER_TIME, time_ms.to_string()),
        (HEADER_SIGNATURE, hex::encode(sig.encode())),
    ]
}

/// Who signed the request, given a header lookup; checks the time against `now_ms`.
pub fn verify_request<'a>(
    chain_id: &str,
    method: &str,
    path: &str,
    header: impl Fn(&'static str) -> Option<&'a str>,
    body: &[u8],
    now_ms: u64,
) -> Result<Address, RequestAuthError> {
    let get = |h| header(h).ok_or(RequestAuthError::Missing(h));
    let signer: Address = get(HEADER_KEY)?
        .parse()
        .map_err(|_| RequestAuthError::Malformed(HEADER_KEY))?;
    let time_ms: u64 = get(HEADER_TIME)?
        .parse()
        .map_err(|_| RequestAuthError::Malformed(HEADER_TIME))?;
    let sig_bytes = hex::decode(get(HEADER_SIGNATURE)?)
        .map_err(|_| RequestAuthError::Malformed(HEADER_SIGNATURE))?;
    let sig = Signature::decode(commonware_codec::Copying(&sig_bytes[..]))
        .map_err(|_| RequestAuthError::Malformed(HEADER_SIGNATURE))?;
    let skew = now_ms.abs_diff(time_ms);
    if skew > MAX_SKEW_MS {
        return Err(RequestAuthError::Stale(skew));
    }
    let key = signer
        .public_key()
        .ok_or(RequestAuthError::Malformed(HEADER_KEY))?;
    if !verify_signature(
        &key,
        REQUEST_NAMESPACE,
        &message(chain_id, method, path, time_ms, body),
        &sig,
    ) {
        return Err(RequestAuthError::BadSignature);
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_chain_method_path_time_and_body() {
        let k = Keypair::from_seed([3; 32]);
        let h = sign_request(&k, "c1", "GET", "/v1/leases/1/logs?offset=0", 1_000, b"");
        let map: std::collections::HashMap<&str, String> = h.into_iter().collect();
        let ok = |chain, method, path, body: &[u8], now| {
            verify_request(
                chain,
                method,
                path,
                |n| map.get(n).map(String::as_str),
                body,
                now,
            )
        };
        assert_eq!(
            ok("c1", "GET", "/v1/leases/1/logs?offset=0", b"", 1_500),
            Ok(k.address())
        );
        let bad = Err(RequestAuthError::BadSignature);
        assert_eq!(
            ok("c2", "GET", "/v1/leases/1/logs?offset=0", b"", 1_500),
            bad
        );
        assert_eq!(
            ok("c1", "POST", "/v1/leases/1/logs?offset=0", b"", 1_500),
            bad
        );
        assert_eq!(
            ok("c1", "GET", "/v1/leases/2/logs?offset=0", b"", 1_500),
            bad
        );
        assert_eq!(
            ok("c1", "GET", "/v1/leases/1/logs?offset=0", b"x", 1_500),
            bad
        );
        assert_eq!(
            ok(
                "c1",
                "GET",
                "/v1/leases/1/logs?offset=0",
                b"",
                1_000 + MAX_SKEW_MS + 1
            ),
            Err(RequestAuthError::Stale(MAX_SKEW_MS + 1))
        );
        assert_eq!(
            verify_request("c1", "GET", "/", |_| None, b"", 0),
            Err(RequestAuthError::Missing(HEADER_KEY))
        );
    }
}
