//! Cairn's shared vocabulary: the types every other crate and the HTTP API agree on.
//!
//! Nothing here does I/O. Every type that crosses a process boundary or enters the state
//! root has a canonical, size-bounded binary encoding (commonware-codec), pinned by golden
//! tests so that a format change is always deliberate.
//!
//! ```
//! use cairn_primitives::{Amount, Keypair, Tx, TxBody, Address};
//! use commonware_codec::{Encode, DecodeExt};
//!
//! let alice = Keypair::from_seed([1; 32]);
//! let bob = Keypair::from_seed([2; 32]);
//! let tx = Tx {
//!     sender: alice.public_key(),
//!     nonce: 0,
//!     fee: Amount::from_base(1_000),
//!     body: TxBody::Transfer { to: bob.address(), amount: Amount::from_base(5) },
//! }
//! .sign(&alice, "cairn-devnet");
//! assert!(tx.verify("cairn-devnet"));
//! assert!(!tx.verify("cairn-mainnet"), "a transaction is bound to its chain");
//! let bytes = tx.encode();
//! assert_eq!(cairn_primitives::SignedTx::decode(bytes).unwrap(), tx);
//! ```
#![deny(missing_docs)]

#[macro_use]
mod codec;
mod amount;
mod block;
mod checking;
mod class;
mod crypto;
mod genesis;
mod hash;
mod proof;
pub mod request;
mod state;
mod tx;

pub use amount::{Amount, Credits, ParseAmountError, PayUnits};
pub use block::{Block, Header, MAX_BLOCK_TXS};
pub use checking::{
    CheckStatus, Checker, CheckerStatus, Committee, Dispute, MAX_ASSIGNED, MAX_COMMITTEE,
    MAX_RESULTS, Member, Receipt, ReceiptFor, ResultCode, Round, Standing, UPTIME_STEPS, Verdict,
    Vote, Votes, code_at, device_nonce, pack_codes,
};
pub use class::{ClassId, ClassKind, DeviceClass, gpu_class};
pub use codec::{BoundedString, read_string};
pub use crypto::{
    Address, Keypair, ParseAddressError, PublicKey, Signature, verify_batch, verify_signature,
};
pub use genesis::{
    Checking, CheckingParams, DECAY_SCALE, Emission, Fees, Genesis, GenesisAccount, GenesisChecker,
    GenesisError, Oracle, Params, PaymentModel, RewardSplit, Staking, Token, Validator,
    decay_per_epoch,
};
pub use hash::{Hash, merkle_root, sha256};
pub use proof::{
    BUCKET_BITS, BucketEntry, ProofError, StateProof, bucket_hash, bucket_of, leaf_hash, node_hash,
};
pub use state::{
    Account, Delegation, Deployment, DeploymentStatus, Device, DeviceSpec, DeviceStatus,
    EpochRecord, Globals, JobSpec, Lease, LeaseState, OraclePrice, Resources, StakePool, StateKey,
    StateValue, Unbonding, Usage,
};
pub use state::{MAX_JOB_ARGS, MAX_RESOURCE_CLASSES};
pub use tx::{
    FraudProof, LeaseReportKind, OpenDeployment, PostResults, RegisterDevice, SignedTx, Tx, TxBody,
    device_pop_message, namespace,
};
pub use tx::{MAX_OPENED_ROW, MAX_PROOF_PATH, MAX_SETTLE_DEVICES};

/// Re-exported so that callers encode and decode without naming the codec crate.
pub use commonware_codec as wire;
