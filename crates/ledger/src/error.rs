//! What can go wrong applying a block or a transaction.

use cairn_primitives::{Address, Hash};

/// Why a transaction was rejected. A rejected transaction changes nothing (not even its fee or
/// nonce) and is recorded in the block's results with this error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum TxError {
    #[error("signature does not verify for this chain")]
    BadSignature,
    #[error("nonce {got} is not the account's next nonce {expected}")]
    BadNonce { expected: u64, got: u64 },
    #[error("fee {got} base units is below the minimum of {min}")]
    FeeTooLow { min: u64, got: u64 },
    #[error("account {account} has {have} base units; {need} are needed")]
    InsufficientBalance {
        account: Address,
        need: u64,
        have: u64,
    },
    #[error(
        "account {account} has {have} credits; {need} are needed; buy some with `cairn credits buy`"
    )]
    InsufficientCredits {
        account: Address,
        need: u64,
        have: u64,
    },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
    #[error("no fresh oracle price (prices older than {max_age_secs}s are refused)")]
    StalePrice { max_age_secs: u64 },
    #[error("amount is too small to buy one credit or share")]
    AmountTooSmall,
    #[error("{0} is not an oracle key in the genesis file")]
    NotOracle(Address),
    #[error("price must be greater than zero")]
    ZeroPrice,
    #[error("device {0} is already registered")]
    DeviceExists(Address),
    #[error("class '{0}' is not in the catalog")]
    UnknownClass(String),
    #[error("device spec does not fit class {class}: {why}")]
    SpecMismatch { class: String, why: String },
    #[error("region must be 1-32 characters of letters, digits, '-' or '_'")]
    BadRegion,
    #[error("the device key did not sign the owner's address (proof of possession)")]
    BadProofOfPossession,
    #[error("device {0} is not registered; run `cairn worker register` first")]
    UnknownDevice(Address),
    #[error("{sender} does not own device {device}")]
    NotDeviceOwner { device: Address, sender: Address },
    #[error("device {0} is not active")]
    DeviceNotActive(Address),
    #[error("device {0} is serving a lease; wait for it to end")]
    DeviceBusy(Address),
    #[error("nothing to update")]
    NothingToUpdate,
    #[error("{0} holds no stake in this device")]
    NoDelegation(Address),
    #[error("asked to redeem {asked} shares; {held} are held")]
    NotEnoughShares { asked: u64, held: u64 },
    #[error("the owner's bond cannot go below the class minimum; retire the device instead")]
    StakeBelowMinimum,
    #[error("device {0} was slashed to nothing; it cannot take stake")]
    PoolEmpty(Address),
    #[error("replicas must be 1-{max}")]
    BadReplicas { max: u16 },
    #[error("duration must be 1 second to {max_secs} seconds")]
    BadDuration { max_secs: u64 },
    #[error("the job needs an image or a command")]
    EmptyJob,
    #[error(
        "not enough capacity: {wanted} devices wanted, {found} available at up to {max_price} per hour"
    )]
    NotEnoughCapacity {
        wanted: u16,
        found: u16,
        max_price: u64,
    },
    #[error("matching scanned {0} devices without filling the request; narrow the resources")]
    MatchScanLimit(usize),
    #[error("deployment {0} does not exist")]
    UnknownDeployment(u64),
    #[error("{sender} does not own deployment {deployment}")]
    NotDeploymentOwner { deployment: u64, sender: Address },
    #[error("deployment {0} is not open")]
    DeploymentNotOpen(u64),
    #[error("lease {0} does not exist")]
    UnknownLease(u64),
    #[error("lease {lease} belongs to device {device}, not the sender")]
    NotLeaseDevice { lease: u64, device: Address },
    #[error("lease {0} has already ended")]
    LeaseNotActive(u64),
    #[error("{0} is not a checker in the genesis file")]
    NotChecker(Address),
    #[error("attestation is for epoch {got}; the current epoch is {expected}")]
    WrongEpoch { expected: u64, got: u64 },
    #[error("attestation has no entries")]
    EmptyAttestation,
    #[error("uptime {0} ppm is above 1,000,000")]
    BadUptime(u32),
    #[error("this checker already attested device {0} this epoch")]
    DuplicateAttestation(Address),
    #[error("fraud proof rejected: {0}")]
    BadFraudProof(String),
    #[error("none of the devices has rewards from a closed epoch to settle")]
    NothingToSettle,
    #[error("device {0} is named twice")]
    DuplicateDevice(Address),
}

impl TxError {
    /// A stable, machine-readable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::BadNonce { expected, got } if got < expected => "nonce_too_low",
            Self::BadNonce { .. } => "nonce_too_high",
            Self::FeeTooLow { .. } => "fee_too_low",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::InsufficientCredits { .. } => "insufficient_credits",
            Self::ZeroAmount => "zero_amount",
            Self::Overflow(_) => "overflow",
            Self::StalePrice { .. } => "stale_price",
            Self::AmountTooSmall => "amount_too_small",
            Self::NotOracle(_) => "not_oracle",
            Self::ZeroPrice => "zero_price",
            Self::DeviceExists(_) => "device_exists",
            Self::UnknownClass(_) => "unknown_class",
            Self::SpecMismatch { .. } => "spec_mismatch",
            Self::BadRegion => "bad_region",
            Self::BadProofOfPossession => "bad_proof_of_possession",
            Self::UnknownDevice(_) => "unknown_device",
            Self::NotDeviceOwner { .. } => "not_device_owner",
            Self::DeviceNotActive(_) => "device_not_active",
            Self::DeviceBusy(_) => "device_busy",
            Self::NothingToUpdate => "nothing_to_update",
            Self::NoDelegation(_) => "no_delegation",
            Self::NotEnoughShares { .. } => "not_enough_shares",
            Self::StakeBelowMinimum => "stake_below_minimum",
            Self::PoolEmpty(_) => "pool_empty",
            Self::BadReplicas { .. } => "bad_replicas",
            Self::BadDuration { .. } => "bad_duration",
            Self::EmptyJob => "empty_job",
            Self::NotEnoughCapacity { .. } => "not_enough_capacity",
            Self::MatchScanLimit(_) => "match_scan_limit",
            Self::UnknownDeployment(_) => "unknown_deployment",
            Self::NotDeploymentOwner { .. } => "not_deployment_owner",
            Self::DeploymentNotOpen(_) => "deployment_not_open",
            Self::UnknownLease(_) => "unknown_lease",
            Self::NotLeaseDevice { .. } => "not_lease_device",
            Self::LeaseNotActive(_) => "lease_not_active",
            Self::NotChecker(_) => "not_checker",
            Self::WrongEpoch { .. } => "wrong_epoch",
            Self::EmptyAttestation => "empty_attestation",
            Self::BadUptime(_) => "bad_uptime",
            Self::DuplicateAttestation(_) => "duplicate_attestation",
            Self::BadFraudProof(_) => "bad_fraud_proof",
            Self::NothingToSettle => "nothing_to_settle",
            Self::DuplicateDevice(_) => "duplicate_device",
        }
    }

    /// Whether the same transaction could succeed later (a nonce gap, a missing price, busy
    /// capacity); the others are wrong in themselves.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::BadNonce { .. }
                | Self::StalePrice { .. }
                | Self::NotEnoughCapacity { .. }
                | Self::InsufficientBalance { .. }
                | Self::InsufficientCredits { .. }
                | Self::DeviceBusy(_)
        )
    }
}

/// Why a whole block was refused. A refused block changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum BlockError {
    #[error("block height {got} does not follow {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block parent {got} is not the last block {expected}")]
    WrongParent { expected: Hash, got: Hash },
    #[error("block claims state root {got}, but the state root there is {expected}")]
    WrongStateRoot { expected: Hash, got: Hash },
    #[error("block {height} anchors the state of height {state_height}, which is not before it")]
    StateAheadOfBlock { height: u64, state_height: u64 },
    #[error("block timestamp {got} is before the parent's {parent}")]
    TimeWentBackwards { parent: u64, got: u64 },
    #[error("block transaction root does not match its transactions")]
    WrongTxRoot,
    #[error("block has {0} transactions; the limit is {max}", max = cairn_primitives::MAX_BLOCK_TXS)]
    TooManyTxs(usize),
    #[error("ledger invariant broken while applying block: {0}")]
    Invariant(TxError),
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
}

/// Why stored records could not be loaded into a ledger ([`crate::Ledger::from_records`]).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The genesis is invalid.
    #[error(transparent)]
    Genesis(#[from] cairn_primitives::GenesisError),
    /// A key is not a state key.
    #[error("bad state key {0:?}")]
    Key(Vec<u8>),
    /// A record does not decode as its key's kind.
    #[error("bad record under {key}: {reason}")]
    Value {
        /// The key, for reading.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// A broken ledger invariant ([`crate::Ledger::check_invariants`]): what does not add up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ledger invariant broken: {0}")]
pub struct InvariantViolation(pub String);

/// The result type of this crate.
pub type Result<T, E = TxError> = std::result::Result<T, E>;
