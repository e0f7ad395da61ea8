//! The genesis file: everything a founder decides before the first block.
//!
//! The file is TOML. Amounts are decimal strings in whole tokens (`"1000.5"`), converted
//! exactly to base units with the token's decimals; a bad value is reported with the name of
//! its field. [`Genesis::validate`] turns the file into [`Params`], the resolved numbers the
//! ledger runs on.

use crate::{Address, Amount, ClassKind, DeviceClass, Hash, sha256};
use serde::{Deserialize, Serialize};

/// Fixed-point scale of the per-epoch decay factor (18 decimal places).
pub const DECAY_SCALE: u128 = 1_000_000_000_000_000_000;

/// How customers pay (docs/design.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentModel {
    /// Burn tokens for USD-priced credits; leases consume credits; providers earn emission.
    Bme,
    /// Customers pay providers in tokens; a protocol fee is burned.
    Direct,
}

/// The token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Ticker, such as `CAIRN`.
    pub symbol: String,
    /// Decimal places of one token in base units.
    pub decimals: u8,
    /// No more than this many tokens will ever exist (whole tokens, decimal string).
    pub supply_cap: String,
}

/// The emission schedule: `E_h = E_0 · r^h` per epoch, with `E_0` chosen so the schedule sums
/// exactly to `budget` over `epochs` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emission {
    /// Tokens emitted over the whole schedule (decimal string).
    pub budget: String,
    /// Length of the schedule in epochs.
    pub epochs: u64,
    /// `r`, the factor between consecutive epochs, as a decimal in (0, 1] with up to 18 places.
    pub decay_per_epoch: String,
    /// After the schedule, re-mint what was burned each epoch (Helium's net emissions), up to
    /// the supply cap.
    #[serde(default)]
    pub net_emission: bool,
}

/// Fees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fees {
    /// Smallest fee a transaction may carry; fees are burned (decimal string).
    pub min_fee: String,
    /// Under `direct`, the share of each payment burned, in basis points.
    pub protocol_fee_bps: u32,
}

/// How each epoch's emission is split, in basis points summing to 10,000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSplit {
    /// Verified, available devices by class weight and uptime.
    pub capacity_bps: u32,
    /// Devices by work served.
    pub work_bps: u32,
    /// Stake behind verified devices.
    pub stakers_bps: u32,
    /// Checkers by results attested.
    pub checkers_bps: u32,
    /// The treasury.
    pub treasury_bps: u32,
}

/// Staking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staking {
    /// Stake per unit at a class multiplier of 100% (decimal string).
    pub min_stake: String,
    /// How long retired or undelegated stake waits before it is released.
    pub unbonding_secs: u64,
    /// Share of a device's stake burned when a fraud proof lands, basis points.
    pub slash_bps: u32,
}

/// The price oracle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oracle {
    /// Keys allowed to submit prices.
    pub keys: Vec<Address>,
    /// Submissions older than this are stale and ignored.
    pub max_age_secs: u64,
}

/// Checkers, rounds and verdicts (docs/checkers.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checking {
    /// Checkers assigned to each device per epoch (all of them when fewer are eligible).
    pub committee: u8,
    /// Rounds started per epoch on average, at moments only a finalized block's seed tells.
    pub rounds_per_epoch: u32,
    /// How long after a device registers its join round starts (time for its worker to
    /// connect to its checkers).
    pub join_delay_secs: u64,
    /// The least time between two regular rounds (short epochs would otherwise start them
    /// faster than devices can answer).
    pub min_round_gap_secs: u64,
    /// The least a checker bonds (decimal string).
    pub min_stake: String,
    /// A verification lapses when a device goes this many epochs without passing a round.
    pub verified_epochs: u64,
    /// Epochs a failed device stays jailed before a passing round frees it.
    pub jail_epochs: u64,
    /// Consecutive failed rounds after which each further one slashes.
    pub slash_after_fails: u32,
    /// Share of the device's stake a slash for missed rounds takes, basis points.
    pub slash_missed_bps: u32,
    /// Share a slash for wrong answers takes, basis points (a fraud proof takes
    /// `staking.slash_bps`).
    pub slash_wrong_bps: u32,
    /// How long a checker has to back a disputed result.
    pub dispute_secs: u64,
    /// Strikes (penalties on evidence) that jail a checker; each one after that slashes it.
    pub checker_jail_strikes: u32,
    /// Epochs a jailed checker sits out.
    pub checker_jail_epochs: u64,
    /// Share of a checker's stake a slash takes, basis points.
    pub checker_slash_bps: u32,
}

impl Default for Checking {
    fn default() -> Self {
        Self {
            committee: 3,
            rounds_per_epoch: 4,
            join_delay_secs: 5,
            min_round_gap_secs: 10,
            min_stake: "1000".into(),
            verified_epochs: 24,
            jail_epochs: 1,
            slash_after_fails: 3,
            slash_missed_bps: 200,
            slash_wrong_bps: 1000,
            dispute_secs: 600,
            checker_jail_strikes: 2,
            checker_jail_epochs: 24,
            checker_slash_bps: 1000,
        }
    }
}

/// A checker at genesis: its stake is minted into its bond.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisChecker {
    /// Its key's address.
    pub address: Address,
    /// Where workers dial it (`host:port`).
    pub endpoint: String,
    /// Its bond (decimal string, at least `checking.min_stake`).
    pub stake: String,
}

/// Checkers at genesis, resolved: (address, endpoint, stake).
type GenesisCheckers = Vec<(Address, String, Amount)>;

/// The checking rules, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckingParams {
    /// `checking.committee`.
    pub committee: u8,
    /// `checking.rounds_per_epoch`.
    pub rounds_per_epoch: u32,
    /// `checking.join_delay_secs` in ms.
    pub join_delay_ms: u64,
    /// `checking.min_round_gap_secs` in ms.
    pub min_round_gap_ms: u64,
    /// `checking.min_stake` in base units.
    pub min_stake: Amount,
    /// `checking.verified_epochs`.
    pub verified_epochs: u64,
    /// `checking.jail_epochs`.
    pub jail_epochs: u64,
    /// `checking.slash_after_fails`.
    pub slash_after_fails: u32,
    /// `checking.slash_missed_bps`.
    pub slash_missed_bps: u32,
    /// `checking.slash_wrong_bps`.
    pub slash_wrong_bps: u32,
    /// `checking.dispute_secs` in ms.
    pub dispute_ms: u64,
    /// `checking.checker_jail_strikes`.
    pub checker_jail_strikes: u32,
    /// `checking.checker_jail_epochs`.
    pub checker_jail_epochs: u64,
    /// `checking.checker_slash_bps`.
    pub checker_slash_bps: u32,
}

/// A consensus validator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Its ed25519 identity key.
    pub key: Address,
    /// Where peers reach it (`host:port`).
    pub p2p: String,
}

/// An account funded at genesis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// The account.
    pub address: Address,
    /// Its balance (decimal string).
    pub balance: String,
}

/// The genesis file as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Network name; signed into every transaction.
    pub chain_id: String,
    /// Start of epoch 0, milliseconds since the Unix epoch.
    pub genesis_time_ms: u64,
    /// How customers pay.
    pub payment_model: PaymentModel,
    /// Epoch length in seconds.
    pub epoch_secs: u64,
    /// A lease whose device has not reported for this long ends, paid up to its last report.
    #[serde(default = "default_lease_timeout_secs")]
    pub lease_timeout_secs: u64,
    /// The token.
    pub token: Token,
    /// Emission.
    pub emission: Emission,
    /// Fees.
    pub fees: Fees,
    /// Reward split.
    pub rewards: RewardSplit,
    /// Receives the treasury share and every remainder.
    pub treasury: Address,
    /// Staking.
    pub staking: Staking,
    /// Price oracle.
    pub oracle: Oracle,
    /// Consensus validators.
    #[serde(default)]
    pub validators: Vec<Validator>,
    /// Checkers, rounds and verdicts.
    #[serde(default)]
    pub checking: Checking,
    /// Checkers staked at genesis.
    #[serde(default)]
    pub checkers: Vec<GenesisChecker>,
    /// Funded accounts.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// The device class catalog.
    #[serde(rename = "class")]
    pub classes: Vec<DeviceClass>,
}

/// A genesis file that is not valid, with the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenesisError {
    /// Not TOML, or a field of the wrong type.
    #[error("genesis file does not parse: {0}")]
    Parse(String),
    /// A field with a bad value.
    #[error("genesis field `{field}`: {message}")]
    Field {
        /// The field's path, such as `emission.budget`.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> GenesisError {
    GenesisError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// The resolved numbers the ledger runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Network name.
    pub chain_id: String,
    /// Start of epoch 0.
    pub genesis_time_ms: u64,
    /// How customers pay.
    pub payment_model: PaymentModel,
    /// Epoch length.
    pub epoch_ms: u64,
    /// How long a lease's device may go without reporting before the lease ends.
    pub lease_timeout_ms: u64,
    /// Token decimals.
    pub decimals: u8,
    /// Token symbol.
    pub symbol: String,
    /// Supply cap in base units.
    pub supply_cap: Amount,
    /// Emission budget in base units.
    pub emission_budget: Amount,
    /// Schedule length in epochs.
    pub emission_epochs: u64,
    /// `r` scaled by [`DECAY_SCALE`].
    pub decay_per_epoch: u128,
    /// Net emissions after the schedule.
    pub net_emission: bool,
    /// Minimum fee.
    pub min_fee: Amount,
    /// Protocol fee under `direct`, bps.
    pub protocol_fee_bps: u32,
    /// Reward split.
    pub rewards: RewardSplit,
    /// Treasury.
    pub treasury: Address,
    /// Stake per unit at 100%.
    pub min_stake: Amount,
    /// Unbonding period.
    pub unbonding_ms: u64,
    /// Slash share, bps.
    pub slash_bps: u32,
    /// Oracle keys.
    pub oracle_keys: Vec<Address>,
    /// Oracle staleness bound.
    pub oracle_max_age_ms: u64,
    /// Validators.
    pub validators: Vec<Validator>,
    /// Checking rules.
    pub checking: CheckingParams,
    /// Checkers at genesis: (address, endpoint, stake).
    pub checkers: Vec<(Address, String, Amount)>,
    /// Funded accounts in base units.
    pub accounts: Vec<(Address, Amount)>,
    /// The class catalog.
    pub classes: Vec<DeviceClass>,
    /// Tokens at genesis.
    pub genesis_supply: Amount,
    /// SHA-256 of the canonical genesis TOML.
    pub genesis_hash: Hash,
}

impl Params {
    /// The class with `name`, with its id.
    pub fn class_by_name(&self, name: &str) -> Option<(u16, &DeviceClass)> {
        self.classes
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
            .and_then(|(i, c)| Some((u16::try_from(i).ok()?, c)))
    }
}

/// Parses a decimal such as `0.999986` into a fixed-point integer with `DECAY_SCALE`.
fn parse_fixed18(s: &str) -> Option<u128> {
    let (int, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if int.is_empty() || frac.len() > 18 || !int.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int_v: u128 = int.parse().ok()?;
    let mut f = frac.to_string();
    while f.len() < 18 {
        f.push('0');
    }
    let frac_v: u128 = f.parse().ok()?;
    int_v.checked_mul(DECAY_SCALE)?.checked_add(frac_v)
}

fn default_lease_timeout_secs() -> u64 {
    120
}

/// The per-epoch decay factor, as the 18-decimal string a genesis file holds, for an annual
/// factor (io.net's: 0.885) and an epoch length. Floating point is used once, when a founder
/// writes the genesis file; consensus only ever reads the resulting decimal.
pub fn decay_per_epoch(annual: f64, epoch_secs: u64) -> String {
    let per_year = 365.0 * 24.0 * 3600.0 / epoch_secs.max(1) as f64;
    let r = annual.powf(1.0 / per_year);
    format!("{r:.18}")
}

/// Seconds in a 365-day year.
const YEAR_SECS: u64 = 365 * 24 * 3600;

impl Genesis {
    /// The genesis `cairn genesis` writes with no options, and `cairn devnet` starts from:
    /// a network with no accounts, validators, checkers or oracles yet (the operator adds
    /// them). docs/design.md §3 explains each part; the numbers:
    ///
    /// - **Token:** `CAIRN`, 9 decimals, at most 800 M ever.
    /// - **Emission:** 300 M over 20 years, decaying 11.5 % a year (io.net's 0.885),
    ///   paid per epoch; net emission off (burns do not make room for more).
    /// - **Payments:** burn-and-mint (`bme`): customers burn tokens for USD-priced credits.
    /// - **Fees:** at least 0.000001 tokens a transaction; 5 % of direct payments burned.
    /// - **Rewards:** 40 % for capacity, 30 % for work served, 15 % to stakers, 5 % to
    ///   checkers, 10 % to the treasury, which is the all-zero address (nobody holds its
    ///   key) until the operator names one.
    /// - **Staking:** 100 tokens at least per device, two minutes of unbonding (long enough
    ///   for a fraud proof against the device to land), half the stake slashed.
    /// - **Leases:** end when their worker stays silent two minutes.
    /// - **Oracle:** prices older than ten minutes are refused.
    /// - **Classes:** the built-in catalog ([`DeviceClass::default_catalog`]).
    pub fn production(chain_id: &str, epoch_secs: u64, genesis_time_ms: u64) -> Self {
        let epoch_secs = epoch_secs.max(1);
        Self {
            chain_id: chain_id.into(),
            genesis_time_ms,
            payment_model: PaymentModel::Bme,
            epoch_secs,
            lease_timeout_secs: default_lease_timeout_secs(),
            token: Token {
                symbol: "CAIRN".into(),
                decimals: 9,
                supply_cap: "800000000".into(),
            },
            emission: Emission {
                budget: "300000000".into(),
                epochs: 20 * YEAR_SECS / epoch_secs,
                decay_per_epoch: decay_per_epoch(0.885, epoch_secs),
                net_emission: false,
            },
            fees: Fees {
                min_fee: "0.000001".into(),
                protocol_fee_bps: 500,
            },
            rewards: RewardSplit {
                capacity_bps: 4000,
                work_bps: 3000,
                stakers_bps: 1500,
                checkers_bps: 500,
                treasury_bps: 1000,
            },
            treasury: Address::default(),
            staking: Staking {
                min_stake: "100".into(),
                unbonding_secs: 120,
                slash_bps: 5000,
            },
            oracle: Oracle {
                keys: vec![],
                max_age_secs: 600,
            },
            validators: vec![],
            checking: Checking::default(),
            checkers: vec![],
            accounts: vec![],
            classes: DeviceClass::default_catalog(),
        }
    }

    /// Parses a genesis file.
    pub fn from_toml(text: &str) -> Result<Self, GenesisError> {
        toml::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))
    }

    /// The canonical TOML text (what the genesis hash covers).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("genesis serializes")
    }

    /// Checks every field and resolves the numbers.
    pub fn validate(&self) -> Result<Params, GenesisError> {
        if self.chain_id.is_empty()
            || self.chain_id.len() > 64
            || !self
                .chain_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(field_err(
                "chain_id",
                "must be 1-64 characters of letters, digits, '-' or '_'",
            ));
        }
        let d = self.token.decimals;
        if d > 18 {
            return Err(field_err("token.decimals", "must be at most 18"));
        }
        if self.token.symbol.is_empty() || self.token.symbol.len() > 12 {
            return Err(field_err("token.symbol", "must be 1-12 characters"));
        }
        let amount = |field: &str, s: &str| {
            Amount::parse_decimal(s, d).map_err(|e| field_err(field, e.to_string()))
        };
        let supply_cap = amount("token.supply_cap", &self.token.supply_cap)?;
        let emission_budget = amount("emission.budget", &self.emission.budget)?;
        let min_fee = amount("fees.min_fee", &self.fees.min_fee)?;
        let min_stake = amount("staking.min_stake", &self.staking.min_stake)?;
        if self.lease_timeout_secs == 0 {
            return Err(field_err("lease_timeout_secs", "must be at least 1"));
        }
        if self.epoch_secs == 0 {
            return Err(field_err("epoch_secs", "must be at least 1"));
        }
        if self.emission.epochs == 0 {
            return Err(field_err("emission.epochs", "must be at least 1"));
        }
        let decay = parse_fixed18(&self.emission.decay_per_epoch)
            .filter(|r| *r > 0 && *r <= DECAY_SCALE)
            .ok_or_else(|| {
                field_err(
                    "emission.decay_per_epoch",
                    format!(
                        "'{}' must be a decimal in (0, 1] with at most 18 places",
                        self.emission.decay_per_epoch
                    ),
                )
            })?;
        if self.fees.protocol_fee_bps > 10_000 {
            return Err(field_err("fees.protocol_fee_bps", "must be at most 10000"));
        }
        if self.staking.slash_bps > 10_000 {
            return Err(field_err("staking.slash_bps", "must be at most 10000"));
        }
        let r = &self.rewards;
        let total = [
            r.capacity_bps,
            r.work_bps,
            r.stakers_bps,
            r.checkers_bps,
            r.treasury_bps,
        ]
        .iter()
        .try_fold(0u32, |acc, v| acc.checked_add(*v));
        if total != Some(10_000) {
            return Err(field_err(
                "rewards",
                format!("the five shares must sum to 10000 basis points, not {total:?}"),
            ));
        }
        let mut accounts = Vec::with_capacity(self.accounts.len());
        let mut genesis_supply = Amount::ZERO;
        for (i, a) in self.accounts.iter().enumerate() {
            let bal = amount(&format!("accounts[{i}].balance"), &a.balance)?;
            if accounts.iter().any(|(addr, _)| *addr == a.address) {
                return Err(field_err(
                    format!("accounts[{i}].address"),
                    format!("{} is listed twice", a.address),
                ));
            }
            genesis_supply = genesis_supply.checked_add(bal).ok_or_else(|| {
                field_err("accounts", "balances add up to more than 2^64 base units")
            })?;
            accounts.push((a.address, bal));
        }
        let reachable = genesis_supply.checked_add(emission_budget);
        if reachable.is_none_or(|t| t > supply_cap) {
            return Err(field_err(
                "token.supply_cap",
                format!(
                    "genesis balances ({}) plus the emission budget ({}) exceed the cap ({})",
                    genesis_supply.display(d),
                    emission_budget.display(d),
                    supply_cap.display(d)
                ),
            ));
        }
        if self.classes.is_empty() {
            return Err(field_err("class", "the catalog needs at least one class"));
        }
        if self.classes.len() > usize::from(u16::MAX) {
            return Err(field_err("class", "too many classes"));
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.name.is_empty() || c.name.len() > 32 {
                return Err(field_err(format!("class[{i}].name"), "must be 1-32 bytes"));
            }
            if self.classes[..i].iter().any(|o| o.name == c.name) {
                return Err(field_err(
                    format!("class[{i}].name"),
                    format!("'{}' appears twice", c.name),
                ));
            }
            if c.kind == ClassKind::Gpu && c.vram_mib == 0 {
                return Err(field_err(
                    format!("class[{i}].vram_mib"),
                    "a GPU class needs its memory size",
                ));
            }
            if c.stake_multiplier_pct == 0 {
                return Err(field_err(
                    format!("class[{i}].stake_multiplier_pct"),
                    "must be at least 1",
                ));
            }
        }
        let (checking, checkers) = self.validate_checkers(d, &mut genesis_supply)?;
        if genesis_supply
            .checked_add(emission_budget)
            .is_none_or(|t| t > supply_cap)
        {
            return Err(field_err(
                "checkers",
                "their stakes, the balances and the emission budget exceed the supply cap",
            ));
        }
        for (i, v) in self.validators.iter().enumerate() {
            if v.key.public_key().is_none() {
                return Err(field_err(
                    format!("validators[{i}].key"),
                    "is not an ed25519 public key",
                ));
            }
            if v.p2p.parse::<std::net::SocketAddr>().is_err() {
                return Err(field_err(
                    format!("validators[{i}].p2p"),
                    format!("'{}' is not host:port", v.p2p),
                ));
            }
        }
        Ok(Params {
            chain_id: self.chain_id.clone(),
            genesis_time_ms: self.genesis_time_ms,
            payment_model: self.payment_model,
            epoch_ms: self
                .epoch_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("epoch_secs", "too large"))?,
            lease_timeout_ms: self
                .lease_timeout_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("lease_timeout_secs", "too large"))?,
            decimals: d,
            symbol: self.token.symbol.clone(),
            supply_cap,
            emission_budget,
            emission_epochs: self.emission.epochs,
            decay_per_epoch: decay,
            net_emission: self.emission.net_emission,
            min_fee,
            protocol_fee_bps: self.fees.protocol_fee_bps,
            rewards: self.rewards.clone(),
            treasury: self.treasury,
            min_stake,
            unbonding_ms: self
                .staking
                .unbonding_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("staking.unbonding_secs", "too large"))?,
            slash_bps: self.staking.slash_bps,
            oracle_keys: self.oracle.keys.clone(),
            oracle_max_age_ms: self
                .oracle
                .max_age_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("oracle.max_age_secs", "too large"))?,
            validators: self.validators.clone(),
            checking,
            checkers,
            accounts,
            classes: self.classes.clone(),
            genesis_supply,
            genesis_hash: sha256(&[self.to_toml().as_bytes()]),
        })
    }
}

impl Genesis {
    /// Checks `checking` and `checkers`; adds the checkers' stakes to `supply`.
    fn validate_checkers(
        &self,
        decimals: u8,
        supply: &mut Amount,
    ) -> Result<(CheckingParams, GenesisCheckers), GenesisError> {
        let c = &self.checking;
        if c.committee == 0 || usize::from(c.committee) > crate::MAX_ASSIGNED {
            return Err(field_err(
                "checking.committee",
                format!("must be 1-{}", crate::MAX_ASSIGNED),
            ));
        }
        if c.rounds_per_epoch == 0 {
            return Err(field_err("checking.rounds_per_epoch", "must be at least 1"));
        }
        for (field, bps) in [
            ("checking.slash_missed_bps", c.slash_missed_bps),
            ("checking.slash_wrong_bps", c.slash_wrong_bps),
            ("checking.checker_slash_bps", c.checker_slash_bps),
        ] {
            if bps > 10_000 {
                return Err(field_err(field, "must be at most 10000"));
            }
        }
        if c.verified_epochs == 0 {
            return Err(field_err("checking.verified_epochs", "must be at least 1"));
        }
        if c.checker_jail_strikes == 0 {
            return Err(field_err(
                "checking.checker_jail_strikes",
                "must be at least 1",
            ));
        }
        let min_stake = Amount::parse_decimal(&c.min_stake, decimals)
            .map_err(|e| field_err("checking.min_stake", e.to_string()))?;
        if min_stake == Amount::ZERO {
            return Err(field_err("checking.min_stake", "must be more than 0"));
        }
        let params = CheckingParams {
            committee: c.committee,
            rounds_per_epoch: c.rounds_per_epoch,
            join_delay_ms: c
                .join_delay_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("checking.join_delay_secs", "too large"))?,
            min_round_gap_ms: c
                .min_round_gap_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("checking.min_round_gap_secs", "too large"))?,
            min_stake,
            verified_epochs: c.verified_epochs,
            jail_epochs: c.jail_epochs,
            slash_after_fails: c.slash_after_fails,
            slash_missed_bps: c.slash_missed_bps,
            slash_wrong_bps: c.slash_wrong_bps,
            dispute_ms: c
                .dispute_secs
                .checked_mul(1000)
                .ok_or_else(|| field_err("checking.dispute_secs", "too large"))?,
            checker_jail_strikes: c.checker_jail_strikes,
            checker_jail_epochs: c.checker_jail_epochs,
            checker_slash_bps: c.checker_slash_bps,
        };
        if self.checkers.len() > crate::MAX_COMMITTEE {
            return Err(field_err(
                "checkers",
                format!("at most {} checkers", crate::MAX_COMMITTEE),
            ));
        }
        let mut checkers: GenesisCheckers = Vec::new();
        for (i, k) in self.checkers.iter().enumerate() {
            if k.address.public_key().is_none() {
                return Err(field_err(
                    format!("checkers[{i}].address"),
                    "is not an ed25519 public key",
                ));
            }
            if checkers.iter().any(|(a, ..)| *a == k.address) {
                return Err(field_err(
                    format!("checkers[{i}].address"),
                    format!("{} is listed twice", k.address),
                ));
            }
            if k.endpoint.is_empty() || k.endpoint.len() > 128 {
                return Err(field_err(
                    format!("checkers[{i}].endpoint"),
                    "must be 1-128 bytes of host:port",
                ));
            }
            let stake = Amount::parse_decimal(&k.stake, decimals)
                .map_err(|e| field_err(format!("checkers[{i}].stake"), e.to_string()))?;
            if stake < min_stake {
                return Err(field_err(
                    format!("checkers[{i}].stake"),
                    format!(
                        "{} is below checking.min_stake ({})",
                        stake.display(decimals),
                        min_stake.display(decimals)
                    ),
                ));
            }
            *supply = supply
                .checked_add(stake)
                .ok_or_else(|| field_err("checkers", "stakes overflow"))?;
            checkers.push((k.address, k.endpoint.clone(), stake));
        }
        Ok((params, checkers))
    }
}

/// One comment per field, written above it in the documented genesis file.
const FIELD_DOCS: &[(&str, &str)] = &[
    (
        "chain_id",
        "Network name. Signed into every transaction: a transaction for one network is invalid on another.",
    ),
    (
        "genesis_time_ms",
        "Start of epoch 0, milliseconds since the Unix epoch.",
    ),
    (
        "payment_model",
        "\"bme\": customers burn tokens for USD-priced credits, providers earn emission (Helium, Render).\n\"direct\": customers pay providers in tokens and a protocol fee is burned (io.net).",
    ),
    (
        "epoch_secs",
        "Epoch length. Rewards are paid in the first block past each boundary (an hour in production).",
    ),
    (
        "lease_timeout_secs",
        "A lease whose device has not reported (workers report every few seconds) for this long ends:\nthe provider is paid up to the last report and the rest of the deposit is refunded.",
    ),
    ("token.symbol", "Ticker."),
    ("token.decimals", "Base units per token = 10^decimals."),
    (
        "token.supply_cap",
        "No more tokens than this will ever exist (whole tokens, decimal string).",
    ),
    (
        "emission.budget",
        "Tokens emitted over the whole schedule; E_h = E_0 * r^h sums to exactly this.",
    ),
    (
        "emission.epochs",
        "Length of the schedule in epochs (io.net: 20 years of hourly epochs = 175200).",
    ),
    (
        "emission.decay_per_epoch",
        "r, the factor between consecutive epochs (18 decimal places).\nFrom an annual factor A: r = A^(epoch_secs / 31536000); `cairn genesis --annual-decay` computes it.",
    ),
    (
        "emission.net_emission",
        "After the schedule, re-mint what was burned each epoch, up to the cap (Helium's net emissions).",
    ),
    (
        "fees.min_fee",
        "Smallest fee a transaction may carry; every fee is burned.",
    ),
    (
        "fees.protocol_fee_bps",
        "Under \"direct\": share of each lease payment burned, in basis points.",
    ),
    (
        "rewards.capacity_bps",
        "Share of emission for verified, available devices, by class weight and uptime.",
    ),
    (
        "rewards.work_bps",
        "Share of emission for devices by work served (credits or tokens consumed).",
    ),
    (
        "rewards.stakers_bps",
        "Share of emission added to the stake pools of verified devices.",
    ),
    (
        "rewards.checkers_bps",
        "Share of emission for checkers, by results that agreed with their device's verdict.",
    ),
    (
        "rewards.treasury_bps",
        "Share of emission for the treasury. The five shares sum to 10000.",
    ),
    (
        "treasury",
        "Receives the treasury share, every rounding remainder and any pool with nobody to pay.",
    ),
    (
        "staking.min_stake",
        "Stake bonded per unit (GPU or CPU core) at a class multiplier of 100%.",
    ),
    (
        "staking.unbonding_secs",
        "How long retired or undelegated stake waits before it is released.",
    ),
    (
        "staking.slash_bps",
        "Share of a device's stake pool burned when a fraud proof against it lands.",
    ),
    (
        "oracle.keys",
        "Keys allowed to submit the token price; the ledger uses the median of fresh prices.",
    ),
    (
        "oracle.max_age_secs",
        "Prices older than this are stale; buying credits without a fresh price is refused.",
    ),
    (
        "validators",
        "Consensus validators: identity key and p2p address. One is enough; 3f+1 tolerate f faults.",
    ),
    (
        "checking.committee",
        "Checkers assigned to each device per epoch, drawn by stake (all of them when fewer).",
    ),
    (
        "checking.rounds_per_epoch",
        "Challenge rounds per epoch on average, started when a block's seed says so.",
    ),
    (
        "checking.join_delay_secs",
        "How long after a device registers its first (join) round starts: time for its worker to connect.",
    ),
    (
        "checking.min_round_gap_secs",
        "The least time between two regular rounds (short epochs would start them too fast).",
    ),
    (
        "checking.min_stake",
        "The least a checker bonds (whole tokens).",
    ),
    (
        "checking.verified_epochs",
        "A device's verification lapses after this many epochs without a passing round.",
    ),
    (
        "checking.jail_epochs",
        "Epochs a device that failed a round stays jailed before a passing round frees it.",
    ),
    (
        "checking.slash_after_fails",
        "Consecutive failed rounds after which each further failed round slashes the device.",
    ),
    (
        "checking.slash_missed_bps",
        "Share of the device's stake pool a slash for unanswered rounds burns.",
    ),
    (
        "checking.slash_wrong_bps",
        "Share of the device's stake pool a slash for wrong or late answers burns.",
    ),
    (
        "checking.dispute_secs",
        "How long a checker has to back a disputed result with the device's signed receipt.",
    ),
    (
        "checking.checker_jail_strikes",
        "Penalties on evidence that jail a checker; each one after that slashes it.",
    ),
    (
        "checking.checker_jail_epochs",
        "Epochs a jailed checker sits out of committees.",
    ),
    (
        "checking.checker_slash_bps",
        "Share of a checker's stake a slash burns.",
    ),
    (
        "checkers",
        "Checkers staked at genesis: address, endpoint (host:port) and stake (minted into the bond).",
    ),
    (
        "accounts",
        "Accounts funded at genesis (balances in whole tokens).",
    ),
    (
        "class",
        "The device class catalog (see crates/primitives/catalog/classes.toml for sources).",
    ),
];

impl Genesis {
    /// The genesis as TOML with a comment above every field, for founders to edit.
    pub fn to_documented_toml(&self) -> String {
        let text = toml::to_string_pretty(self).unwrap_or_default();
        let mut out = String::from(
            "# Cairn genesis file. Edit, then check with `cairn genesis --check FILE`.\n\
             # Amounts are decimal strings in whole tokens; every field is checked when a node starts.\n\n",
        );
        let mut table = String::new();
        let mut seen_arrays = std::collections::BTreeSet::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
                table = h.to_string();
                let doc = FIELD_DOCS.iter().find(|(k, _)| *k == h);
                if let (true, Some((_, doc))) = (seen_arrays.insert(h.to_string()), doc) {
                    for d in doc.lines() {
                        out.push_str(&format!("# {d}\n"));
                    }
                }
            } else if let Some(h) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                table = h.to_string();
            } else if let Some((k, _)) = t.split_once(" = ") {
                let path = if table.is_empty() {
                    k.to_string()
                } else {
                    format!("{table}.{k}")
                };
                if let Some((_, doc)) = FIELD_DOCS
                    .iter()
                    .find(|(p, _)| *p == path || (*p == k && table.is_empty()))
                {
                    for d in doc.lines() {
                        out.push_str(&format!("# {d}\n"));
                    }
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_production_genesis_is_valid_and_runs_its_emission_over_twenty_years() {
        let g = Genesis::production("cairn-main", 3600, 1_700_000_000_000);
        let p = g.validate().expect("the production genesis validates");
        assert_eq!(p.chain_id, "cairn-main");
        assert_eq!(g.emission.epochs, 20 * 365 * 24);
        assert_eq!(g.emission.decay_per_epoch, decay_per_epoch(0.885, 3600));
        // 0.885 a year, compounded over a year of hourly epochs.
        let r = parse_fixed18(&g.emission.decay_per_epoch).expect("an 18-decimal factor");
        let yearly = (r as f64 / DECAY_SCALE as f64).powi(365 * 24);
        assert!((yearly - 0.885).abs() < 1e-9, "{yearly}");
        assert_eq!(g.treasury, Address::default());
        assert!(g.accounts.is_empty() && g.validators.is_empty() && g.checkers.is_empty());
        // An epoch of zero seconds is taken as one, not divided by.
        assert_eq!(Genesis::production("x", 0, 0).epoch_secs, 1);
    }

    #[test]
    fn fixed18_parses_exactly() {
        assert_eq!(parse_fixed18("1"), Some(DECAY_SCALE));
        assert_eq!(parse_fixed18("0.5"), Some(DECAY_SCALE / 2));
        assert_eq!(
            parse_fixed18("0.999986060000000001"),
            Some(999_986_060_000_000_001)
        );
        assert_eq!(parse_fixed18("0.9999999999999999999"), None);
        assert_eq!(parse_fixed18("x"), None);
        assert_eq!(parse_fixed18(".5"), None);
    }
}
