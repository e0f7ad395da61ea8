//! A blocking HTTP client for a Cairn node's `/v1` API: what the CLI, the worker, devnet and
//! the benches use. Errors carry the node's stable error code.
//!
//! ```no_run
//! use cairn_primitives::{Amount, Keypair, TxBody};
//! let client = cairn_client::Client::new("http://127.0.0.1:7650");
//! println!("height {}", client.status()?["height"]);
//! let alice = Keypair::from_seed([1; 32]);
//! let to = Keypair::from_seed([2; 32]).address();
//! let body = TxBody::Transfer { to, amount: Amount::from_base(5) };
//! let hash = client.sign_and_submit(&alice, None, body)?;
//! client.wait_final(&hash, std::time::Duration::from_secs(30))?;
//! # Ok::<(), cairn_client::Error>(())
//! ```

use cairn_primitives::request::sign_request;
use cairn_primitives::wire::Encode;
use cairn_primitives::{Address, Amount, Hash, Keypair, SignedTx, Tx, TxBody};
use serde_json::Value;
use std::time::{Duration, Instant};

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an error.
    #[error("node refused ({status} {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The node could not be reached.
    #[error("cannot reach the node at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer was not what the API describes.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    /// Waiting for finality ran out of time.
    #[error("transaction {0} is not final after {1:?}; check later with `cairn tx status {0}`")]
    Timeout(Hash, Duration),
}

/// Milliseconds since the Unix epoch (what signed requests carry).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A piece of a lease's output ([`Client::lease_logs`]).
#[derive(Debug)]
pub struct LogChunk {
    /// The bytes from the offset asked.
    pub bytes: Vec<u8>,
    /// The output's length so far.
    pub total: u64,
    /// Whether the lease is still running (more output may come).
    pub active: bool,
}

/// A node's API.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7650`).
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// The node's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    fn finish(&self, resp: ureq::http::Response<ureq::Body>) -> Result<Value, Error> {
        let status = resp.status().as_u16();
        let body: Value = resp
            .into_body()
            .read_json()
            .map_err(|e| Error::Protocol(format!("status {status}, body is not JSON: {e}")))?;
        if status >= 400 {
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_string();
            let message = body["error"]["message"].as_str().unwrap_or("").to_string();
            return Err(Error::Api {
                status,
                code,
                message,
            });
        }
        Ok(body)
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> Result<Value, Error> {
        let resp = self
            .agent
            .get(&self.url(path))
            .call()
            .map_err(|e| self.unreachable(e))?;
        self.finish(resp)
    }

    /// POSTs a JSON document, returns the JSON answer.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let resp = self
            .agent
            .post(&self.url(path))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| self.unreachable(e))?;
        self.finish(resp)
    }

    /// `/v1/status`.
    pub fn status(&self) -> Result<Value, Error> {
        self.get("/v1/status")
    }

    /// `/v1/accounts/{address}`.
    pub fn account(&self, a: &Address, prove: bool) -> Result<Value, Error> {
        self.get(&format!(
            "/v1/accounts/{a}{}",
            if prove { "?prove=true" } else { "" }
        ))
    }

    /// The account's next nonce.
    pub fn next_nonce(&self, a: &Address) -> Result<u64, Error> {
        self.account(a, false)?["nonce"]
            .as_u64()
            .ok_or_else(|| Error::Protocol("account without a nonce".into()))
    }

    /// The chain's id and its minimum fee in base units, from `/v1/status`.
    pub fn chain(&self) -> Result<(String, u64), Error> {
        let status = self.status()?;
        let id = status["chain_id"]
            .as_str()
            .ok_or_else(|| Error::Protocol("status without chain_id".into()))?;
        let min_fee = status["min_fee_base"]
            .as_u64()
            .ok_or_else(|| Error::Protocol("status without min_fee_base".into()))?;
        Ok((id.to_string(), min_fee))
    }

    /// Signs `body` as `key`'s next transaction on this node's chain, paying `fee` base units
    /// (default: the chain's minimum), and submits it; returns its hash once admitted.
    pub fn sign_and_submit(
        &self,
        key: &Keypair,
        fee: Option<u64>,
        body: TxBody,
    ) -> Result<Hash, Error> {
        let (chain_id, min_fee) = self.chain()?;
        let tx = Tx {
            sender: key.public_key(),
            nonce: self.next_nonce(&key.address())?,
            fee: Amount::from_base(fee.unwrap_or(min_fee)),
            body,
        }
        .sign(key, &chain_id);
        self.submit(&tx)
    }

    /// `/v1/txs/{hash}`.
    pub fn tx_status(&self, h: &Hash) -> Result<Value, Error> {
        self.get(&format!("/v1/txs/{h}"))
    }

    /// Submits one signed transaction (binary form); returns its hash once admitted.
    pub fn submit(&self, tx: &SignedTx) -> Result<Hash, Error> {
        let bytes = tx.encode();
        let resp = self
            .agent
            .post(&self.url("/v1/txs"))
            .header("content-type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|e| self.unreachable(e))?;
        self.finish(resp)?;
        Ok(tx.hash())
    }

    /// Submits raw bytes with a content type (for tools and tests); returns status and body.
    pub fn post_raw(&self, content_type: &str, body: &[u8]) -> Result<(u16, Value), Error> {
        let resp = self
            .agent
            .post(&self.url("/v1/txs"))
            .header("content-type", content_type)
            .send(body)
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .into_body()
            .read_json()
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((status, body))
    }

    /// POSTs `body` to `path` as a request signed by `key` (see `cairn_primitives::request`).
    pub fn post_signed(
        &self,
        path: &str,
        key: &Keypair,
        chain_id: &str,
        body: &[u8],
    ) -> Result<Value, Error> {
        let mut req = self
            .agent
            .post(&self.url(path))
            .header("content-type", "application/octet-stream");
        for (h, v) in sign_request(key, chain_id, "POST", path, now_ms(), body) {
            req = req.header(h, v);
        }
        let resp = req.send(body).map_err(|e| self.unreachable(e))?;
        self.finish(resp)
    }

    /// GETs raw bytes from `path` as a request signed by `key`, with the response headers
    /// asked for in `want` (absent ones are empty strings).
    pub fn get_signed_bytes(
        &self,
        path: &str,
        key: &Keypair,
        chain_id: &str,
        want: &[&str],
    ) -> Result<(Vec<u8>, Vec<String>), Error> {
        let mut req = self.agent.get(&self.url(path));
        for (h, v) in sign_request(key, chain_id, "GET", path, now_ms(), b"") {
            req = req.header(h, v);
        }
        let resp = req.call().map_err(|e| self.unreachable(e))?;
        if resp.status().as_u16() >= 400 {
            return Err(self
                .finish(resp)
                .err()
                .unwrap_or_else(|| Error::Protocol("an error status with a success body".into())));
        }
        let headers = want
            .iter()
            .map(|h| {
                resp.headers()
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let bytes = resp
            .into_body()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((bytes, headers))
    }

    /// `/v1/accounts/{address}?prove=true`, with the state proof checked here against the
    /// state root the node sent: the account and the verified root.
    pub fn proven_account(&self, a: &Address) -> Result<(Value, Hash), Error> {
        let v = self.account(a, true)?;
        let proof: cairn_primitives::StateProof = serde_json::from_value(v["proof"].clone())
            .map_err(|e| Error::Protocol(format!("the node sent no usable proof: {e}")))?;
        let root: Hash = v["state_root"]
            .as_str()
            .ok_or_else(|| Error::Protocol("the node sent no state root".into()))?
            .parse()
            .map_err(|e| Error::Protocol(format!("the node's state root: {e}")))?;
        proof
            .verify(&root)
            .map_err(|e| Error::Protocol(format!("the node's proof does not verify: {e}")))?;
        Ok((v, root))
    }

    /// `owner`'s devices with rewards from a closed epoch not yet paid, page after page.
    pub fn devices_with_pending_rewards(&self, owner: &Address) -> Result<Vec<Address>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/devices?owner={owner}&limit=1000");
            if let Some(x) = &after {
                path.push_str(&format!("&after={x}"));
            }
            let page = self.get(&path)?;
            for d in page["devices"].as_array().into_iter().flatten() {
                if !d["pending_rewards"].is_null() {
                    let addr = d["address"].as_str().unwrap_or_default();
                    out.push(addr.parse().map_err(|_| {
                        Error::Protocol(format!("the node listed a bad device address '{addr}'"))
                    })?);
                }
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// Lease `lease`'s output from byte `offset` on, read as the deployment's owner `key`:
    /// as much as the node sends at once, with the output's whole length so far and whether
    /// the lease is still active. Read again from `offset + bytes.len()` until that length.
    pub fn lease_logs(
        &self,
        lease: u64,
        offset: u64,
        key: &Keypair,
        chain_id: &str,
    ) -> Result<LogChunk, Error> {
        let (bytes, h) = self.get_signed_bytes(
            &format!("/v1/leases/{lease}/logs?offset={offset}"),
            key,
            chain_id,
            &["x-cairn-log-length", "x-cairn-lease-state"],
        )?;
        let [length, state] = h.as_slice() else {
            return Err(Error::Protocol("log headers missing".into()));
        };
        Ok(LogChunk {
            total: length.parse().unwrap_or(0),
            active: state == "active",
            bytes,
        })
    }

    /// Follows a server-sent event stream at `path` (e.g. `/v1/events?device=…`), calling
    /// `on_line` for each line until it returns `false` or the stream ends. No overall
    /// timeout (streams are long-lived); the connection itself must open within 10 s.
    pub fn stream_lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), Error> {
        use std::io::BufRead;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build();
        let resp = ureq::Agent::new_with_config(config)
            .get(&self.url(path))
            .call()
            .map_err(|e| self.unreachable(e))?;
        if resp.status().as_u16() >= 400 {
            return Err(self
                .finish(resp)
                .err()
                .unwrap_or_else(|| Error::Protocol("an error status with a success body".into())));
        }
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| self.unreachable(e))?;
            if !on_line(&line) {
                break;
            }
        }
        Ok(())
    }

    /// Polls until `h` is final or failed, or `timeout` passes.
    pub fn wait_final(&self, h: &Hash, timeout: Duration) -> Result<Value, Error> {
        let start = Instant::now();
        loop {
            match self.tx_status(h) {
                Ok(v) if v["status"] == "final" || v["status"] == "failed" => return Ok(v),
                Ok(_) => {}
                Err(Error::Api { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout(*h, timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
