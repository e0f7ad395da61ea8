//! What can go wrong applying a block or a transaction.

use cairn_primitives::{Address, Hash, PayUnits};

/// Why a transaction was rejected. A rejected transaction changes nothing (not even its fee or
/// nonce) and is recorded in the block's results with this error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The signature is not the sender's over this transaction on this chain.
    #[error("signature does not verify for this chain")]
    BadSignature,
    /// The nonce is not the sender's next one (too low: already used; too high: a gap).
    #[error("nonce {got} is not the account's next nonce {expected}")]
    BadNonce {
        /// What it had to be.
        expected: u64,
        /// What it was.
        got: u64,
    },
    /// The fee is below the genesis minimum.
    #[error("fee {got} base units is below the minimum of {min}")]
    FeeTooLow {
        /// The minimum.
        min: u64,
        /// What it was.
        got: u64,
    },
    /// An account lacks the tokens a debit needs.
    #[error("account {account} has {have} base units; {need} are needed")]
    InsufficientBalance {
        /// The account.
        account: Address,
        /// How much is needed.
        need: u64,
        /// How much it has.
        have: u64,
    },
    /// An account lacks the compute credits a deployment needs.
    #[error(
        "account {account} has {have} credits; {need} are needed; buy some with `cairn credits buy`"
    )]
    InsufficientCredits {
        /// The account.
        account: Address,
        /// How much is needed.
        need: u64,
        /// How much it has.
        have: u64,
    },
    /// A transfer, purchase or stake of nothing.
    #[error("amount must be greater than zero")]
    ZeroAmount,
    /// A sum or product left its type's range; names what overflowed.
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
    /// No oracle price is fresh enough to buy credits at.
    #[error("no fresh oracle price (prices older than {max_age_secs}s are refused)")]
    StalePrice {
        /// The oldest price accepted, in seconds.
        max_age_secs: u64,
    },
    /// The amount buys less than one credit or one stake share.
    #[error("amount is too small to buy one credit or share")]
    AmountTooSmall,
    /// A price from a key that is not one of the genesis oracles.
    #[error("{0} is not an oracle key in the genesis file")]
    NotOracle(Address),
    /// A price of zero (an oracle's, or a device's per hour).
    #[error("price must be greater than zero")]
    ZeroPrice,
    /// The device key is already registered.
    #[error("device {0} is already registered")]
    DeviceExists(Address),
    /// The class is not in the genesis catalog.
    #[error("class '{0}' is not in the catalog")]
    UnknownClass(String),
    /// The registered spec does not fit the class claimed.
    #[error("device spec does not fit class {class}: {why}")]
    SpecMismatch {
        /// The class.
        class: String,
        /// What does not fit.
        why: &'static str,
    },
    /// The region is empty, too long or has other characters.
    #[error("region must be 1-32 characters of letters, digits, '-' or '_'")]
    BadRegion,
    /// The device key did not sign the owner's address.
    #[error("the device key did not sign the owner's address (proof of possession)")]
    BadProofOfPossession,
    /// No device is registered under this key.
    #[error("device {0} is not registered; run `cairn worker register` first")]
    UnknownDevice(Address),
    /// The sender does not own the device.
    #[error("{sender} does not own device {device}")]
    NotDeviceOwner {
        /// The device.
        device: Address,
        /// The sender.
        sender: Address,
    },
    /// The device was retired or slashed.
    #[error("device {0} is not active")]
    DeviceNotActive(Address),
    /// The device is serving a lease.
    #[error("device {0} is serving a lease; wait for it to end")]
    DeviceBusy(Address),
    /// An update that changes nothing.
    #[error("nothing to update")]
    NothingToUpdate,
    /// The account has no stake in this device.
    #[error("{0} holds no stake in this device")]
    NoDelegation(Address),
    /// More shares asked back than the account holds.
    #[error("asked to redeem {asked} shares; {held} are held")]
    NotEnoughShares {
        /// Shares asked for.
        asked: u64,
        /// Shares held.
        held: u64,
    },
    /// The owner's bond would fall below the class minimum.
    #[error("the owner's bond cannot go below the class minimum; retire the device instead")]
    StakeBelowMinimum,
    /// The device's stake pool was slashed to nothing.
    #[error("device {0} was slashed to nothing; it cannot take stake")]
    PoolEmpty(Address),
    /// Replicas out of range.
    #[error("replicas must be 1-{max}")]
    BadReplicas {
        /// The most allowed.
        max: u16,
    },
    /// Duration out of range.
    #[error("duration must be 1 second to {max_secs} seconds")]
    BadDuration {
        /// The longest allowed, in seconds.
        max_secs: u64,
    },
    /// A job with neither an image nor a command.
    #[error("the job needs an image or a command")]
    EmptyJob,
    /// Fewer matching verified devices than replicas asked for.
    #[error(
        "no verified capacity for this request: {wanted} devices wanted, {found} verified and free at up to {max_price} per hour (devices are matched only once their checkers verify them, a CPU-class device by the cores its checkers measured)"
    )]
    NotEnoughCapacity {
        /// Devices wanted.
        wanted: u16,
        /// Devices found.
        found: u16,
        /// The highest price per hour accepted.
        max_price: PayUnits,
    },
    /// Matching scanned its limit of devices without filling the request.
    #[error("matching scanned {0} devices without filling the request; narrow the resources")]
    MatchScanLimit(usize),
    /// No deployment has this id.
    #[error("deployment {0} does not exist")]
    UnknownDeployment(u64),
    /// The sender does not own the deployment.
    #[error("{sender} does not own deployment {deployment}")]
    NotDeploymentOwner {
        /// The deployment.
        deployment: u64,
        /// The sender.
        sender: Address,
    },
    /// The deployment was closed or has ended.
    #[error("deployment {0} is not open")]
    DeploymentNotOpen(u64),
    /// No lease has this id.
    #[error("lease {0} does not exist")]
    UnknownLease(u64),
    /// A lease report from a device other than the lease's.
    #[error("lease {lease} belongs to device {device}, not the sender")]
    NotLeaseDevice {
        /// The lease.
        lease: u64,
        /// The device.
        device: Address,
    },
    /// The lease has already ended.
    #[error("lease {0} has already ended")]
    LeaseNotActive(u64),
    /// The sender is not a registered checker.
    #[error("{0} is not a registered checker")]
    NotChecker(Address),
    /// Results for a round of another epoch than the current one.
    #[error(
        "the round is in epoch {got}; results are taken only for rounds of the current epoch {expected} and the one before"
    )]
    WrongEpoch {
        /// What it had to be.
        expected: u64,
        /// What it was.
        got: u64,
    },
    /// An uptime past 200 steps (100 %).
    #[error("uptime {0} is past 200 (100 %)")]
    BadUptime(u8),
    /// The checker already posted a result for this device in this round.
    #[error("this checker already posted a result for device {0} in this round")]
    DuplicateResult(Address),
    /// The account is already a checker (a retired one cannot come back under the same key).
    #[error("{0} is already a checker")]
    CheckerExists(Address),
    /// A checker's stake is below the genesis minimum.
    #[error("a checker's stake must be at least {0} tokens (the genesis checking.min_stake)")]
    CheckerStakeBelowMinimum(cairn_primitives::Amount),
    /// The checker is retired.
    #[error("checker {0} is retired")]
    CheckerRetired(Address),
    /// An endpoint that is not `host:port`.
    #[error("the endpoint must be host:port (1-128 bytes, a port 1-65535)")]
    BadEndpoint,
    /// Registration past the committee's bound.
    #[error("{0} checkers are registered, the most a committee holds")]
    TooManyCheckers(usize),
    /// No round started at this height (or it is too old to be kept).
    #[error("no round started at height {0}")]
    UnknownRound(u64),
    /// The checker is not in the current epoch's committee.
    #[error("checker {0} is not in this epoch's committee (it joins at the next epoch)")]
    NotInCommittee(Address),
    /// A `PostResults` whose parts do not agree.
    #[error("malformed results: {0}")]
    BadResults(&'static str),
    /// A `PostResults` past the end of the checker's list.
    #[error("results for positions {first}..{end} but the checker has {len} devices")]
    ResultsOutOfRange {
        /// First position.
        first: u64,
        /// One past the last.
        end: u64,
        /// The list's length.
        len: u64,
    },
    /// A result for a device that was not due in the round.
    #[error("device {device} was not due in this round: {why}")]
    NotDue {
        /// The device.
        device: Address,
        /// Why.
        why: &'static str,
    },
    /// A dispute of a result the checker did not post (or one that cannot be backed).
    #[error(
        "checker {checker} has no pass or fail for device {device} in round {round} to dispute"
    )]
    NoSuchResult {
        /// The checker.
        checker: Address,
        /// The device.
        device: Address,
        /// The round.
        round: u64,
    },
    /// The result is already disputed.
    #[error("that result is already disputed")]
    DisputeExists,
    /// No open dispute for this result.
    #[error("no open dispute of this checker's result for device {0} in that round")]
    UnknownDispute(Address),
    /// A receipt the device did not sign for this checker, round and nonce.
    #[error("the receipt is not the device's signature for this checker, round and nonce")]
    BadReceipt,
    /// The fraud proof does not prove a wrong answer; says why.
    #[error("fraud proof rejected: {0}")]
    BadFraudProof(cairn_popw::FraudError),
    /// None of the devices is owed rewards from a closed epoch.
    #[error("none of the devices has rewards from a closed epoch to settle")]
    NothingToSettle,
    /// A device named twice in one settlement.
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
            Self::StakeBelowMinimum | Self::CheckerStakeBelowMinimum(_) => "stake_below_minimum",
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
            Self::BadUptime(_) => "bad_uptime",
            Self::DuplicateResult(_) => "duplicate_result",
            Self::CheckerExists(_) => "checker_exists",
            Self::CheckerRetired(_) => "checker_retired",
            Self::BadEndpoint => "bad_endpoint",
            Self::TooManyCheckers(_) => "too_many_checkers",
            Self::UnknownRound(_) => "unknown_round",
            Self::NotInCommittee(_) => "not_in_committee",
            Self::BadResults(_) => "bad_results",
            Self::ResultsOutOfRange { .. } => "results_out_of_range",
            Self::NotDue { .. } => "not_due",
            Self::NoSuchResult { .. } => "no_such_result",
            Self::DisputeExists => "dispute_exists",
            Self::UnknownDispute(_) => "unknown_dispute",
            Self::BadReceipt => "bad_receipt",
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
pub enum BlockError {
    /// The block's height does not follow the last block's.
    #[error("block height {got} does not follow {expected}")]
    WrongHeight {
        /// What it had to be.
        expected: u64,
        /// What it was.
        got: u64,
    },
    /// The block's parent is not the last block.
    #[error("block parent {got} is not the last block {expected}")]
    WrongParent {
        /// What it had to be.
        expected: Hash,
        /// What it was.
        got: Hash,
    },
    /// The block anchors a state root this ledger does not have at that height.
    #[error("block claims state root {got}, but the state root there is {expected}")]
    WrongStateRoot {
        /// What it had to be.
        expected: Hash,
        /// What it was.
        got: Hash,
    },
    /// The block anchors the state of a height not before its own.
    #[error("block {height} anchors the state of height {state_height}, which is not before it")]
    StateAheadOfBlock {
        /// The block height.
        height: u64,
        /// The height whose state it anchors.
        state_height: u64,
    },
    /// The block's time is before its parent's.
    #[error("block timestamp {got} is before the parent's {parent}")]
    TimeWentBackwards {
        /// The parent's time, ms.
        parent: u64,
        /// What it was.
        got: u64,
    },
    /// The header's transaction root does not match the transactions (or the verdicts were computed for other transactions).
    #[error("block transaction root does not match its transactions")]
    WrongTxRoot,
    /// More transactions than a block may hold.
    #[error("block has {0} transactions; the limit is {max}", max = cairn_primitives::MAX_BLOCK_TXS)]
    TooManyTxs(usize),
    /// Work at the start of the block (unbonding, lease expiry, epoch close) failed: a broken ledger invariant, not a bad block.
    #[error("ledger invariant broken while applying block: {0}")]
    Invariant(TxError),
    /// A sum or product left its type's range; names what overflowed.
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
