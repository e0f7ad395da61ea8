//! The records the ledger keeps, and the keys they live under in the state root.

use crate::codec::{BoundedString, vec_cfg};
use crate::tx::OpenDeployment;
use crate::{Address, Amount, ClassId, Credits, Hash, PayUnits};
use bytes::BufMut;
use commonware_codec::{Buf, Encode, EncodeSize, Error, Read, ReadExt, Write};
use serde::Serialize;

/// Most class names a deployment may list.
pub const MAX_RESOURCE_CLASSES: usize = 16;
/// Most command arguments and most environment variables of a job.
pub const MAX_JOB_ARGS: usize = 32;

/// What a device has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    /// GPUs on the device (1 for a GPU device, 0 for a CPU device).
    pub gpu_count: u16,
    /// Memory per GPU in MiB.
    pub vram_mib: u64,
    /// CPU cores.
    pub cpu_cores: u32,
    /// RAM in MiB.
    pub ram_mib: u64,
}
codec_struct!(DeviceSpec {
    gpu_count: (),
    vram_mib: (),
    cpu_cores: (),
    ram_mib: ()
});

/// What each replica of a deployment needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Acceptable classes by name; empty means any class that satisfies the minimums.
    pub classes: Vec<BoundedString<32>>,
    /// Minimum memory per GPU in MiB.
    pub min_vram_mib: u64,
    /// Minimum GPUs.
    pub gpu_count: u16,
    /// Minimum CPU cores.
    pub cpu_cores: u32,
    /// Minimum RAM in MiB.
    pub ram_mib: u64,
}
codec_struct!(Resources {
    classes: vec_cfg::<()>(MAX_RESOURCE_CLASSES),
    min_vram_mib: (),
    gpu_count: (),
    cpu_cores: (),
    ram_mib: (),
});

/// What a deployment runs: an OCI image (Docker runtime) or a bare command (sandbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// OCI image reference, when the job runs in a container.
    pub image: Option<BoundedString<256>>,
    /// Command and arguments.
    pub command: Vec<BoundedString<1024>>,
    /// Environment variables.
    pub env: Vec<(BoundedString<128>, BoundedString<1024>)>,
    /// Whether the job may use the network; jobs run without it unless they ask.
    pub network: bool,
}
codec_struct!(JobSpec {
    image: (),
    command: vec_cfg::<()>(MAX_JOB_ARGS),
    env: vec_cfg::<((), ())>(MAX_JOB_ARGS),
    network: (),
});

/// Resources a job used, as its device reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time in milliseconds.
    pub cpu_ms: u64,
    /// GPU busy time in milliseconds.
    pub gpu_ms: u64,
    /// Peak resident memory in MiB.
    pub max_rss_mib: u64,
    /// Bytes of log output.
    pub log_bytes: u64,
}
codec_struct!(Usage {
    cpu_ms: (),
    gpu_ms: (),
    max_rss_mib: (),
    log_bytes: ()
});

/// An account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Spendable tokens.
    pub balance: Amount,
    /// The nonce the next transaction from this account must carry.
    pub nonce: u64,
    /// Compute credits (non-transferable).
    pub credits: Credits,
}
codec_struct!(Account {
    balance: (),
    nonce: (),
    credits: ()
});

impl Account {
    /// Whether the account holds nothing and has never sent: such accounts are not stored.
    pub fn is_empty(&self) -> bool {
        self.balance == Amount::ZERO && self.nonce == 0 && self.credits.0 == 0
    }
}

/// The stake bonded to a device: its owner's bond and its delegators', as shares of one pool,
/// so that staking rewards compound and slashing hits every staker in proportion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StakePool {
    /// Tokens in the pool.
    pub tokens: Amount,
    /// Shares outstanding.
    pub shares: u64,
}
codec_struct!(StakePool {
    tokens: (),
    shares: ()
});

/// Where a device is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Registered and bonded.
    Active,
    /// Retired by its owner; its stake is unbonding.
    Retired,
    /// Caught by a fraud proof; its stake was slashed.
    Slashed,
}

impl Write for DeviceStatus {
    fn write(&self, buf: &mut impl BufMut) {
        (*self as u8).write(buf);
    }
}
impl EncodeSize for DeviceStatus {
    fn encode_size(&self) -> usize {
        1
    }
}
impl Read for DeviceStatus {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Active,
            1 => Self::Retired,
            2 => Self::Slashed,
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}

/// A registered device. Its id is the address of its device key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The account that registered it and receives its rewards.
    pub owner: Address,
    /// Its class in the genesis catalog.
    pub class: ClassId,
    /// What it claims to have.
    pub spec: DeviceSpec,
    /// Region label.
    pub region: BoundedString<32>,
    /// Price per hour in payment units.
    pub price_per_hour: PayUnits,
    /// Life-cycle status.
    pub status: DeviceStatus,
    /// Whether the owner offers it for leases.
    pub available: bool,
    /// Reputation, parts per million; moves with verdicts.
    pub reputation_ppm: u32,
    /// Bonded stake (owner and delegators).
    pub pool: StakePool,
    /// The stake its class requires the owner to bond.
    pub required_stake: Amount,
    /// The lease it is serving, if any: a device is never booked twice.
    pub lease: Option<u64>,
    /// Block time it registered at.
    pub registered_ms: u64,
    /// The epoch its tally counts for. A tally from an epoch that has closed is settled (its
    /// rewards paid, its reputation moved) by the device's next transaction.
    pub tally_epoch: u64,
    /// Epoch tally: the epoch's worst decided verdict (`Pending`: none yet). Only a tally
    /// whose verdict is `Pass` earns capacity and staking rewards.
    pub tally_verdict: crate::Verdict,
    /// Epoch tally: the median heartbeat uptime of its latest decided verdict, in 1/200 steps.
    pub tally_uptime: u8,
    /// Epoch tally: payment units consumed on this device.
    pub work: u64,
    /// Where it stands with its checkers.
    pub standing: crate::Standing,
}
codec_struct!(Device {
    owner: (),
    class: (),
    spec: (),
    region: (),
    price_per_hour: (),
    status: (),
    available: (),
    reputation_ppm: (),
    pool: (),
    required_stake: (),
    lease: (),
    registered_ms: (),
    tally_epoch: (),
    tally_verdict: (),
    tally_uptime: (),
    work: (),
    standing: (),
});

/// A staker's shares in a device's pool (the owner's bond is a delegation too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delegation {
    /// Shares held.
    pub shares: u64,
}
codec_struct!(Delegation { shares: () });

/// Stake on its way back to its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unbonding {
    /// Who receives it.
    pub owner: Address,
    /// Tokens.
    pub amount: Amount,
    /// Block time at or after which it is released.
    pub release_ms: u64,
}
codec_struct!(Unbonding {
    owner: (),
    amount: (),
    release_ms: ()
});

/// Where a deployment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Leases are running or pending.
    Open,
    /// Closed early by its owner.
    Closed,
    /// Every lease has ended.
    Finished,
}
impl Write for DeploymentStatus {
    fn write(&self, buf: &mut impl BufMut) {
        (*self as u8).write(buf);
    }
}
impl EncodeSize for DeploymentStatus {
    fn encode_size(&self) -> usize {
        1
    }
}
impl Read for DeploymentStatus {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Open,
            1 => Self::Closed,
            2 => Self::Finished,
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}

/// A deployment: a customer's request, its escrow and its leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The customer.
    pub owner: Address,
    /// The request as submitted.
    pub request: OpenDeployment,
    /// Block time it opened.
    pub created_ms: u64,
    /// Status.
    pub status: DeploymentStatus,
    /// Its leases, one per replica.
    pub leases: Vec<u64>,
    /// Deposit escrowed, in payment units.
    pub deposit: PayUnits,
    /// Paid out to providers so far (consumed credits under `bme`).
    pub paid: PayUnits,
    /// Refunded to the customer so far.
    pub refunded: PayUnits,
}
codec_struct!(Deployment {
    owner: (),
    request: (),
    created_ms: (),
    status: (),
    leases: vec_cfg::<()>(u16::MAX as usize),
    deposit: (),
    paid: (),
    refunded: (),
});

/// Where a lease is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Booked and being served.
    Active,
    /// The job exited before the lease ran out.
    Finished,
    /// The job failed.
    Failed,
    /// The customer closed the deployment.
    Closed,
    /// It ran its full duration.
    Expired,
    /// Its device stopped reporting for longer than the genesis lease timeout.
    TimedOut,
}
impl Write for LeaseState {
    fn write(&self, buf: &mut impl BufMut) {
        (*self as u8).write(buf);
    }
}
impl EncodeSize for LeaseState {
    fn encode_size(&self) -> usize {
        1
    }
}
impl Read for LeaseState {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Active,
            1 => Self::Finished,
            2 => Self::Failed,
            3 => Self::Closed,
            4 => Self::Expired,
            5 => Self::TimedOut,
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}

/// One replica of a deployment on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The deployment.
    pub deployment: u64,
    /// The device serving it.
    pub device: Address,
    /// The device's price when matched, per hour.
    pub price_per_hour: PayUnits,
    /// Block time it was booked.
    pub start_ms: u64,
    /// Block time it runs out.
    pub end_ms: u64,
    /// Served time has been paid up to this block time.
    pub settled_ms: u64,
    /// Paid so far, in payment units.
    pub paid: PayUnits,
    /// Its share of the deployment's deposit.
    pub deposit: PayUnits,
    /// State.
    pub state: LeaseState,
    /// Whether the device reported the job started.
    pub started: bool,
    /// The job's exit code, when it finished.
    pub exit_code: Option<i32>,
    /// Latest usage report.
    pub usage: Usage,
    /// Block time of the device's latest report (its start until the first): the lease times
    /// out when this falls more than the genesis lease timeout behind.
    pub last_seen_ms: u64,
    /// Why it failed, as its device reported (a limit, a crash, a shutdown).
    pub reason: Option<BoundedString<256>>,
}
codec_struct!(Lease {
    deployment: (),
    device: (),
    price_per_hour: (),
    start_ms: (),
    end_ms: (),
    settled_ms: (),
    paid: (),
    deposit: (),
    state: (),
    started: (),
    exit_code: (),
    usage: (),
    last_seen_ms: (),
    reason: (),
});

/// An oracle's latest price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OraclePrice {
    /// Micro-USD per whole token.
    pub micro_usd_per_token: u64,
    /// Block time it was submitted.
    pub at_ms: u64,
}
codec_struct!(OraclePrice {
    micro_usd_per_token: (),
    at_ms: ()
});

/// What an epoch minted, burned and paid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: u64,
    /// Height of the block that closed it.
    pub closed_at_height: u64,
    /// Tokens minted for it.
    pub minted: Amount,
    /// Tokens burned during it.
    pub burned: Amount,
    /// Paid so far from the capacity pool (to owners, as devices settle).
    pub capacity: Amount,
    /// Paid so far from the work pool.
    pub work: Amount,
    /// Paid so far from the stakers pool (into devices' stake pools).
    pub stakers: Amount,
    /// Checkers pool paid.
    pub checkers: Amount,
    /// Treasury share: every pool with nobody to pay, what the checkers' floors left and,
    /// once every device is settled, what the devices' floors left. At every moment
    /// `minted = capacity + work + stakers + checkers + treasury + unpaid`.
    pub treasury: Amount,
    /// Devices with a share of the capacity or work pool.
    pub devices_rewarded: u64,
    /// Capacity pool, shared by verified devices in proportion to `capacity_weight`.
    pub capacity_pool: Amount,
    /// Work pool, shared in proportion to `work_weight`.
    pub work_pool: Amount,
    /// Stakers pool, shared by verified devices' stake pools in proportion to `stake_weight`.
    pub stakers_pool: Amount,
    /// Sum of verified devices' capacity weights (class weight × units × mean uptime ppm).
    pub capacity_weight: u128,
    /// Sum of devices' work (payment units consumed).
    pub work_weight: u128,
    /// Sum of verified devices' pool tokens at the close.
    pub stake_weight: u128,
    /// Devices with a tally for this epoch not yet settled.
    pub unsettled: u64,
    /// Pool tokens not yet paid to devices (held for them; part of the supply).
    pub unpaid: Amount,
}
codec_struct!(EpochRecord {
    epoch: (),
    closed_at_height: (),
    minted: (),
    burned: (),
    capacity: (),
    work: (),
    stakers: (),
    checkers: (),
    treasury: (),
    devices_rewarded: (),
    capacity_pool: (),
    work_pool: (),
    stakers_pool: (),
    capacity_weight: (),
    work_weight: (),
    stake_weight: (),
    unsettled: (),
    unpaid: (),
});

/// Chain-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Globals {
    /// Height of the last applied block (0 = genesis).
    pub height: u64,
    /// Hash of the last applied block header.
    pub last_block: Hash,
    /// Timestamp of the last applied block.
    pub last_timestamp_ms: u64,
    /// Tokens in existence: genesis + minted − burned.
    pub supply: Amount,
    /// Minted since genesis.
    pub minted: Amount,
    /// Burned since genesis.
    pub burned: Amount,
    /// Credits held by accounts.
    pub credits_outstanding: u64,
    /// Payment units held in deployment escrow (tokens under `direct`, credits under `bme`).
    pub escrow: PayUnits,
    /// Tokens unbonding.
    pub unbonding: Amount,
    /// Tokens bonded to devices and checkers.
    pub staked: Amount,
    /// Next deployment id.
    pub next_deployment: u64,
    /// Next lease id.
    pub next_lease: u64,
    /// Next unbonding id.
    pub next_unbonding: u64,
    /// The epoch in progress.
    pub epoch: u64,
    /// Burned during the epoch in progress.
    pub epoch_burned: Amount,
    /// Height of the block that started the latest round (0: none yet).
    pub last_round: u64,
    /// Time of the latest regular round.
    pub last_regular_round_ms: u64,
    /// Height of the latest block that registered a device (a join round follows it).
    pub last_registration: u64,
    /// That block's time.
    pub last_registration_ms: u64,
}
codec_struct!(Globals {
    height: (),
    last_block: (),
    last_timestamp_ms: (),
    supply: (),
    minted: (),
    burned: (),
    credits_outstanding: (),
    escrow: (),
    unbonding: (),
    staked: (),
    next_deployment: (),
    next_lease: (),
    next_unbonding: (),
    epoch: (),
    epoch_burned: (),
    last_round: (),
    last_regular_round_ms: (),
    last_registration: (),
    last_registration_ms: (),
});

/// Where a record lives in the state: its key bytes sort records of one kind together, and
/// numeric ids are big-endian so that byte order is numeric order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// [`Globals`].
    Globals,
    /// [`Account`] by address.
    Account(Address),
    /// [`Device`] by device address.
    Device(Address),
    /// [`Delegation`] by (device, staker).
    Delegation(Address, Address),
    /// [`Unbonding`] by id.
    Unbonding(u64),
    /// [`Deployment`] by id.
    Deployment(u64),
    /// [`Lease`] by id.
    Lease(u64),
    /// [`OraclePrice`] by oracle address.
    Oracle(Address),
    /// [`Checker`](crate::Checker) by checker address.
    Checker(Address),
    /// [`EpochRecord`] by epoch.
    Epoch(u64),
    /// [`Committee`](crate::Committee) by epoch.
    Committee(u64),
    /// [`Round`](crate::Round) by the height of the block that started it.
    Round(u64),
    /// [`Dispute`](crate::Dispute) by (checker, device, round height).
    Dispute(Address, Address, u64),
}

impl StateKey {
    /// The key's bytes: a tag, then the id.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(65);
        match self {
            Self::Globals => out.push(0),
            Self::Account(a) => {
                out.push(1);
                out.extend_from_slice(&a.0);
            }
            Self::Device(a) => {
                out.push(2);
                out.extend_from_slice(&a.0);
            }
            Self::Delegation(d, s) => {
                out.push(3);
                out.extend_from_slice(&d.0);
                out.extend_from_slice(&s.0);
            }
            Self::Unbonding(i) => {
                out.push(4);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::Deployment(i) => {
                out.push(5);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::Lease(i) => {
                out.push(6);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::Oracle(a) => {
                out.push(7);
                out.extend_from_slice(&a.0);
            }
            Self::Checker(a) => {
                out.push(8);
                out.extend_from_slice(&a.0);
            }
            Self::Epoch(e) => {
                out.push(9);
                out.extend_from_slice(&e.to_be_bytes());
            }
            Self::Committee(e) => {
                out.push(10);
                out.extend_from_slice(&e.to_be_bytes());
            }
            Self::Round(h) => {
                out.push(11);
                out.extend_from_slice(&h.to_be_bytes());
            }
            Self::Dispute(c, d, r) => {
                out.push(12);
                out.extend_from_slice(&c.0);
                out.extend_from_slice(&d.0);
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
        out
    }

    /// Parses key bytes, or `None` when they are not a key.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (tag, rest) = b.split_first()?;
        let addr = |r: &[u8]| -> Option<Address> { Some(Address(r.try_into().ok()?)) };
        let num = |r: &[u8]| -> Option<u64> { Some(u64::from_be_bytes(r.try_into().ok()?)) };
        Some(match tag {
            0 if rest.is_empty() => Self::Globals,
            1 => Self::Account(addr(rest)?),
            2 => Self::Device(addr(rest)?),
            3 if rest.len() == 64 => Self::Delegation(addr(&rest[..32])?, addr(&rest[32..])?),
            4 => Self::Unbonding(num(rest)?),
            5 => Self::Deployment(num(rest)?),
            6 => Self::Lease(num(rest)?),
            7 => Self::Oracle(addr(rest)?),
            8 => Self::Checker(addr(rest)?),
            9 => Self::Epoch(num(rest)?),
            10 => Self::Committee(num(rest)?),
            11 => Self::Round(num(rest)?),
            12 if rest.len() == 72 => {
                Self::Dispute(addr(&rest[..32])?, addr(&rest[32..64])?, num(&rest[64..])?)
            }
            _ => return None,
        })
    }
}

/// A record of any kind, as stored under a [`StateKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StateValue {
    Globals(Globals),
    Account(Account),
    Device(Device),
    Delegation(Delegation),
    Unbonding(Unbonding),
    Deployment(Deployment),
    Lease(Lease),
    Oracle(OraclePrice),
    Checker(crate::Checker),
    Epoch(EpochRecord),
    Committee(crate::Committee),
    Round(crate::Round),
    Dispute(crate::Dispute),
}

impl StateValue {
    /// The canonical encoding of the record (the key says which kind it is).
    pub fn encode_value(&self) -> Vec<u8> {
        match self {
            Self::Globals(v) => v.encode_mut().into(),
            Self::Account(v) => v.encode_mut().into(),
            Self::Device(v) => v.encode_mut().into(),
            Self::Delegation(v) => v.encode_mut().into(),
            Self::Unbonding(v) => v.encode_mut().into(),
            Self::Deployment(v) => v.encode_mut().into(),
            Self::Lease(v) => v.encode_mut().into(),
            Self::Oracle(v) => v.encode_mut().into(),
            Self::Checker(v) => v.encode_mut().into(),
            Self::Epoch(v) => v.encode_mut().into(),
            Self::Committee(v) => v.encode_mut().into(),
            Self::Round(v) => v.encode_mut().into(),
            Self::Dispute(v) => v.encode_mut().into(),
        }
    }

    /// Decodes the record stored under `key`.
    pub fn decode_value(key: &StateKey, bytes: &[u8]) -> Result<Self, Error> {
        use commonware_codec::DecodeExt;
        Ok(match key {
            StateKey::Globals => Self::Globals(Globals::decode(commonware_codec::Copying(bytes))?),
            StateKey::Account(_) => {
                Self::Account(Account::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Device(_) => Self::Device(Device::decode(commonware_codec::Copying(bytes))?),
            StateKey::Delegation(..) => {
                Self::Delegation(Delegation::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Unbonding(_) => {
                Self::Unbonding(Unbonding::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Deployment(_) => {
                Self::Deployment(Deployment::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Lease(_) => Self::Lease(Lease::decode(commonware_codec::Copying(bytes))?),
            StateKey::Oracle(_) => {
                Self::Oracle(OraclePrice::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Checker(_) => {
                Self::Checker(crate::Checker::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Epoch(_) => {
                Self::Epoch(EpochRecord::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Committee(_) => {
                Self::Committee(crate::Committee::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Round(_) => {
                Self::Round(crate::Round::decode(commonware_codec::Copying(bytes))?)
            }
            StateKey::Dispute(..) => {
                Self::Dispute(crate::Dispute::decode(commonware_codec::Copying(bytes))?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_round_trip_and_sort_numerically() {
        let keys = [
            StateKey::Globals,
            StateKey::Account(Address([7; 32])),
            StateKey::Delegation(Address([1; 32]), Address([2; 32])),
            StateKey::Lease(258),
            StateKey::Epoch(1),
            StateKey::Committee(3),
            StateKey::Round(99),
            StateKey::Dispute(Address([1; 32]), Address([2; 32]), 5),
        ];
        for k in keys {
            assert_eq!(StateKey::from_bytes(&k.to_bytes()), Some(k));
        }
        assert!(StateKey::Lease(2).to_bytes() < StateKey::Lease(256).to_bytes());
        assert_eq!(StateKey::from_bytes(&[1, 2, 3]), None);
        assert_eq!(StateKey::from_bytes(&[]), None);
        assert_eq!(StateKey::from_bytes(&[0, 0]), None);
    }
}
