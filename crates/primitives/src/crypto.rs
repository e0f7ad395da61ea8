//! Keys, signatures and base58 addresses (ed25519, ZIP215 verification rules).

use bytes::BufMut;
use commonware_codec::{Buf, DecodeExt, Error, FixedSize, Read, ReadExt, Write};
use commonware_cryptography::{BatchEntry, BatchVerifier, Signer as _, Verifier as _, ed25519};
use std::fmt;
use std::str::FromStr;

/// An ed25519 public key, decoded (its curve point is ready for verification).
pub type PublicKey = ed25519::PublicKey;
/// An ed25519 signature.
pub type Signature = ed25519::Signature;

/// An account address: the 32 bytes of an ed25519 public key, written in base58 like Solana's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Address(pub [u8; 32]);

/// Byte order, compared as four big-endian words: the same order as the bytes', without a
/// call to `memcmp` per comparison (the ledger's maps of a million devices compare addresses
/// about twenty times per lookup).
impl Ord for Address {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let word = |a: &[u8; 32], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(a.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]));
            u64::from_be_bytes(w)
        };
        (0..4)
            .map(|i| word(&self.0, i).cmp(&word(&other.0, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Address {
    /// The smallest address (all zero bytes).
    pub const MIN: Address = Address([0; 32]);
    /// The largest address (all 0xff bytes).
    pub const MAX: Address = Address([0xff; 32]);

    /// The address of a public key.
    pub fn of(key: &PublicKey) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(key.as_ref());
        Self(out)
    }

    /// Decodes the public key behind this address, when its bytes are a valid curve point.
    pub fn public_key(&self) -> Option<PublicKey> {
        PublicKey::decode(commonware_codec::Copying(&self.0[..])).ok()
    }

    /// A short form for logs: the first six base58 characters and an ellipsis.
    pub fn short(&self) -> String {
        let full = self.to_string();
        format!("{}…", &full[..6.min(full.len())])
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// Why a string is not an address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseAddressError {
    /// Not base58.
    #[error("'{0}' is not base58")]
    NotBase58(String),
    /// Base58, but not 32 bytes.
    #[error("'{0}' decodes to {1} bytes; an address is 32")]
    WrongLength(String, usize),
}

impl FromStr for Address {
    type Err = ParseAddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(s.trim())
            .into_vec()
            .map_err(|_| ParseAddressError::NotBase58(s.to_string()))?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ParseAddressError::WrongLength(s.to_string(), bytes.len()))?;
        Ok(Self(arr))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Write for Address {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }
}

impl FixedSize for Address {
    const SIZE: usize = 32;
}

impl Read for Address {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(Self(<[u8; 32]>::read(buf)?))
    }
}

/// A signing key with its public key. The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct Keypair {
    seed: [u8; 32],
    secret: ed25519::PrivateKey,
    public: PublicKey,
}

impl Keypair {
    /// The keypair whose 32-byte ed25519 seed is `seed` (Solana's secret key is this seed
    /// followed by the public key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let secret = ed25519::PrivateKey::decode(commonware_codec::Copying(&seed[..]))
            .expect("every 32-byte string is an ed25519 seed");
        let public = secret.public_key();
        Self {
            seed,
            secret,
            public,
        }
    }

    /// The 32-byte seed. Handle with care: it is the secret.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The private key, for the consensus and p2p layers (which sign with it themselves).
    pub fn private_key(&self) -> &ed25519::PrivateKey {
        &self.secret
    }

    /// The address of the public key.
    pub fn address(&self) -> Address {
        Address::of(&self.public)
    }

    /// Signs `msg` under `namespace` (the namespace is length-prefixed into the signed bytes,
    /// so a signature made for one purpose can never be replayed for another).
    pub fn sign(&self, namespace: &[u8], msg: &[u8]) -> Signature {
        self.secret.sign(namespace, msg)
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

/// Verifies one signature.
pub fn verify_signature(key: &PublicKey, namespace: &[u8], msg: &[u8], sig: &Signature) -> bool {
    key.verify(namespace, msg, sig)
}

/// Verifies many `(key, namespace, message, signature)` items at once, returning whether all are
/// valid. Batch and single verification agree (ZIP215), so the answer is deterministic.
pub fn verify_batch(items: &[(&PublicKey, &[u8], &[u8], &Signature)]) -> bool {
    if items.is_empty() {
        return true;
    }
    // Batch verification only needs unpredictable coefficients; the thread generator gives them.
    let mut rng = rand::rng();
    PublicKey::verify_batch(
        &mut rng,
        items,
        |_, (key, ns, msg, sig)| BatchEntry {
            namespace: ns,
            message: msg,
            public_key: key,
            signature: sig,
        },
        &commonware_parallel::Sequential,
    )
}
