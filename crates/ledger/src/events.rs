//! What applying a block reports: per-transaction results and events.

use crate::TxError;
use cairn_primitives::{Address, Amount, EpochRecord, Hash, LeaseState, PayUnits};
use serde::Serialize;

/// The result of one transaction in a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxResult {
    /// The transaction's hash.
    pub hash: Hash,
    /// `None` when it applied; the reason when it was rejected.
    pub error: Option<TxError>,
}

/// Something that happened, for explorers, event streams and wallets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Tokens moved between accounts.
    Transfer {
        /// Whose tokens.
        from: Address,
        /// The receiver.
        to: Address,
        /// How many tokens.
        amount: Amount,
    },
    /// Tokens destroyed (fees, credit purchases, the direct model's protocol fee).
    Burn {
        /// Whose tokens.
        from: Address,
        /// How many tokens.
        amount: Amount,
        /// Why.
        reason: &'static str,
    },
    /// An account burned tokens for compute credits.
    CreditsBought {
        /// The account.
        account: Address,
        /// Tokens burned.
        tokens: Amount,
        /// Credits bought.
        credits: u64,
    },
    /// An oracle submitted the token's price.
    PriceSubmitted {
        /// The oracle.
        oracle: Address,
        /// Millionths of a USD per token.
        micro_usd_per_token: u64,
    },
    /// A device joined with its owner's bond.
    DeviceRegistered {
        /// The device.
        device: Address,
        /// The owner.
        owner: Address,
        /// The class.
        class: String,
        /// The bond.
        stake: Amount,
    },
    /// A device's price or availability changed.
    DeviceUpdated {
        /// The device.
        device: Address,
    },
    /// A device left; its owner's bond unbonds.
    DeviceRetired {
        /// The device.
        device: Address,
        /// Stake now unbonding.
        unbonding: Amount,
    },
    /// Stake added behind a device.
    Delegated {
        /// The device.
        device: Address,
        /// The staker.
        staker: Address,
        /// How many tokens.
        amount: Amount,
        /// Pool shares.
        shares: u64,
    },
    /// Stake withdrawn from a device; it unbonds.
    Undelegated {
        /// The device.
        device: Address,
        /// The staker.
        staker: Address,
        /// How many tokens.
        amount: Amount,
        /// Pool shares.
        shares: u64,
    },
    /// Unbonded stake came back to its owner.
    UnbondingReleased {
        /// The owner.
        owner: Address,
        /// How many tokens.
        amount: Amount,
    },
    /// A deployment was matched and its deposit escrowed.
    DeploymentOpened {
        /// The deployment.
        deployment: u64,
        /// The owner.
        owner: Address,
        /// Payment units escrowed.
        deposit: PayUnits,
        /// Each lease and its device.
        leases: Vec<(u64, Address)>,
    },
    /// The owner closed a deployment.
    DeploymentClosed {
        /// The deployment.
        deployment: u64,
    },
    /// A deployment's end moved later, with more deposit.
    DeploymentExtended {
        /// The deployment.
        deployment: u64,
        /// Payment units added.
        extra_deposit: PayUnits,
        /// The new end, ms.
        end_ms: u64,
    },
    /// A device reported on its lease.
    LeaseReported {
        /// The lease.
        lease: u64,
        /// The deployment.
        deployment: u64,
        /// The device.
        device: Address,
        /// What was reported.
        kind: &'static str,
    },
    /// A lease ended, with what it paid and refunded.
    LeaseEnded {
        /// The lease.
        lease: u64,
        /// The deployment.
        deployment: u64,
        /// The device.
        device: Address,
        /// How it ended.
        state: LeaseState,
        /// Payment units paid to the provider.
        paid: PayUnits,
        /// Payment units returned.
        refunded: PayUnits,
    },
    /// A checker's results for a round.
    ResultsPosted {
        /// The checker.
        checker: Address,
        /// The round's height.
        round: u64,
        /// Results other than `not checked`.
        results: u64,
    },
    /// A checker staked.
    CheckerRegistered {
        /// The checker.
        checker: Address,
        /// Its bond.
        stake: Amount,
        /// The first epoch it checks in.
        since_epoch: u64,
    },
    /// A checker retired; its stake is unbonding.
    CheckerRetired {
        /// The checker.
        checker: Address,
        /// Tokens unbonding.
        unbonding: Amount,
    },
    /// A round started at this block.
    RoundStarted {
        /// The block's height.
        height: u64,
        /// Whether only newly registered devices are due.
        join: bool,
    },
    /// A device's round was decided.
    Verdict {
        /// The device.
        device: Address,
        /// The round's height.
        round: u64,
        /// The verdict.
        verdict: cairn_primitives::Verdict,
        /// The device's standing after it.
        status: cairn_primitives::CheckStatus,
    },
    /// A device was slashed for failing rounds again and again.
    SlashedForRounds {
        /// The device.
        device: Address,
        /// Tokens burned from its pool.
        amount: Amount,
        /// Consecutive failed rounds.
        fails: u32,
    },
    /// A result was disputed.
    DisputeOpened {
        /// The checker.
        checker: Address,
        /// The device.
        device: Address,
        /// The round.
        round: u64,
        /// Who disputed it.
        by: Address,
    },
    /// A checker backed a disputed result with the device's receipt.
    ResultBacked {
        /// The checker.
        checker: Address,
        /// The device.
        device: Address,
        /// The round.
        round: u64,
    },
    /// A checker was penalized on evidence (a result it did not back in time).
    CheckerPenalized {
        /// The checker.
        checker: Address,
        /// Its strikes now.
        strikes: u32,
        /// Whether it is now jailed.
        jailed: bool,
        /// Stake burned.
        slashed: Amount,
    },
    /// A device's stake was slashed on a fraud proof.
    Slashed {
        /// The device.
        device: Address,
        /// How many tokens.
        amount: Amount,
        /// Who proved the fraud.
        reporter: Address,
    },
    /// An epoch closed: emission minted and split.
    EpochClosed {
        /// The epoch's record.
        record: EpochRecord,
    },
    /// Rewards paid to an account for a closed epoch.
    Reward {
        /// The account.
        account: Address,
        /// The epoch.
        epoch: u64,
        /// For capacity.
        capacity: Amount,
        /// For work served.
        work: Amount,
        /// For checking.
        checkers: Amount,
    },
    /// Stakers' rewards added to a device's pool for a closed epoch.
    StakingReward {
        /// The device.
        device: Address,
        /// The epoch.
        epoch: u64,
        /// How many tokens.
        amount: Amount,
    },
}

impl Event {
    /// Accounts and devices this event concerns (for filtered subscriptions).
    pub fn subjects(&self) -> Vec<Address> {
        match self {
            Self::Transfer { from, to, .. } => vec![*from, *to],
            Self::Burn { from, .. } => vec![*from],
            Self::CreditsBought { account, .. } => vec![*account],
            Self::PriceSubmitted { oracle, .. } => vec![*oracle],
            Self::DeviceRegistered { device, owner, .. } => vec![*device, *owner],
            Self::DeviceUpdated { device } | Self::DeviceRetired { device, .. } => vec![*device],
            Self::Delegated { device, staker, .. } | Self::Undelegated { device, staker, .. } => {
                vec![*device, *staker]
            }
            Self::UnbondingReleased { owner, .. } => vec![*owner],
            Self::DeploymentOpened { owner, leases, .. } => {
                let mut v = vec![*owner];
                v.extend(leases.iter().map(|(_, d)| *d));
                v
            }
            Self::DeploymentClosed { .. }
            | Self::DeploymentExtended { .. }
            | Self::EpochClosed { .. } => vec![],
            Self::LeaseReported { device, .. } | Self::LeaseEnded { device, .. } => vec![*device],
            Self::ResultsPosted { checker, .. }
            | Self::CheckerRegistered { checker, .. }
            | Self::CheckerRetired { checker, .. }
            | Self::CheckerPenalized { checker, .. } => vec![*checker],
            Self::RoundStarted { .. } => vec![],
            Self::Verdict { device, .. } | Self::SlashedForRounds { device, .. } => vec![*device],
            Self::DisputeOpened {
                checker,
                device,
                by,
                ..
            } => vec![*checker, *device, *by],
            Self::ResultBacked {
                checker, device, ..
            } => vec![*checker, *device],
            Self::Slashed {
                device, reporter, ..
            } => vec![*device, *reporter],
            Self::Reward { account, .. } => vec![*account],
            Self::StakingReward { device, .. } => vec![*device],
        }
    }
}

impl Event {
    /// The deployment this event concerns, if any (for filtered subscriptions).
    pub fn deployment(&self) -> Option<u64> {
        match self {
            Self::DeploymentOpened { deployment, .. }
            | Self::DeploymentClosed { deployment }
            | Self::DeploymentExtended { deployment, .. }
            | Self::LeaseReported { deployment, .. }
            | Self::LeaseEnded { deployment, .. } => Some(*deployment),
            _ => None,
        }
    }
}

/// Everything applying one block produced.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    /// The block's height.
    pub height: u64,
    /// The block's hash.
    pub block_hash: Hash,
    /// The state root after the block.
    pub state_root: Hash,
    /// One result per transaction, in order.
    pub results: Vec<TxResult>,
    /// Events, each with the index of the transaction that caused it (`None`: the block
    /// itself, such as an epoch closing or a lease running out).
    pub events: Vec<(Option<u32>, Event)>,
    /// Records changed: `(key, Some(value))` written, `(key, None)` deleted.
    pub changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}
