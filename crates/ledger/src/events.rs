//! What applying a block reports: per-transaction results and events.

use crate::TxError;
use cairn_primitives::{Address, Amount, EpochRecord, Hash, LeaseState};
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
#[allow(missing_docs)]
pub enum Event {
    Transfer {
        from: Address,
        to: Address,
        amount: Amount,
    },
    Burn {
        from: Address,
        amount: Amount,
        reason: &'static str,
    },
    CreditsBought {
        account: Address,
        tokens: Amount,
        credits: u64,
    },
    PriceSubmitted {
        oracle: Address,
        micro_usd_per_token: u64,
    },
    DeviceRegistered {
        device: Address,
        owner: Address,
        class: String,
        stake: Amount,
    },
    DeviceUpdated {
        device: Address,
    },
    DeviceRetired {
        device: Address,
        unbonding: Amount,
    },
    Delegated {
        device: Address,
        staker: Address,
        amount: Amount,
        shares: u64,
    },
    Undelegated {
        device: Address,
        staker: Address,
        amount: Amount,
        shares: u64,
    },
    UnbondingReleased {
        owner: Address,
        amount: Amount,
    },
    DeploymentOpened {
        deployment: u64,
        owner: Address,
        deposit: u64,
        leases: Vec<(u64, Address)>,
    },
    DeploymentClosed {
        deployment: u64,
    },
    DeploymentExtended {
        deployment: u64,
        extra_deposit: u64,
        end_ms: u64,
    },
    LeaseReported {
        lease: u64,
        deployment: u64,
        device: Address,
        kind: &'static str,
    },
    LeaseEnded {
        lease: u64,
        deployment: u64,
        device: Address,
        state: LeaseState,
        paid: u64,
        refunded: u64,
    },
    Attested {
        checker: Address,
        epoch: u64,
        results: u64,
    },
    Slashed {
        device: Address,
        amount: Amount,
        reporter: Address,
    },
    EpochClosed {
        record: EpochRecord,
    },
    Reward {
        account: Address,
        epoch: u64,
        capacity: Amount,
        work: Amount,
        checkers: Amount,
    },
    StakingReward {
        device: Address,
        epoch: u64,
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
            Self::Attested { checker, .. } => vec![*checker],
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
