//! Checkers, rounds and verdicts: the records and messages of proof of physical work against
//! live devices (docs/checkers.md).
//!
//! A checker is a staked account with an endpoint. Each epoch a [`Committee`] (the active
//! checkers and their stake, with the epoch's seed) is fixed at the epoch's start; every
//! device gets `k` of its members, drawn by stake from that seed. A [`Round`] starts at a
//! block whose seed says so; each device due computes its own challenge (nonce
//! [`device_nonce`]) and answers its checkers, who post a [`ResultCode`] per device. The
//! device's [`Vote`]s for its latest round decide its [`Verdict`].

use crate::Amount;
use crate::codec::{BoundedString, vec_cfg};
use crate::crypto::{Address, Keypair, PublicKey, Signature, verify_signature};
use crate::hash::{Hash, sha256};
use crate::tx::namespace;
use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error, Read, ReadExt, Write};
use serde::Serialize;

/// Most checkers in an epoch's committee (registration beyond it is refused).
pub const MAX_COMMITTEE: usize = 256;
/// Most checkers assigned to one device (the genesis `checking.committee`).
pub const MAX_ASSIGNED: usize = 8;
/// Most devices one `PostResults` covers.
pub const MAX_RESULTS: usize = 262_144;
/// Uptime is posted in steps of 1/200 (0.5 %).
pub const UPTIME_STEPS: u32 = 200;

macro_rules! codec_u8_enum {
    ($ty:ident { $($variant:ident = $n:literal),* $(,)? }) => {
        impl Write for $ty {
            fn write(&self, buf: &mut impl BufMut) {
                (*self as u8).write(buf);
            }
        }
        impl EncodeSize for $ty {
            fn encode_size(&self) -> usize {
                1
            }
        }
        impl Read for $ty {
            type Cfg = ();
            fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
                Ok(match u8::read(buf)? {
                    $( $n => Self::$variant, )*
                    t => return Err(Error::InvalidEnum(t)),
                })
            }
        }
    };
}

/// Where a checker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckerStatus {
    /// Staked; joins the committee of each epoch after the one it registered in.
    Active,
    /// Penalized on evidence too often; out of committees until its jail ends.
    Jailed,
    /// Retired by its owner; its stake is unbonding.
    Retired,
}
codec_u8_enum!(CheckerStatus {
    Active = 0,
    Jailed = 1,
    Retired = 2
});

/// A registered checker. Its id is the address of its key, which also authenticates its
/// endpoint to the workers that dial it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checker {
    /// Where workers dial it (`host:port`).
    pub endpoint: BoundedString<128>,
    /// Bonded stake: its weight in assignment, and what a slash takes from.
    pub stake: Amount,
    /// Life-cycle status.
    pub status: CheckerStatus,
    /// The first epoch whose committee it joins.
    pub since_epoch: u64,
    /// While jailed: the first epoch it may join a committee again.
    pub jailed_until_epoch: u64,
    /// Penalties on evidence so far (a result it could not back, a pass a fraud proof
    /// convicted).
    pub strikes: u32,
    /// The epoch `agreed` and `posted` count for.
    pub tally_epoch: u64,
    /// Results that agreed with their device's verdict in `tally_epoch`: what the checkers
    /// pool pays.
    pub agreed: u64,
    /// Results posted in `tally_epoch`.
    pub posted: u64,
}
codec_struct!(Checker {
    endpoint: (),
    stake: (),
    status: (),
    since_epoch: (),
    jailed_until_epoch: (),
    strikes: (),
    tally_epoch: (),
    agreed: (),
    posted: (),
});

/// A committee member: a checker and its stake when the committee was fixed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The checker.
    pub checker: Address,
    /// Its stake at the epoch's start.
    pub stake: Amount,
}
codec_struct!(Member {
    checker: (),
    stake: ()
});

/// An epoch's committee, fixed when the epoch starts: the seed assignment draws from and the
/// eligible checkers, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Committee {
    /// The seed (see `round_seed` in the ledger: today a block hash).
    pub seed: Hash,
    /// Height of the block that opened the epoch (0 at genesis).
    pub start_height: u64,
    /// The members, by address.
    pub members: Vec<Member>,
}
codec_struct!(Committee {
    seed: (),
    start_height: (),
    members: vec_cfg::<()>(MAX_COMMITTEE),
});

/// A round: started by the block at its height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Round {
    /// The epoch it belongs to.
    pub epoch: u64,
    /// The starting block's time.
    pub ts_ms: u64,
    /// The starting block's seed: each device's nonce is [`device_nonce`] of it.
    pub seed: Hash,
    /// A join round: only devices registered at or after `since_height` (the round before)
    /// with no round yet are due. Otherwise every active device not serving a lease is.
    pub join: bool,
    /// The height of the round before it (0: none).
    pub since_height: u64,
}
codec_struct!(Round {
    epoch: (),
    ts_ms: (),
    seed: (),
    join: (),
    since_height: (),
});

/// An open dispute of a checker's result: the checker must back it with the device's receipt
/// before the genesis dispute window ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dispute {
    /// Who opened it.
    pub by: Address,
    /// Block time it was opened.
    pub opened_ms: u64,
}
codec_struct!(Dispute {
    by: (),
    opened_ms: ()
});

/// A device's standing with its checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Never passed a round: never matched, never paid.
    Unverified,
    /// Passed its latest decided round.
    Verified,
    /// Failed a round: not matched, not paid, until it passes a round after its cool-down.
    Jailed,
}
codec_u8_enum!(CheckStatus {
    Unverified = 0,
    Verified = 1,
    Jailed = 2
});

/// What one checker found in one round for one device (2 bits in a `PostResults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultCode {
    /// Not challenged (not due, serving a lease, or the checker did not reach it).
    NotChecked = 0,
    /// Answered in time and every audit held.
    Pass = 1,
    /// Answered wrongly or too late.
    Fail = 2,
    /// Did not answer.
    NoAnswer = 3,
}
codec_u8_enum!(ResultCode {
    NotChecked = 0,
    Pass = 1,
    Fail = 2,
    NoAnswer = 3
});

impl ResultCode {
    /// The code of two bits.
    pub fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::NotChecked,
            1 => Self::Pass,
            2 => Self::Fail,
            _ => Self::NoAnswer,
        }
    }
}

/// Packs codes four to a byte, the first in the low bits.
pub fn pack_codes(codes: &[ResultCode]) -> Vec<u8> {
    codes
        .chunks(4)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (i, code)| b | ((*code as u8) << (2 * i)))
        })
        .collect()
}

/// The `i`th code of packed `codes` (`NotChecked` past the end).
pub fn code_at(codes: &[u8], i: usize) -> ResultCode {
    let byte = codes.get(i / 4).copied().unwrap_or(0);
    ResultCode::from_bits(byte >> (2 * (i % 4)))
}

/// A round's verdict on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not decided yet (too few agreeing results).
    Pending = 0,
    /// A majority passed it.
    Pass = 1,
    /// A majority failed it on a wrong or late answer.
    Fail = 2,
    /// A majority heard no answer.
    Missed = 3,
}
codec_u8_enum!(Verdict {
    Pending = 0,
    Pass = 1,
    Fail = 2,
    Missed = 3
});

/// One checker's result for a device in its latest round. The checker is named by its
/// position in the committee of the round's epoch (a byte, not its 32-byte address: a
/// device's results then fit in its record without a heap allocation, which a round's
/// 3,000,000 results would otherwise make and copy once each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Vote {
    /// The checker's position in the committee of the round's epoch.
    pub member: u8,
    /// What it found.
    pub code: ResultCode,
    /// The device's heartbeat uptime it saw this epoch, in 1/200 steps (200: always up).
    pub uptime: u8,
    /// For a pass of a CPU-class device: the cores its answer's time showed (at least 1);
    /// 0 otherwise.
    pub cores: u8,
}
codec_struct!(Vote {
    member: (),
    code: (),
    uptime: (),
    cores: ()
});

impl Default for Vote {
    fn default() -> Self {
        Self {
            member: 0,
            code: ResultCode::NotChecked,
            uptime: 0,
            cores: 0,
        }
    }
}

/// A device's results for one round, in the order they landed: at most [`MAX_ASSIGNED`],
/// held inline. Encoded as a length-prefixed list, like a vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    len: u8,
    items: [Vote; MAX_ASSIGNED],
}

impl Votes {
    /// The results, in order.
    pub fn as_slice(&self) -> &[Vote] {
        self.items.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// How many results there are.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a result; `false` (and nothing changed) when [`MAX_ASSIGNED`] are held.
    pub fn push(&mut self, v: Vote) -> bool {
        match self.items.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = v;
                self.len = self.len.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// Drops every result.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Serialize for Votes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl Write for Votes {
    fn write(&self, buf: &mut impl BufMut) {
        self.len().write(buf);
        for v in self.as_slice() {
            v.write(buf);
        }
    }
}

impl EncodeSize for Votes {
    fn encode_size(&self) -> usize {
        self.len().encode_size()
            + self
                .as_slice()
                .iter()
                .map(EncodeSize::encode_size)
                .sum::<usize>()
    }
}

impl Read for Votes {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        let len = usize::read_cfg(buf, &(0..=MAX_ASSIGNED).into())?;
        let mut votes = Self::default();
        for _ in 0..len {
            votes.push(Vote::read(buf)?);
        }
        Ok(votes)
    }
}

/// Where a device stands with its checkers: kept on the device record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// Its status.
    pub status: CheckStatus,
    /// Height of the block it registered in (which join round is its first).
    pub registered_height: u64,
    /// The latest epoch in which it passed a round (`None`: never).
    pub last_pass_epoch: Option<u64>,
    /// While jailed: the first epoch a pass frees it.
    pub jailed_until_epoch: u64,
    /// Consecutive failed rounds.
    pub fails: u32,
    /// Height of the round `votes` are for (0: none yet).
    pub round: u64,
    /// Its checkers' results for `round`.
    pub votes: Votes,
    /// `round`'s verdict.
    pub verdict: Verdict,
    /// Block time its last lease ended: a round that started before then found it busy.
    pub lease_ended_ms: u64,
    /// For a CPU class: the cores its latest pass counted, the median of what its passing
    /// checkers measured, at most the cores it claims (0 before its first pass). Matching and
    /// capacity rewards count these, not the claim. Unused (0) for a GPU class.
    pub cores: u32,
}
codec_struct!(Standing {
    status: (),
    registered_height: (),
    last_pass_epoch: (),
    jailed_until_epoch: (),
    fails: (),
    round: (),
    votes: (),
    verdict: (),
    lease_ended_ms: (),
    cores: (),
});

impl Standing {
    /// A device registered at `height`: unverified, no round yet.
    pub fn new(registered_height: u64) -> Self {
        Self {
            status: CheckStatus::Unverified,
            registered_height,
            last_pass_epoch: None,
            jailed_until_epoch: 0,
            fails: 0,
            round: 0,
            votes: Votes::default(),
            verdict: Verdict::Pending,
            lease_ended_ms: 0,
            cores: 0,
        }
    }
}

/// The nonce a device answers in a round: fixed by the round's seed and its own key, so
/// every device due computes its own challenge and nobody knows it before the round.
pub fn device_nonce(round_seed: &Hash, device: &Address) -> [u8; 32] {
    sha256(&[b"cairn/round/nonce", &round_seed.0, &device.0]).0
}

/// What a device signs for a checker that challenged it: the checker's own walk nonce and
/// the digest of the whole exchange, bound to the round and the checker, so the receipt
/// backs that checker's result and no other's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// SHA-256 over the answer's roots, in order.
    pub roots: Hash,
    /// The checker's walk nonce.
    pub walk_nonce: Hash,
    /// SHA-256 over the walk digests and the opened rows the checker asked for.
    pub transcript: Hash,
    /// The device's signature (namespace `popw-receipt`).
    pub signature: Signature,
}
codec_struct!(Receipt {
    roots: (),
    walk_nonce: (),
    transcript: (),
    signature: ()
});

/// Whom and which round a [`Receipt`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptFor {
    /// The checker that challenged the device.
    pub checker: Address,
    /// The round's height.
    pub round: u64,
    /// The device's nonce in that round ([`device_nonce`]).
    pub nonce: [u8; 32],
}

impl ReceiptFor {
    fn message(&self, roots: &Hash, walk_nonce: &Hash, transcript: &Hash) -> Vec<u8> {
        let mut m = Vec::with_capacity(168);
        m.extend_from_slice(&self.checker.0);
        m.extend_from_slice(&self.round.to_be_bytes());
        m.extend_from_slice(&self.nonce);
        m.extend_from_slice(&roots.0);
        m.extend_from_slice(&walk_nonce.0);
        m.extend_from_slice(&transcript.0);
        m
    }
}

impl Receipt {
    /// The device's receipt of an exchange.
    pub fn sign(
        device: &Keypair,
        chain_id: &str,
        what: &ReceiptFor,
        roots: Hash,
        walk_nonce: Hash,
        transcript: Hash,
    ) -> Self {
        let m = what.message(&roots, &walk_nonce, &transcript);
        Self {
            signature: device.sign(&namespace("popw-receipt", chain_id), &m),
            roots,
            walk_nonce,
            transcript,
        }
    }

    /// Whether `device` signed this receipt for `what`.
    pub fn verify(&self, device: &PublicKey, chain_id: &str, what: &ReceiptFor) -> bool {
        let m = what.message(&self.roots, &self.walk_nonce, &self.transcript);
        verify_signature(
            device,
            &namespace("popw-receipt", chain_id),
            &m,
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pack_four_to_a_byte_and_read_back() {
        use ResultCode::*;
        let codes = [Pass, Fail, NoAnswer, NotChecked, Pass];
        let packed = pack_codes(&codes);
        assert_eq!(packed, vec![0b00_11_10_01, 0b01]);
        for (i, c) in codes.iter().enumerate() {
            assert_eq!(code_at(&packed, i), *c);
        }
        assert_eq!(code_at(&packed, 99), NotChecked);
    }

    #[test]
    fn a_receipt_binds_its_checker_round_and_nonce() {
        let device = Keypair::from_seed([3; 32]);
        let checker = Address([9; 32]);
        let nonce = device_nonce(&Hash([1; 32]), &device.address());
        let what = ReceiptFor {
            checker,
            round: 7,
            nonce,
        };
        let r = Receipt::sign(
            &device,
            "c",
            &what,
            Hash([2; 32]),
            Hash([3; 32]),
            Hash([4; 32]),
        );
        let key = device.public_key();
        assert!(r.verify(&key, "c", &what));
        let other = |f: fn(&mut ReceiptFor)| {
            let mut w = what;
            f(&mut w);
            w
        };
        assert!(!r.verify(&key, "c", &other(|w| w.checker = Address([8; 32]))));
        assert!(!r.verify(&key, "c", &other(|w| w.round = 8)));
        assert!(!r.verify(&key, "c", &other(|w| w.nonce = [0; 32])));
        assert!(!r.verify(&key, "other", &what));
    }
}
