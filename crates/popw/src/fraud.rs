//! Fraud proofs: a device's signed root plus one opened row with a wrong entry.

use crate::matrix::rows_root;
use crate::matrix::{Challenge, row_leaf};
use cairn_primitives::{
    Address, FraudProof, Hash, Keypair, PublicKey, Signature, namespace, sha256, verify_signature,
};

/// Why a fraud proof does not prove fraud.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FraudError {
    /// The challenge is malformed.
    #[error("{0}")]
    Challenge(#[from] crate::ChallengeError),
    /// The device did not sign this root.
    #[error("the device did not sign this answer")]
    BadSignature,
    /// The row does not have n values, or the indexes are out of range.
    #[error("opened row or index out of range")]
    OutOfRange,
    /// The row is not under the signed root.
    #[error("the opened row is not under the signed root")]
    BadPath,
    /// The entry is correct: no fraud.
    #[error("the opened entry is correct")]
    EntryCorrect,
}

/// What a device signs when it answers a challenge.
pub fn answer_message(nonce: &[u8; 32], n: u32, root: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(68);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&n.to_be_bytes());
    m.extend_from_slice(&root.0);
    m
}

/// A device's signature on its answer `(nonce, n, root)` for `chain_id`.
pub fn sign_answer(
    key: &Keypair,
    chain_id: &str,
    nonce: &[u8; 32],
    n: u32,
    root: &Hash,
) -> Signature {
    key.sign(
        &namespace("popw-answer", chain_id),
        &answer_message(nonce, n, root),
    )
}

/// Builds the fraud proof for entry `(row, col)` of an answer whose committed rows are `rows`
/// and whose root the device signed with `signature` (what a checker does when an audit finds
/// a wrong entry).
pub fn fraud_proof(
    device: Address,
    nonce: [u8; 32],
    rows: &[Vec<i32>],
    signature: Signature,
    row: u32,
    col: u32,
) -> FraudProof {
    let leaves: Vec<Hash> = rows
        .iter()
        .enumerate()
        .map(|(r, v)| row_leaf(r as u32, v))
        .collect();
    FraudProof {
        device,
        nonce: Hash(nonce),
        n: rows.len() as u32,
        root: rows_root(rows),
        device_signature: signature,
        row,
        values: rows.get(row as usize).cloned().unwrap_or_default(),
        path: merkle_path(&leaves, row as usize),
        col,
    }
}

/// The fraud proof a checker's audit found: entry `col` of `opening` (a row the device opened
/// under its signed root for the opening's table) is wrong. `None` when the answer has no such
/// table (the audit checked that it has).
pub fn fraud_proof_of(
    device: Address,
    answer: &crate::Answer,
    opening: &crate::Opening,
    col: u32,
) -> Option<FraudProof> {
    let k = usize::try_from(opening.table).ok()?;
    Some(FraudProof {
        device,
        nonce: Hash(crate::protocol::table_nonce(&answer.nonce, opening.table)),
        n: answer.n,
        root: *answer.roots.get(k)?,
        device_signature: answer.signatures.get(k)?.clone(),
        row: opening.row,
        values: opening.values.clone(),
        path: opening.path.clone(),
        col,
    })
}

/// The Merkle path for leaf `index` among `leaves` (a power-of-two count), matching
/// `cairn_primitives::merkle_root`.
pub fn merkle_path(leaves: &[Hash], mut index: usize) -> Vec<Hash> {
    let mut level: Vec<Hash> = leaves.iter().map(|l| sha256(&[&[0u8], &l.0])).collect();
    let mut path = Vec::new();
    while level.len() > 1 {
        if let Some(s) = level.get(index ^ 1) {
            path.push(*s);
        }
        level = level
            .chunks(2)
            .map(|p| match p {
                [a, b] => sha256(&[&[1u8], &a.0, &b.0]),
                [a] => *a,
                _ => Hash::ZERO,
            })
            .collect();
        index /= 2;
    }
    path
}

fn root_from_path(leaf: Hash, mut index: u32, path: &[Hash]) -> Hash {
    let mut h = sha256(&[&[0u8], &leaf.0]);
    for s in path {
        h = if index & 1 == 0 {
            sha256(&[&[1u8], &h.0, &s.0])
        } else {
            sha256(&[&[1u8], &s.0, &h.0])
        };
        index >>= 1;
    }
    h
}

/// Whether `values` are row `row` under `root` (the path must have one sibling per level).
pub(crate) fn path_leads_to(values: &[i32], row: u32, path: &[Hash], root: &Hash) -> bool {
    values.len().is_power_of_two()
        && path.len() == values.len().trailing_zeros() as usize
        && root_from_path(row_leaf(row, values), row, path) == *root
}

/// Checks a fraud proof in O(n): the device's signature on the root, the opened row's path to
/// the root, and that the named entry differs from the true dot product.
pub fn verify_fraud_proof(
    chain_id: &str,
    device: &PublicKey,
    p: &FraudProof,
) -> Result<(), FraudError> {
    let c = Challenge::new(p.nonce.0, p.n)?;
    let msg = answer_message(&p.nonce.0, p.n, &p.root);
    if !verify_signature(
        device,
        &namespace("popw-answer", chain_id),
        &msg,
        &p.device_signature,
    ) {
        return Err(FraudError::BadSignature);
    }
    if p.values.len() != p.n as usize || p.row >= p.n || p.col >= p.n {
        return Err(FraudError::OutOfRange);
    }
    if p.path.len() != p.n.trailing_zeros() as usize {
        return Err(FraudError::BadPath);
    }
    if root_from_path(row_leaf(p.row, &p.values), p.row, &p.path) != p.root {
        return Err(FraudError::BadPath);
    }
    let claimed = p
        .values
        .get(p.col as usize)
        .copied()
        .ok_or(FraudError::OutOfRange)?;
    if claimed == c.entry(p.row, p.col) {
        return Err(FraudError::EntryCorrect);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(key: &Keypair, tamper: bool) -> FraudProof {
        let c = Challenge::new([9; 32], 16).unwrap();
        let mut rows: Vec<Vec<i32>> = (0..16).map(|r| c.result_row(r)).collect();
        if tamper {
            rows[4][7] += 1;
        }
        let sig = sign_answer(key, "t", &[9; 32], 16, &rows_root(&rows));
        fraud_proof(key.address(), [9; 32], &rows, sig, 4, 7)
    }

    #[test]
    fn wrong_entry_is_proven_and_honest_answer_is_not() {
        let key = Keypair::from_seed([3; 32]);
        let pk = key.public_key();
        verify_fraud_proof("t", &pk, &proof(&key, true)).unwrap();
        assert_eq!(
            verify_fraud_proof("t", &pk, &proof(&key, false)),
            Err(FraudError::EntryCorrect)
        );
        assert_eq!(
            verify_fraud_proof("other-chain", &pk, &proof(&key, true)),
            Err(FraudError::BadSignature)
        );
        let mut forged = proof(&key, true);
        forged.values[7] -= 1; // Opening a row the device never committed to.
        assert_eq!(
            verify_fraud_proof("t", &pk, &forged),
            Err(FraudError::BadPath)
        );
    }
}
