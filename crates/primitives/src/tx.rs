//! Transactions: what each is, how it is encoded, and how it is signed.
//!
//! A transaction is signed by its sender under the namespace `cairn/tx/<chain id>`: the chain id
//! is part of every signed message, so a transaction for one network is invalid on another.

use crate::codec::{BoundedString, vec_cfg};
use crate::crypto::{self, Address, Keypair, PublicKey, Signature};
use crate::hash::{Hash, sha256};
use crate::state::{DeviceSpec, JobSpec, Resources, Usage};
use crate::{Amount, PayUnits};
use bytes::BufMut;
use commonware_codec::{Buf, Encode, EncodeSize, Error, Read, ReadExt, Write};

/// Devices one `SettleRewards` may name.
pub const MAX_SETTLE_DEVICES: usize = 4096;
/// Most Merkle path nodes in a fraud proof.
pub const MAX_PROOF_PATH: usize = 64;
/// Most values in an opened result row.
pub const MAX_OPENED_ROW: usize = 16_384;

/// The signing namespace for `kind` (`tx`, `device-pop`, `popw-answer`) on `chain_id`.
pub fn namespace(kind: &str, chain_id: &str) -> Vec<u8> {
    format!("cairn/{kind}/{chain_id}").into_bytes()
}

/// What a device key signs to prove that it agrees to be registered by `owner`.
pub fn device_pop_message(owner: &Address) -> [u8; 32] {
    owner.0
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    /// Who signs; pays the fee (a lease report's fee is paid by the device's owner).
    pub sender: PublicKey,
    /// Must equal the sender's next nonce: orders the sender's transactions and stops replays.
    pub nonce: u64,
    /// Burned; at least the genesis minimum.
    pub fee: Amount,
    /// What the transaction does.
    pub body: TxBody,
}

/// A transaction with its sender's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Tx,
    /// The sender's signature over `namespace("tx", chain) ‖ encode(tx)`.
    pub signature: Signature,
}

impl Tx {
    /// Signs the transaction for `chain_id`.
    pub fn sign(self, key: &Keypair, chain_id: &str) -> SignedTx {
        let signature = key.sign(&namespace("tx", chain_id), &self.encode());
        SignedTx {
            tx: self,
            signature,
        }
    }

    /// The sender's address.
    pub fn sender_address(&self) -> Address {
        Address::of(&self.sender)
    }
}

impl SignedTx {
    /// Whether the signature is valid for `chain_id`.
    pub fn verify(&self, chain_id: &str) -> bool {
        crypto::verify_signature(
            &self.tx.sender,
            &namespace("tx", chain_id),
            &self.tx.encode(),
            &self.signature,
        )
    }

    /// The transaction's id: SHA-256 of its signed encoding.
    pub fn hash(&self) -> Hash {
        sha256(&[&self.encode()])
    }
}

codec_struct!(Tx {
    sender: (),
    nonce: (),
    fee: (),
    body: ()
});
codec_struct!(SignedTx {
    tx: (),
    signature: ()
});

/// What a transaction does (docs/design.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxBody {
    /// Move tokens.
    Transfer {
        /// Recipient.
        to: Address,
        /// Amount in base units.
        amount: Amount,
    },
    /// Burn tokens for compute credits at the oracle price.
    BuyCredits {
        /// Tokens to burn.
        amount: Amount,
    },
    /// An oracle's token price.
    SubmitPrice {
        /// Micro-USD per whole token.
        micro_usd_per_token: u64,
    },
    /// Register a device and bond its stake.
    RegisterDevice(RegisterDevice),
    /// Change a device's price or availability.
    UpdateDevice {
        /// The device.
        device: Address,
        /// New price per hour, if changing.
        price_per_hour: Option<PayUnits>,
        /// New availability, if changing.
        available: Option<bool>,
    },
    /// Retire a device: its stake starts unbonding.
    RetireDevice {
        /// The device.
        device: Address,
    },
    /// Stake behind a device.
    Delegate {
        /// The device.
        device: Address,
        /// Tokens to stake.
        amount: Amount,
    },
    /// Withdraw delegated stake (it unbonds first).
    Undelegate {
        /// The device.
        device: Address,
        /// Pool shares to redeem.
        shares: u64,
    },
    /// Rent devices: matched in the same block, all replicas or none.
    OpenDeployment(OpenDeployment),
    /// Stop a deployment early; unused deposit comes back pro rata.
    CloseDeployment {
        /// The deployment.
        deployment: u64,
    },
    /// Run a deployment's active leases longer; their extra deposit is escrowed now.
    ExtendDeployment {
        /// The deployment.
        deployment: u64,
        /// Seconds added to every active lease.
        extra_secs: u64,
    },
    /// A device reports on its lease (signed by the device key).
    LeaseReport {
        /// The lease.
        lease: u64,
        /// What happened.
        kind: LeaseReportKind,
        /// Resources used so far.
        usage: Usage,
    },
    /// A checker's results for a round, for a run of the devices assigned to it (in
    /// assignment order, docs/checkers.md): 2 bits each, and optionally their uptime.
    PostResults(PostResults),
    /// Stake an account as a checker, with the endpoint workers dial.
    RegisterChecker {
        /// `host:port`.
        endpoint: BoundedString<128>,
        /// Tokens bonded (at least the genesis minimum).
        stake: Amount,
    },
    /// Stop checking: leaves every later committee; the stake starts unbonding.
    RetireChecker,
    /// Ask a checker to back its result for a device with the device's receipt.
    DisputeResult {
        /// The checker.
        checker: Address,
        /// The device.
        device: Address,
        /// The round's height.
        round: u64,
    },
    /// A checker backs a disputed result with the receipt the device signed for it.
    BackResult {
        /// The device.
        device: Address,
        /// The round's height.
        round: u64,
        /// The device's receipt.
        receipt: crate::Receipt,
    },
    /// Evidence that a device signed a wrong challenge answer; slashes it.
    SubmitFraudProof(FraudProof),
    /// Pay devices what closed epochs owe them (owners, stake pools) and move their
    /// reputation. Anyone may send it: it only pays what the ledger already owes.
    SettleRewards {
        /// The devices, each at most once.
        devices: Vec<Address>,
    },
}

/// Register a device: the device key co-signs, proving possession.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterDevice {
    /// The device's own key; its address becomes the device id.
    pub device_key: PublicKey,
    /// Class name from the catalog.
    pub class: BoundedString<32>,
    /// What the device claims to have.
    pub spec: DeviceSpec,
    /// Free-form region label, such as `eu-west`.
    pub region: BoundedString<32>,
    /// Price floor per hour, in payment units (credits under `bme`, base tokens under `direct`).
    pub price_per_hour: PayUnits,
    /// The device key's signature over the owner's address (namespace `device-pop`).
    pub pop: Signature,
}
codec_struct!(RegisterDevice {
    device_key: (),
    class: (),
    spec: (),
    region: (),
    price_per_hour: (),
    pop: (),
});

/// Open a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenDeployment {
    /// What each replica needs.
    pub resources: Resources,
    /// How many devices (each gets one replica).
    pub replicas: u16,
    /// Only devices in this region, when set.
    pub region: Option<BoundedString<32>>,
    /// How long the deployment runs.
    pub duration_secs: u64,
    /// The most the customer pays per device-hour, in payment units.
    pub max_price_per_hour: PayUnits,
    /// What to run.
    pub job: JobSpec,
}
codec_struct!(OpenDeployment {
    resources: (),
    replicas: (),
    region: (),
    duration_secs: (),
    max_price_per_hour: (),
    job: (),
});

/// What a device says about its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseReportKind {
    /// The job has started.
    Started,
    /// The job is still running.
    Running,
    /// The job exited.
    Finished {
        /// Its exit code.
        exit_code: i32,
    },
    /// The job could not run or was stopped by a limit.
    Failed {
        /// Why.
        reason: BoundedString<256>,
    },
}

impl Write for LeaseReportKind {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Self::Started => 0u8.write(buf),
            Self::Running => 1u8.write(buf),
            Self::Finished { exit_code } => {
                2u8.write(buf);
                exit_code.write(buf);
            }
            Self::Failed { reason } => {
                3u8.write(buf);
                reason.write(buf);
            }
        }
    }
}
impl EncodeSize for LeaseReportKind {
    fn encode_size(&self) -> usize {
        1 + match self {
            Self::Started | Self::Running => 0,
            Self::Finished { exit_code } => exit_code.encode_size(),
            Self::Failed { reason } => reason.encode_size(),
        }
    }
}
impl Read for LeaseReportKind {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Started,
            1 => Self::Running,
            2 => Self::Finished {
                exit_code: i32::read(buf)?,
            },
            3 => Self::Failed {
                reason: BoundedString::read(buf)?,
            },
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}

/// A checker's results for `count` of its devices from position `first` of its assignment
/// list, in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostResults {
    /// The round's height.
    pub round: u64,
    /// Position in the checker's assignment list of the first device covered.
    pub first: u32,
    /// Devices covered.
    pub count: u32,
    /// One [`ResultCode`](crate::ResultCode) per device, four to a byte
    /// ([`pack_codes`](crate::pack_codes)).
    pub codes: Vec<u8>,
    /// Empty, or one heartbeat uptime per device for the epoch so far, in 1/200 steps.
    pub uptime: Vec<u8>,
    /// Empty (when no device covered is a CPU-class pass), or one byte per device: for a
    /// CPU-class device whose code is pass, the cores its answer's time showed (1-255, see
    /// `cairn_popw::measured_cores`); 0 for any other.
    pub cores: Vec<u8>,
}
codec_struct!(PostResults {
    round: (),
    first: (),
    count: (),
    codes: vec_cfg::<()>(crate::MAX_RESULTS / 4),
    uptime: vec_cfg::<()>(crate::MAX_RESULTS),
    cores: vec_cfg::<()>(crate::MAX_RESULTS),
});

/// Evidence that a device signed a wrong answer to a challenge: its signed commitment and one
/// opened result row containing an entry that differs from the true dot product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FraudProof {
    /// The accused device.
    pub device: Address,
    /// The challenge nonce.
    pub nonce: Hash,
    /// The matrix dimension.
    pub n: u32,
    /// The Merkle root the device signed.
    pub root: Hash,
    /// The device's signature over `(nonce, n, root)` (namespace `popw-answer`).
    pub device_signature: Signature,
    /// Which result row is opened.
    pub row: u32,
    /// The row's values as the device committed them.
    pub values: Vec<i32>,
    /// The Merkle path from the row's leaf to the root.
    pub path: Vec<Hash>,
    /// Which entry of the row is wrong.
    pub col: u32,
}
codec_struct!(FraudProof {
    device: (),
    nonce: (),
    n: (),
    root: (),
    device_signature: (),
    row: (),
    values: vec_cfg::<()>(MAX_OPENED_ROW),
    path: vec_cfg::<()>(MAX_PROOF_PATH),
    col: (),
});

impl TxBody {
    /// A short, stable name for the transaction kind (used in events and the API).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transfer { .. } => "transfer",
            Self::BuyCredits { .. } => "buy_credits",
            Self::SubmitPrice { .. } => "submit_price",
            Self::RegisterDevice(_) => "register_device",
            Self::UpdateDevice { .. } => "update_device",
            Self::RetireDevice { .. } => "retire_device",
            Self::Delegate { .. } => "delegate",
            Self::Undelegate { .. } => "undelegate",
            Self::OpenDeployment(_) => "open_deployment",
            Self::CloseDeployment { .. } => "close_deployment",
            Self::ExtendDeployment { .. } => "extend_deployment",
            Self::LeaseReport { .. } => "lease_report",
            Self::PostResults(_) => "post_results",
            Self::RegisterChecker { .. } => "register_checker",
            Self::RetireChecker => "retire_checker",
            Self::DisputeResult { .. } => "dispute_result",
            Self::BackResult { .. } => "back_result",
            Self::SubmitFraudProof(_) => "submit_fraud_proof",
            Self::SettleRewards { .. } => "settle_rewards",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Self::Transfer { .. } => 0,
            Self::BuyCredits { .. } => 1,
            Self::SubmitPrice { .. } => 2,
            Self::RegisterDevice(_) => 3,
            Self::UpdateDevice { .. } => 4,
            Self::RetireDevice { .. } => 5,
            Self::Delegate { .. } => 6,
            Self::Undelegate { .. } => 7,
            Self::OpenDeployment(_) => 8,
            Self::CloseDeployment { .. } => 9,
            Self::LeaseReport { .. } => 10,
            Self::PostResults(_) => 11,
            Self::SubmitFraudProof(_) => 12,
            Self::ExtendDeployment { .. } => 13,
            Self::SettleRewards { .. } => 14,
            Self::RegisterChecker { .. } => 15,
            Self::RetireChecker => 16,
            Self::DisputeResult { .. } => 17,
            Self::BackResult { .. } => 18,
        }
    }
}

impl Write for TxBody {
    fn write(&self, buf: &mut impl BufMut) {
        self.tag().write(buf);
        match self {
            Self::Transfer { to, amount } => {
                to.write(buf);
                amount.write(buf);
            }
            Self::BuyCredits { amount } => amount.write(buf),
            Self::SubmitPrice {
                micro_usd_per_token,
            } => micro_usd_per_token.write(buf),
            Self::RegisterDevice(r) => r.write(buf),
            Self::UpdateDevice {
                device,
                price_per_hour,
                available,
            } => {
                device.write(buf);
                price_per_hour.write(buf);
                available.write(buf);
            }
            Self::RetireDevice { device } => device.write(buf),
            Self::Delegate { device, amount } => {
                device.write(buf);
                amount.write(buf);
            }
            Self::Undelegate { device, shares } => {
                device.write(buf);
                shares.write(buf);
            }
            Self::OpenDeployment(o) => o.write(buf),
            Self::CloseDeployment { deployment } => deployment.write(buf),
            Self::ExtendDeployment {
                deployment,
                extra_secs,
            } => {
                deployment.write(buf);
                extra_secs.write(buf);
            }
            Self::LeaseReport { lease, kind, usage } => {
                lease.write(buf);
                kind.write(buf);
                usage.write(buf);
            }
            Self::PostResults(r) => r.write(buf),
            Self::RegisterChecker { endpoint, stake } => {
                endpoint.write(buf);
                stake.write(buf);
            }
            Self::RetireChecker => {}
            Self::DisputeResult {
                checker,
                device,
                round,
            } => {
                checker.write(buf);
                device.write(buf);
                round.write(buf);
            }
            Self::BackResult {
                device,
                round,
                receipt,
            } => {
                device.write(buf);
                round.write(buf);
                receipt.write(buf);
            }
            Self::SubmitFraudProof(p) => p.write(buf),
            Self::SettleRewards { devices } => devices.write(buf),
        }
    }
}

impl EncodeSize for TxBody {
    fn encode_size(&self) -> usize {
        1 + match self {
            Self::Transfer { to, amount } => to.encode_size() + amount.encode_size(),
            Self::BuyCredits { amount } => amount.encode_size(),
            Self::SubmitPrice {
                micro_usd_per_token,
            } => micro_usd_per_token.encode_size(),
            Self::RegisterDevice(r) => r.encode_size(),
            Self::UpdateDevice {
                device,
                price_per_hour,
                available,
            } => device.encode_size() + price_per_hour.encode_size() + available.encode_size(),
            Self::RetireDevice { device } => device.encode_size(),
            Self::Delegate { device, amount } => device.encode_size() + amount.encode_size(),
            Self::Undelegate { device, shares } => device.encode_size() + shares.encode_size(),
            Self::OpenDeployment(o) => o.encode_size(),
            Self::CloseDeployment { deployment } => deployment.encode_size(),
            Self::ExtendDeployment {
                deployment,
                extra_secs,
            } => deployment.encode_size() + extra_secs.encode_size(),
            Self::LeaseReport { lease, kind, usage } => {
                lease.encode_size() + kind.encode_size() + usage.encode_size()
            }
            Self::PostResults(r) => r.encode_size(),
            Self::RegisterChecker { endpoint, stake } => {
                endpoint.encode_size() + stake.encode_size()
            }
            Self::RetireChecker => 0,
            Self::DisputeResult {
                checker,
                device,
                round,
            } => checker.encode_size() + device.encode_size() + round.encode_size(),
            Self::BackResult {
                device,
                round,
                receipt,
            } => device.encode_size() + round.encode_size() + receipt.encode_size(),
            Self::SubmitFraudProof(p) => p.encode_size(),
            Self::SettleRewards { devices } => devices.encode_size(),
        }
    }
}

impl Read for TxBody {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(match u8::read(buf)? {
            0 => Self::Transfer {
                to: Address::read(buf)?,
                amount: Amount::read(buf)?,
            },
            1 => Self::BuyCredits {
                amount: Amount::read(buf)?,
            },
            2 => Self::SubmitPrice {
                micro_usd_per_token: u64::read(buf)?,
            },
            3 => Self::RegisterDevice(RegisterDevice::read(buf)?),
            4 => Self::UpdateDevice {
                device: Address::read(buf)?,
                price_per_hour: Option::<PayUnits>::read(buf)?,
                available: Option::<bool>::read(buf)?,
            },
            5 => Self::RetireDevice {
                device: Address::read(buf)?,
            },
            6 => Self::Delegate {
                device: Address::read(buf)?,
                amount: Amount::read(buf)?,
            },
            7 => Self::Undelegate {
                device: Address::read(buf)?,
                shares: u64::read(buf)?,
            },
            8 => Self::OpenDeployment(OpenDeployment::read(buf)?),
            9 => Self::CloseDeployment {
                deployment: u64::read(buf)?,
            },
            10 => Self::LeaseReport {
                lease: u64::read(buf)?,
                kind: LeaseReportKind::read(buf)?,
                usage: Usage::read(buf)?,
            },
            11 => Self::PostResults(PostResults::read(buf)?),
            12 => Self::SubmitFraudProof(FraudProof::read(buf)?),
            13 => Self::ExtendDeployment {
                deployment: u64::read(buf)?,
                extra_secs: u64::read(buf)?,
            },
            14 => Self::SettleRewards {
                devices: Vec::<Address>::read_cfg(buf, &vec_cfg(MAX_SETTLE_DEVICES))?,
            },
            15 => Self::RegisterChecker {
                endpoint: BoundedString::read(buf)?,
                stake: Amount::read(buf)?,
            },
            16 => Self::RetireChecker,
            17 => Self::DisputeResult {
                checker: Address::read(buf)?,
                device: Address::read(buf)?,
                round: u64::read(buf)?,
            },
            18 => Self::BackResult {
                device: Address::read(buf)?,
                round: u64::read(buf)?,
                receipt: crate::Receipt::read(buf)?,
            },
            t => return Err(Error::InvalidEnum(t)),
        })
    }
}
