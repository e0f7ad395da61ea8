//! Cairn's store: blocks, state records and per-block state roots in one redb file, written
//! with one atomic, durable commit per block.
//!
//! After a crash at any point (SIGKILL, power loss), reopening yields the last committed
//! block and exactly its state: redb commits are all-or-nothing, and [`Chain::open`] checks
//! the rebuilt state root against the root recorded for that height. [`replay`] re-applies
//! every stored block from genesis and checks each state root.
//!
//! ```no_run
//! # fn main() -> Result<(), cairn_store::Error> {
//! let genesis = cairn_primitives::Genesis::production("example", 3600, 1_700_000_000_000);
//! let mut chain = cairn_store::Chain::open("/tmp/cairn-data", Some(&genesis))?;
//! let block = chain.ledger().build_block(genesis.genesis_time_ms + 1_000, vec![]);
//! chain.commit(&block)?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use cairn_ledger::{BlockError, BlockOutcome, Event, Ledger};
use cairn_primitives::wire::{DecodeExt, Encode};
use cairn_primitives::{Block, Genesis, Hash};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Height → state root (32 bytes) ‖ block hash (32 bytes).
const ROOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("roots");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// Transaction hash → height (8) ‖ index (4) ‖ error code (UTF-8, empty when it applied).
const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("txs");
/// Address (32) ‖ epoch (8, big-endian) → what the epoch paid it: capacity, work, checkers
/// (to an account) and staking (to a device's pool), four big-endian u64 in base units.
const REWARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rewards");

/// What one epoch has paid one address so far, in base units (summed over the blocks that
/// settled its devices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reward {
    /// The epoch.
    pub epoch: u64,
    /// From the capacity pool (an account, for its devices).
    pub capacity: u64,
    /// From the work pool (an account, for its devices' leases).
    pub work: u64,
    /// From the checkers pool (a checker's account).
    pub checkers: u64,
    /// Into a device's stake pool, shared by its stakers.
    pub staking: u64,
}

impl Reward {
    fn key(address: &cairn_primitives::Address, epoch: u64) -> [u8; 40] {
        let mut k = [0u8; 40];
        k[..32].copy_from_slice(&address.0);
        k[32..].copy_from_slice(&epoch.to_be_bytes());
        k
    }

    fn value(&self) -> [u8; 32] {
        let mut v = [0u8; 32];
        for (i, x) in [self.capacity, self.work, self.checkers, self.staking]
            .iter()
            .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&x.to_be_bytes());
        }
        v
    }

    fn read(epoch: u64, v: &[u8]) -> Result<Self> {
        if v.len() != 32 {
            return Err(Error::Corrupt("bad reward record".into()));
        }
        let at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            epoch,
            capacity: at(0),
            work: at(1),
            checkers: at(2),
            staking: at(3),
        })
    }

    /// Both added, field by field (an epoch's rewards fit in the supply, a u64).
    fn plus(&self, o: &Reward) -> Reward {
        Reward {
            epoch: self.epoch,
            capacity: self.capacity.saturating_add(o.capacity),
            work: self.work.saturating_add(o.work),
            checkers: self.checkers.saturating_add(o.checkers),
            staking: self.staking.saturating_add(o.staking),
        }
    }

    /// The rewards in a block's events, by address.
    fn collect(events: &[(Option<u32>, Event)]) -> Vec<(cairn_primitives::Address, Reward)> {
        let mut out: std::collections::BTreeMap<_, Reward> = std::collections::BTreeMap::new();
        for (_, e) in events {
            match e {
                Event::Reward {
                    account,
                    epoch,
                    capacity,
                    work,
                    checkers,
                } => {
                    let r = out.entry((*account, *epoch)).or_default();
                    r.capacity += capacity.base();
                    r.work += work.base();
                    r.checkers += checkers.base();
                }
                Event::StakingReward {
                    device,
                    epoch,
                    amount,
                } => out.entry((*device, *epoch)).or_default().staking += amount.base(),
                _ => {}
            }
        }
        out.into_iter()
            .map(|((a, epoch), r)| (a, Reward { epoch, ..r }))
            .collect()
    }
}

/// The database file inside a data directory.
pub const DB_FILE: &str = "chain.redb";

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database itself failed.
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    /// I/O on the data directory failed.
    #[error("cannot use data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A new data directory needs a genesis file.
    #[error("{0} holds no chain yet; give a genesis file to create one")]
    NoGenesis(PathBuf),
    /// The data directory belongs to another genesis.
    #[error(
        "data directory was created from another genesis (hash {stored}); use another directory or --reset"
    )]
    GenesisMismatch {
        /// The stored genesis hash.
        stored: Hash,
    },
    /// The genesis (given or stored) is invalid.
    #[error("genesis: {0}")]
    Genesis(String),
    /// A block was refused by the ledger.
    #[error("block refused: {0}")]
    Block(#[from] BlockError),
    /// Stored data does not check out.
    #[error("data directory is corrupt: {0}")]
    Corrupt(String),
    /// The stored state records do not load into a ledger.
    #[error("data directory is corrupt: {0}")]
    Records(#[from] cairn_ledger::RecordError),
    /// A commit failed after the ledger applied the block: the in-memory state is ahead of
    /// disk; reopen the chain.
    #[error("commit failed; reopen the data directory: {0}")]
    Poisoned(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn dberr<E: Into<redb::Error>>(e: E) -> Error {
    Error::Db(e.into())
}

/// A ledger backed by its store: apply a block and commit it in one step.
pub struct Chain {
    db: Database,
    ledger: Ledger,
    genesis: Genesis,
    poisoned: bool,
}

impl Chain {
    /// Opens the chain in `dir`, creating it from `genesis` when the directory is new. When both
    /// exist, they must be the same genesis.
    pub fn open(dir: impl AsRef<Path>, genesis: Option<&Genesis>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let existed = path.exists();
        let db = Database::create(&path).map_err(dberr)?;
        let stored = if existed { read_genesis(&db)? } else { None };
        match (stored, genesis) {
            (Some(stored), given) => {
                if let Some(g) = given.filter(|g| g.to_toml() != stored.to_toml()) {
                    let _ = g;
                    let p = stored
                        .validate()
                        .map_err(|e| Error::Genesis(e.to_string()))?;
                    return Err(Error::GenesisMismatch {
                        stored: p.genesis_hash,
                    });
                }
                Self::load(db, stored)
            }
            (None, Some(g)) => Self::create(db, g.clone()),
            (None, None) => Err(Error::NoGenesis(dir.to_path_buf())),
        }
    }

    fn create(db: Database, genesis: Genesis) -> Result<Self> {
        let ledger = Ledger::from_genesis(&genesis).map_err(|e| Error::Genesis(e.to_string()))?;
        let w = db.begin_write().map_err(db_err)?;
        {
            let mut meta = w.open_table(META).map_err(dberr)?;
            meta.insert("genesis", genesis.to_toml().as_bytes())
                .map_err(dberr)?;
            meta.insert("height", 0u64.to_be_bytes().as_slice())
                .map_err(dberr)?;
            let mut state = w.open_table(STATE).map_err(dberr)?;
            for (k, v) in ledger.records() {
                state.insert(k.as_slice(), v.as_slice()).map_err(dberr)?;
            }
            let mut roots = w.open_table(ROOTS).map_err(dberr)?;
            let rec = root_record(&ledger.state_root(), &Hash::ZERO);
            roots.insert(0, rec.as_slice()).map_err(dberr)?;
            w.open_table(BLOCKS).map_err(dberr)?;
            w.open_table(TXS).map_err(dberr)?;
        }
        w.commit().map_err(dberr)?;
        Ok(Self {
            db,
            ledger,
            genesis,
            poisoned: false,
        })
    }

    fn load(db: Database, genesis: Genesis) -> Result<Self> {
        let r = db.begin_read().map_err(db_err)?;
        let height = read_height(&r)?;
        let state = r.open_table(STATE).map_err(dberr)?;
        let mut records = Vec::new();
        for item in state.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            records.push((k.value().to_vec(), v.value().to_vec()));
        }
        let ledger = Ledger::from_records(&genesis, records)?;
        let (root, _) = read_root(&r, height)?
            .ok_or_else(|| Error::Corrupt(format!("no state root recorded for height {height}")))?;
        if ledger.state_root() != root || ledger.globals().height != height {
            return Err(Error::Corrupt(format!(
                "state at height {} has root {}, but {} was committed for height {height}",
                ledger.globals().height,
                ledger.state_root(),
                root
            )));
        }
        drop(state);
        drop(r);
        Ok(Self {
            db,
            ledger,
            genesis,
            poisoned: false,
        })
    }

    /// The ledger at the last committed block.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The genesis this chain was created from.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// Height of the last committed block.
    pub fn height(&self) -> u64 {
        self.ledger.globals().height
    }

    /// Applies `block` and commits it (block, changed records, state root, transaction index)
    /// in one durable transaction. A refused block changes nothing.
    pub fn commit(&mut self, block: &Block) -> Result<BlockOutcome> {
        let verified = Ledger::verify_txs(&block.txs, &self.ledger.params().chain_id);
        self.commit_verified(block, verified)
    }

    /// [`Chain::commit`] with the block's signatures checked beforehand (see
    /// [`Ledger::verify_txs`]), so verification can overlap the previous commit.
    pub fn commit_verified(
        &mut self,
        block: &Block,
        verified: cairn_ledger::VerifiedBlock,
    ) -> Result<BlockOutcome> {
        if self.poisoned {
            return Err(Error::Poisoned("an earlier commit failed".into()));
        }
        self.check_anchor(&block.header)?;
        let outcome = self.ledger.apply_verified(block, verified)?;
        if let Err(e) = self.write(block, &outcome) {
            // The ledger moved but the disk did not: refuse further work until reopened.
            self.poisoned = true;
            return Err(Error::Poisoned(e.to_string()));
        }
        Ok(outcome)
    }

    /// A block anchoring an earlier height than the last must name the root recorded there
    /// (the ledger checks an anchor at the current height itself).
    fn check_anchor(&self, h: &cairn_primitives::Header) -> Result<()> {
        if h.state_height >= self.height() {
            return Ok(());
        }
        let (expected, _) = self.root_at(h.state_height)?.ok_or_else(|| {
            Error::Corrupt(format!("no state root recorded at {}", h.state_height))
        })?;
        if expected != h.state_root {
            return Err(BlockError::WrongStateRoot {
                expected,
                got: h.state_root,
            }
            .into());
        }
        Ok(())
    }

    fn write(&self, block: &Block, o: &BlockOutcome) -> Result<()> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut blocks = w.open_table(BLOCKS).map_err(dberr)?;
            blocks
                .insert(o.height, block.encode().as_ref())
                .map_err(dberr)?;
            let mut roots = w.open_table(ROOTS).map_err(dberr)?;
            let rec = root_record(&o.state_root, &o.block_hash);
            roots.insert(o.height, rec.as_slice()).map_err(dberr)?;
            let mut state = w.open_table(STATE).map_err(dberr)?;
            for (k, v) in &o.changes {
                match v {
                    Some(v) => {
                        state.insert(k.as_slice(), v.as_slice()).map_err(dberr)?;
                    }
                    None => {
                        state.remove(k.as_slice()).map_err(dberr)?;
                    }
                }
            }
            let mut txs = w.open_table(TXS).map_err(dberr)?;
            for (i, r) in o.results.iter().enumerate() {
                let mut v = Vec::with_capacity(24);
                v.extend_from_slice(&o.height.to_be_bytes());
                v.extend_from_slice(&(i as u32).to_be_bytes());
                if let Some(e) = &r.error {
                    v.extend_from_slice(e.code().as_bytes());
                }
                txs.insert(r.hash.0.as_slice(), v.as_slice())
                    .map_err(dberr)?;
            }
            let rewards = Reward::collect(&o.events);
            if !rewards.is_empty() {
                let mut t = w.open_table(REWARDS).map_err(dberr)?;
                // An epoch's rewards are paid as its devices settle, over many blocks: each
                // block's add to what the address already had for that epoch.
                for (a, r) in &rewards {
                    let key = Reward::key(a, r.epoch);
                    let had = match t.get(key.as_slice()).map_err(dberr)? {
                        Some(v) => Reward::read(r.epoch, v.value())?,
                        None => Reward::default(),
                    };
                    let sum = had.plus(r);
                    t.insert(key.as_slice(), sum.value().as_slice())
                        .map_err(dberr)?;
                }
            }
            let mut meta = w.open_table(META).map_err(dberr)?;
            meta.insert("height", o.height.to_be_bytes().as_slice())
                .map_err(dberr)?;
        }
        w.commit().map_err(dberr)?;
        Ok(())
    }

    /// Checks a transaction against the committed state without applying it (mempool
    /// admission); changes nothing.
    pub fn check_tx(
        &mut self,
        tx: &cairn_primitives::Tx,
        timestamp_ms: u64,
    ) -> cairn_ledger::Result<()> {
        self.ledger.check_tx(tx, timestamp_ms)
    }

    /// A committed block.
    pub fn block(&self, height: u64) -> Result<Option<Block>> {
        let r = self.db.begin_read().map_err(db_err)?;
        read_block(&r, height)
    }

    /// The state root and block hash committed at `height`.
    pub fn root_at(&self, height: u64) -> Result<Option<(Hash, Hash)>> {
        let r = self.db.begin_read().map_err(db_err)?;
        read_root(&r, height)
    }

    /// Which of `hashes` are already in a committed block (one read transaction).
    pub fn landed(&self, hashes: &[Hash]) -> Result<std::collections::HashSet<Hash>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TXS).map_err(dberr)?;
        let mut out = std::collections::HashSet::new();
        for h in hashes {
            if t.get(h.0.as_slice()).map_err(dberr)?.is_some() {
                out.insert(*h);
            }
        }
        Ok(out)
    }

    /// What epochs paid `address` (an account or a device), newest first, at most `limit`,
    /// from epochs before `before` (all when `None`).
    pub fn rewards(
        &self,
        address: &cairn_primitives::Address,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Reward>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = match r.open_table(REWARDS) {
            Ok(t) => t,
            // No epoch has paid anyone yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(dberr(e)),
        };
        let lo = Reward::key(address, 0);
        let hi = Reward::key(address, before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        for item in t.range(lo.as_slice()..hi.as_slice()).map_err(dberr)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(dberr)?;
            let mut e = [0u8; 8];
            e.copy_from_slice(&k.value()[32..40]);
            out.push(Reward::read(u64::from_be_bytes(e), v.value())?);
        }
        Ok(out)
    }

    /// Where a transaction landed: height, index, and its error code when it was rejected.
    pub fn tx_status(&self, hash: &Hash) -> Result<Option<(u64, u32, Option<String>)>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TXS).map_err(dberr)?;
        let Some(v) = t.get(hash.0.as_slice()).map_err(dberr)? else {
            return Ok(None);
        };
        let v = v.value();
        if v.len() < 12 {
            return Err(Error::Corrupt("short transaction record".into()));
        }
        let mut h = [0u8; 8];
        h.copy_from_slice(&v[..8]);
        let mut i = [0u8; 4];
        i.copy_from_slice(&v[8..12]);
        let code = (v.len() > 12).then(|| String::from_utf8_lossy(&v[12..]).into_owned());
        Ok(Some((u64::from_be_bytes(h), u32::from_be_bytes(i), code)))
    }
}

fn db_err(e: redb::TransactionError) -> Error {
    Error::Db(e.into())
}

fn root_record(root: &Hash, block: &Hash) -> [u8; 64] {
    let mut v = [0u8; 64];
    v[..32].copy_from_slice(&root.0);
    v[32..].copy_from_slice(&block.0);
    v
}

fn read_genesis(db: &Database) -> Result<Option<Genesis>> {
    let r = db.begin_read().map_err(db_err)?;
    let meta = match r.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(dberr(e)),
    };
    let Some(g) = meta.get("genesis").map_err(dberr)? else {
        return Ok(None);
    };
    let text = String::from_utf8(g.value().to_vec())
        .map_err(|_| Error::Corrupt("stored genesis is not UTF-8".into()))?;
    Genesis::from_toml(&text)
        .map(Some)
        .map_err(|e| Error::Genesis(e.to_string()))
}

fn read_height(r: &redb::ReadTransaction) -> Result<u64> {
    let meta = r.open_table(META).map_err(dberr)?;
    let v = meta
        .get("height")
        .map_err(dberr)?
        .ok_or_else(|| Error::Corrupt("no height recorded".into()))?;
    let b: [u8; 8] = v
        .value()
        .try_into()
        .map_err(|_| Error::Corrupt("bad height record".into()))?;
    Ok(u64::from_be_bytes(b))
}

fn read_root(r: &redb::ReadTransaction, height: u64) -> Result<Option<(Hash, Hash)>> {
    let roots = r.open_table(ROOTS).map_err(dberr)?;
    let Some(v) = roots.get(height).map_err(dberr)? else {
        return Ok(None);
    };
    let v = v.value();
    if v.len() != 64 {
        return Err(Error::Corrupt(format!("bad root record at {height}")));
    }
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&v[..32]);
    b.copy_from_slice(&v[32..]);
    Ok(Some((Hash(a), Hash(b))))
}

fn read_block(r: &redb::ReadTransaction, height: u64) -> Result<Option<Block>> {
    let blocks = r.open_table(BLOCKS).map_err(dberr)?;
    let Some(v) = blocks.get(height).map_err(dberr)? else {
        return Ok(None);
    };
    Block::decode(cairn_primitives::wire::Copying(v.value()))
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("block {height} does not decode: {e}")))
}

/// What a replay found.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// Blocks re-applied.
    pub blocks: u64,
    /// Transactions re-applied.
    pub txs: u64,
    /// The final state root (equal to the stored state's).
    pub state_root: Hash,
}

/// Re-applies every stored block from genesis on a fresh ledger and checks each block's state
/// root against the one committed, and the final state against the stored records.
/// `progress(height, of)` is called after each block.
pub fn replay(dir: impl AsRef<Path>, mut progress: impl FnMut(u64, u64)) -> Result<ReplayReport> {
    let dir = dir.as_ref();
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(Error::NoGenesis(dir.to_path_buf()));
    }
    let db = Database::create(&path).map_err(dberr)?;
    let genesis = read_genesis(&db)?.ok_or_else(|| Error::NoGenesis(dir.to_path_buf()))?;
    let mut ledger = Ledger::from_genesis(&genesis).map_err(|e| Error::Genesis(e.to_string()))?;
    let r = db.begin_read().map_err(db_err)?;
    let height = read_height(&r)?;
    let (root0, _) = read_root(&r, 0)?.ok_or_else(|| Error::Corrupt("no genesis root".into()))?;
    if root0 != ledger.state_root() {
        return Err(Error::Corrupt(format!(
            "genesis state root {} differs from the recorded {root0}",
            ledger.state_root()
        )));
    }
    let mut txs = 0u64;
    for h in 1..=height {
        let block =
            read_block(&r, h)?.ok_or_else(|| Error::Corrupt(format!("block {h} missing")))?;
        txs += block.txs.len() as u64;
        let hd = &block.header;
        if hd.state_height < h - 1 {
            let (anchored, _) = read_root(&r, hd.state_height)?
                .ok_or_else(|| Error::Corrupt(format!("root {} missing", hd.state_height)))?;
            if anchored != hd.state_root {
                return Err(Error::Corrupt(format!(
                    "block {h} anchors state root {} at height {}, but {anchored} is recorded there",
                    hd.state_root, hd.state_height
                )));
            }
        }
        let o = ledger.apply(&block)?;
        let (root, hash) =
            read_root(&r, h)?.ok_or_else(|| Error::Corrupt(format!("root {h} missing")))?;
        if o.state_root != root || o.block_hash != hash {
            return Err(Error::Corrupt(format!(
                "block {h}: replay gives state root {}, but {root} was committed",
                o.state_root
            )));
        }
        progress(h, height);
    }
    drop(r);
    let stored = Chain::load(db, genesis)?;
    if stored.ledger.state_root() != ledger.state_root() {
        return Err(Error::Corrupt(format!(
            "stored state has root {}, replay gives {}",
            stored.ledger.state_root(),
            ledger.state_root()
        )));
    }
    Ok(ReplayReport {
        blocks: height,
        txs,
        state_root: ledger.state_root(),
    })
}
