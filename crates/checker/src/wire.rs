//! The messages a device and its checker exchange over their authenticated connection
//! (docs/checkers.md, "The wire"). Every message has a canonical, bounded encoding; anything
//! else is refused before it is acted on.
//!
//! A round, for one device and one checker:
//!
//! 1. checker → `Round { height, seed }`: its timer starts. The device derives its nonce
//!    (`device_nonce(seed, its address)`), computes every table and answers with
//!    `Answer` (its signed roots), or `Busy` when it serves a lease.
//! 2. device → `Ready` when it is free to walk (a device walks for one checker at a time);
//!    checker → `WalkNonce` (its own draw): the walk's timer starts; device → `Walk`.
//! 3. checker → `Audit` (rows it opens, its own draws); device → `Openings`.
//! 4. device → `Receipt`: its signature over the exchange, bound to this checker and round,
//!    which the checker keeps for disputes; checker → `Done` with its result.
//!
//! Heartbeats flow all the while: each signed by the device key and bound to (checker,
//! epoch, sequence, the nonce of the checker's `Hello`).

use bytes::BufMut;
use cairn_popw::{Answer, Opening};
use cairn_primitives::{
    Address, BoundedString, Hash, Keypair, PublicKey, Receipt, ResultCode, Signature, namespace,
    verify_signature,
};
use commonware_codec::{Buf, EncodeSize, Error, RangeCfg, Read, ReadExt, Write};

/// Largest message either side accepts: the walk digests of the largest claim that still
/// fits (4,194,304 digests of 8 bytes), with room for framing.
pub const MAX_MESSAGE: u32 = 36 << 20;
/// Most digests in a `Walk`.
pub const MAX_DIGESTS: usize = 1 << 22;
/// Most tables (roots and signatures) in an `Answer`.
pub const MAX_TABLES: usize = 1024;
/// Most rows an `Audit` asks for (and an `Openings` carries).
pub const MAX_OPENED: usize = 256;
/// Most values in an opened row.
pub const MAX_ROW: usize = 16_384;
/// Most Merkle path nodes of an opened row.
pub const MAX_PATH: usize = 64;

/// A device's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The epoch it counts for.
    pub epoch: u64,
    /// Its sequence number on this connection (strictly increasing).
    pub seq: u64,
    /// The nonce of the checker's `Hello` on this connection.
    pub nonce: [u8; 32],
    /// The device key's signature over (checker, epoch, seq, nonce).
    pub signature: Signature,
}

impl Heartbeat {
    fn message(checker: &Address, epoch: u64, seq: u64, nonce: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(80);
        m.extend_from_slice(&checker.0);
        m.extend_from_slice(&epoch.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(nonce);
        m
    }

    /// A heartbeat signed by `device` for `checker`.
    pub fn sign(
        device: &Keypair,
        chain_id: &str,
        checker: &Address,
        epoch: u64,
        seq: u64,
        nonce: [u8; 32],
    ) -> Self {
        let m = Self::message(checker, epoch, seq, &nonce);
        Self {
            epoch,
            seq,
            nonce,
            signature: device.sign(&namespace("heartbeat", chain_id), &m),
        }
    }

    /// Whether `device` signed it for `checker`.
    pub fn verify(&self, device: &PublicKey, chain_id: &str, checker: &Address) -> bool {
        let m = Self::message(checker, self.epoch, self.seq, &self.nonce);
        verify_signature(
            device,
            &namespace("heartbeat", chain_id),
            &m,
            &self.signature,
        )
    }
}

/// What a device sends its checker.
#[derive(Clone, Debug)]
pub enum ToChecker {
    /// I am up.
    Heartbeat(Heartbeat),
    /// The compute phase's signed answer.
    Answer {
        /// The round's height.
        round: u64,
        /// The answer.
        answer: Answer,
    },
    /// Free to walk for this checker now.
    Ready {
        /// The round's height.
        round: u64,
    },
    /// The memory walk's digests.
    Walk {
        /// The round's height.
        round: u64,
        /// Every step's digest, chain after chain.
        digests: Vec<u64>,
    },
    /// The rows the audit asked for.
    Openings {
        /// The round's height.
        round: u64,
        /// In the order asked.
        openings: Vec<Opening>,
    },
    /// The device's signature over the exchange.
    Receipt {
        /// The round's height.
        round: u64,
        /// The receipt.
        receipt: Receipt,
    },
    /// Serving a lease: not challenged this round.
    Busy {
        /// The round's height.
        round: u64,
    },
}

impl ToChecker {
    /// The message's name and round, for logs ("answer for round 12").
    pub fn kind(&self) -> String {
        let (name, round) = match self {
            Self::Heartbeat(h) => return format!("heartbeat {}", h.seq),
            Self::Answer { round, .. } => ("answer", round),
            Self::Ready { round } => ("ready", round),
            Self::Walk { round, .. } => ("walk", round),
            Self::Openings { round, .. } => ("openings", round),
            Self::Receipt { round, .. } => ("receipt", round),
            Self::Busy { round } => ("busy", round),
        };
        format!("{name} for round {round}")
    }
}

/// What a checker sends a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToDevice {
    /// Sent once on connecting: the nonce heartbeats on this connection are bound to.
    Hello {
        /// The epoch in progress.
        epoch: u64,
        /// The nonce.
        nonce: [u8; 32],
        /// How often to send heartbeats, in milliseconds.
        heartbeat_ms: u64,
    },
    /// A round started: compute your challenge.
    Round {
        /// The height of the block that started it.
        height: u64,
        /// Its seed.
        seed: Hash,
    },
    /// The walk's nonce (this checker's own draw).
    WalkNonce {
        /// The round's height.
        round: u64,
        /// The nonce.
        nonce: [u8; 32],
    },
    /// Open these (table, row)s.
    Audit {
        /// The round's height.
        round: u64,
        /// The rows.
        rows: Vec<(u32, u32)>,
    },
    /// The checker's result for this round, and why.
    Done {
        /// The round's height.
        round: u64,
        /// The result it posts.
        code: ResultCode,
        /// Why, in words.
        reason: BoundedString<256>,
    },
    /// The connection is refused or closed, and why.
    Refused {
        /// Why.
        reason: BoundedString<256>,
    },
}

fn write_answer(a: &Answer, buf: &mut impl BufMut) {
    a.nonce.write(buf);
    a.n.write(buf);
    a.roots.write(buf);
    a.signatures.write(buf);
}

fn read_answer(buf: &mut impl Buf) -> Result<Answer, Error> {
    let cfg = (RangeCfg::from(0..=MAX_TABLES), ());
    Ok(Answer {
        nonce: <[u8; 32]>::read(buf)?,
        n: u32::read(buf)?,
        roots: Vec::<Hash>::read_cfg(buf, &cfg)?,
        signatures: Vec::<Signature>::read_cfg(buf, &cfg)?,
    })
}

fn answer_size(a: &Answer) -> usize {
    a.nonce.encode_size() + a.n.encode_size() + a.roots.encode_size() + a.signatures.encode_size()
}

fn write_opening(o: &Opening, buf: &mut impl BufMut) {
    o.table.write(buf);
    o.row.write(buf);
    o.values.write(buf);
    o.path.write(buf);
}

fn read_opening(buf: &mut impl Buf) -> Result<Opening, Error> {
    Ok(Opening {
        table: u32::read(buf)?,
        row: u32::read(buf)?,
        values: Vec::<i32>::read_cfg(buf, &(RangeCfg::from(0..=MAX_ROW), ()))?,
        path: Vec::<Hash>::read_cfg(buf, &(RangeCfg::from(0..=MAX_PATH), ()))?,
    })
}

fn opening_size(o: &Opening) -> usize {
    o.table.encode_size() + o.row.encode_size() + o.values.encode_size() + o.path.encode_size()
}

impl Write for ToChecker {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Self::Heartbeat(h) => {
                0u8.write(buf);
                h.epoch.write(buf);
                h.seq.write(buf);
                h.nonce.write(buf);
                h.signature.write(buf);
            }
            Self::Answer { round, answer } => {
                1u8.write(buf);
                round.write(buf);
                write_answer(answer, buf);
            }
            Self::Ready { round } => {
                2u8.write(buf);
                round.write(buf);
            }
            Self::Walk { round, digests } => {
                3u8.write(buf);
                round.write(buf);
                digests.write(buf);
            }
            Self::Openings { round, openings } => {
                4u8.write(buf);
                round.write(buf);
                u32::try_from(openings.len()).unwrap_or(u32::MAX).write(buf);
                for o in openings {
                    write_opening(o, buf);
                }
            }
            Self::Receipt { round, receipt } => {
                5u8.write(buf);
                round.write(buf);
                receipt.write(buf);
            }
            Self::Busy { round } => {
                6u8.write(buf);
                round.write(buf);
            }
        }
    }
}

impl EncodeSize for ToChecker {
    fn encode_size(&self) -> usize {
        1 + match self {
            Self::Heartbeat(h) => {
                h.epoch.encode_size()
                    + h.seq.encode_size()
                    + h.nonce.encode_size()
                    + h.signature.encode_size()
            }
            Self::Answer { round, answer } => round.encode_size() + answer_size(answer),
            Self::Ready { round } | Self::Busy { round } => round.encode_size(),
            Self::Walk { round, digests } => round.encode_size() + digests.encode_size(),
            Self::Openings { round, openings } => {
                round.encode_size() + 4 + openings.iter().map(opening_size).sum::<usize>()
            }
            Self::Receipt { round, receipt } => round.encode_size() + receipt.encode_size(),
        }
    }
}

impl Read for ToChecker {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Heartbeat(Heartbeat {
                epoch: u64::read(buf)?,
                seq: u64::read(buf)?,
                nonce: <[u8; 32]>::read(buf)?,
                signature: Signature::read(buf)?,
            }),
            1 => Self::Answer {
                round: u64::read(buf)?,
                answer: read_answer(buf)?,
            },
            2 => Self::Ready {
                round: u64::read(buf)?,
            },
            3 => Self::Walk {
                round: u64::read(buf)?,
                digests: Vec::<u64>::read_cfg(buf, &(RangeCfg::from(0..=MAX_DIGESTS), ()))?,
            },
            4 => {
                let round = u64::read(buf)?;
                let n = u32::read(buf)? as usize;
                if n > MAX_OPENED {
                    return Err(Error::Invalid("Openings", "too many rows"));
                }
                let openings = (0..n)
                    .map(|_| read_opening(buf))
                    .collect::<Result<_, _>>()?;
                Self::Openings { round, openings }
            }
            5 => Self::Receipt {
                round: u64::read(buf)?,
                receipt: Receipt::read(buf)?,
            },
            6 => Self::Busy {
                round: u64::read(buf)?,
            },
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}

impl Write for ToDevice {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Self::Hello {
                epoch,
                nonce,
                heartbeat_ms,
            } => {
                0u8.write(buf);
                epoch.write(buf);
                nonce.write(buf);
                heartbeat_ms.write(buf);
            }
            Self::Round { height, seed } => {
                1u8.write(buf);
                height.write(buf);
                seed.write(buf);
            }
            Self::WalkNonce { round, nonce } => {
                2u8.write(buf);
                round.write(buf);
                nonce.write(buf);
            }
            Self::Audit { round, rows } => {
                3u8.write(buf);
                round.write(buf);
                rows.write(buf);
            }
            Self::Done {
                round,
                code,
                reason,
            } => {
                4u8.write(buf);
                round.write(buf);
                code.write(buf);
                reason.write(buf);
            }
            Self::Refused { reason } => {
                5u8.write(buf);
                reason.write(buf);
            }
        }
    }
}

impl EncodeSize for ToDevice {
    fn encode_size(&self) -> usize {
        1 + match self {
            Self::Hello {
                epoch,
                nonce,
                heartbeat_ms,
            } => epoch.encode_size() + nonce.encode_size() + heartbeat_ms.encode_size(),
            Self::Round { height, seed } => height.encode_size() + seed.encode_size(),
            Self::WalkNonce { round, nonce } => round.encode_size() + nonce.encode_size(),
            Self::Audit { round, rows } => round.encode_size() + rows.encode_size(),
            Self::Done {
                round,
                code,
                reason,
            } => round.encode_size() + code.encode_size() + reason.encode_size(),
            Self::Refused { reason } => reason.encode_size(),
        }
    }
}

impl Read for ToDevice {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Hello {
                epoch: u64::read(buf)?,
                nonce: <[u8; 32]>::read(buf)?,
                heartbeat_ms: u64::read(buf)?,
            },
            1 => Self::Round {
                height: u64::read(buf)?,
                seed: Hash::read(buf)?,
            },
            2 => Self::WalkNonce {
                round: u64::read(buf)?,
                nonce: <[u8; 32]>::read(buf)?,
            },
            3 => Self::Audit {
                round: u64::read(buf)?,
                rows: Vec::<(u32, u32)>::read_cfg(
                    buf,
                    &(RangeCfg::from(0..=MAX_OPENED), ((), ())),
                )?,
            },
            4 => Self::Done {
                round: u64::read(buf)?,
                code: ResultCode::read(buf)?,
                reason: BoundedString::read(buf)?,
            },
            5 => Self::Refused {
                reason: BoundedString::read(buf)?,
            },
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}

/// Decodes a whole message, refusing trailing bytes.
pub fn decode<T: Read<Cfg = ()>>(bytes: &[u8]) -> Result<T, Error> {
    use commonware_codec::DecodeExt;
    T::decode(commonware_codec::Copying(bytes))
}

/// A reason, cut to fit a message.
pub fn reason(s: &str) -> BoundedString<256> {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    BoundedString::new(&s[..end]).unwrap_or_default()
}

/// SHA-256 over the answer's roots, in order: what a receipt names.
pub fn roots_digest(roots: &[Hash]) -> Hash {
    let parts: Vec<&[u8]> = roots.iter().map(|r| r.0.as_slice()).collect();
    cairn_primitives::sha256(&parts)
}

/// SHA-256 over the walk digests and the opened rows: the transcript a receipt names.
pub fn transcript_digest(digests: &[u64], openings: &[Opening]) -> Hash {
    let mut bytes = Vec::with_capacity(digests.len() * 8);
    for d in digests {
        bytes.extend_from_slice(&d.to_le_bytes());
    }
    for o in openings {
        bytes.extend_from_slice(&o.table.to_be_bytes());
        bytes.extend_from_slice(&o.row.to_be_bytes());
        for v in &o.values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    cairn_primitives::sha256(&[b"cairn/round/transcript", &bytes])
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_codec::Encode;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let k = Keypair::from_seed([1; 32]);
        let checker = Address([2; 32]);
        let hb = Heartbeat::sign(&k, "c", &checker, 3, 4, [5; 32]);
        assert!(hb.verify(&k.public_key(), "c", &checker));
        assert!(!hb.verify(&k.public_key(), "c", &Address([9; 32])));
        let mut replayed = hb.clone();
        replayed.seq = 5;
        assert!(!replayed.verify(&k.public_key(), "c", &checker));
        let msgs = vec![
            ToChecker::Heartbeat(hb),
            ToChecker::Walk {
                round: 7,
                digests: vec![1, 2, 3],
            },
            ToChecker::Openings {
                round: 7,
                openings: vec![Opening {
                    table: 1,
                    row: 2,
                    values: vec![-3, 4],
                    path: vec![Hash([6; 32])],
                }],
            },
            ToChecker::Busy { round: 9 },
        ];
        for m in msgs {
            let bytes = m.encode();
            assert_eq!(bytes.len(), m.encode_size());
            let back: ToChecker = decode(&bytes).unwrap();
            assert_eq!(back.encode(), bytes);
        }
        let d = ToDevice::Audit {
            round: 1,
            rows: vec![(1, 2), (3, 4)],
        };
        assert_eq!(decode::<ToDevice>(&d.encode()).unwrap(), d);
        // Unknown tags, trailing bytes and oversized lists are refused.
        assert!(decode::<ToDevice>(&[9]).is_err());
        let mut long = d.encode().to_vec();
        long.push(0);
        assert!(decode::<ToDevice>(&long).is_err());
        let mut big = vec![3u8];
        big.extend_from_slice(&1u64.to_be_bytes());
        big.extend(commonware_codec::Encode::encode(&(MAX_OPENED as u32 + 1)).to_vec());
        assert!(decode::<ToDevice>(&big).is_err());
    }
}
