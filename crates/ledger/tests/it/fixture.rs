use cairn_ledger::testing::{self, TEST_GENESIS_MS};
use cairn_ledger::{BlockOutcome, Ledger};
use cairn_primitives::{
    Address, CheckStatus, DeviceSpec, Genesis, Keypair, ResultCode, SignedTx, TxBody,
};

pub(crate) const TOKEN: u64 = 1_000_000_000;

pub(crate) struct World {
    pub(crate) genesis: Genesis,
    pub(crate) ledger: Ledger,
    pub(crate) users: Vec<Keypair>,
    pub(crate) devices: Vec<Keypair>,
    pub(crate) oracle: Keypair,
    /// The first of `checkers`.
    pub(crate) checker: Keypair,
    /// Three checkers staked at genesis: the committee, each device's three.
    pub(crate) checkers: Vec<Keypair>,
}

impl World {
    /// A world whose leases never time out unless a test says so (most tests apply blocks
    /// hours apart without the device reporting in between), and where every block at least
    /// 1 ms after its parent starts a round (so that tests choose when devices are checked).
    pub(crate) fn new(model: cairn_primitives::PaymentModel) -> Self {
        Self::with(model, |_| {})
    }

    /// A world built from the test genesis after `edit`.
    pub(crate) fn with(
        model: cairn_primitives::PaymentModel,
        edit: impl FnOnce(&mut Genesis),
    ) -> Self {
        let users: Vec<Keypair> = (0..4).map(|i| Keypair::from_seed([10 + i; 32])).collect();
        let devices: Vec<Keypair> = (0..4).map(|i| Keypair::from_seed([50 + i; 32])).collect();
        let oracle = Keypair::from_seed([90; 32]);
        let checkers: Vec<Keypair> = (0..3).map(|i| Keypair::from_seed([91 + i; 32])).collect();
        let checker = checkers[0].clone();
        let mut funded: Vec<(Address, u64)> = users
            .iter()
            .map(|k| (k.address(), 100_000 * TOKEN))
            .collect();
        funded.push((oracle.address(), 10 * TOKEN));
        funded.extend(checkers.iter().map(|k| (k.address(), 10 * TOKEN)));
        let mut genesis = testing::genesis(&funded);
        genesis.payment_model = model;
        genesis.oracle.keys = vec![oracle.address()];
        genesis.checkers = checkers
            .iter()
            .map(|k| testing::genesis_checker(k.address()))
            .collect();
        genesis.checking.rounds_per_epoch = 60_000;
        genesis.checking.min_round_gap_secs = 0;
        genesis.lease_timeout_secs = 30 * 24 * 3600;
        edit(&mut genesis);
        let ledger = Ledger::from_genesis(&genesis).unwrap();
        Self {
            genesis,
            ledger,
            users,
            devices,
            oracle,
            checker,
            checkers,
        }
    }

    /// A `PostResults` from `checker` (see [`testing::results`]).
    pub(crate) fn results(
        &self,
        checker: &Address,
        round: u64,
        codes: &[(Address, ResultCode)],
    ) -> TxBody {
        testing::results(&self.ledger, checker, round, codes)
    }

    /// One block, 1 ms on (so it starts a round), in which checkers `by` post `code` for
    /// `devices`; returns the block's outcome.
    pub(crate) fn check(
        &mut self,
        devices: &[Address],
        by: &[usize],
        code: ResultCode,
    ) -> BlockOutcome {
        let round = self.ledger.globals().height + 1;
        let codes: Vec<(Address, ResultCode)> = devices.iter().map(|d| (*d, code)).collect();
        let txs: Vec<SignedTx> = by
            .iter()
            .map(|i| {
                let k = self.checkers[*i].clone();
                let body = self.results(&k.address(), round, &codes);
                self.tx(&k, body)
            })
            .collect();
        self.block(1, txs)
    }

    /// Two of its three checkers pass `device` in a new round: it is verified.
    pub(crate) fn verify(&mut self, device: Address) {
        let o = self.check(&[device], &[0, 1], ResultCode::Pass);
        for r in &o.results {
            assert_eq!(r.error, None);
        }
        let d = self.ledger.device(&device).unwrap();
        assert_eq!(d.standing.status, CheckStatus::Verified);
    }

    pub(crate) fn tx(&self, key: &Keypair, body: TxBody) -> SignedTx {
        let nonce = self.ledger.account(&key.address()).nonce;
        testing::tx(key, nonce, body, &self.genesis.chain_id)
    }

    pub(crate) fn now(&self) -> u64 {
        self.ledger.globals().last_timestamp_ms
    }

    /// Applies one block at `now + advance_ms`.
    pub(crate) fn block(&mut self, advance_ms: u64, txs: Vec<SignedTx>) -> BlockOutcome {
        let b = self.ledger.build_block(self.now() + advance_ms, txs);
        self.ledger.apply(&b).unwrap()
    }

    /// Applies one transaction in its own block and returns its error, if any.
    pub(crate) fn run(&mut self, key: &Keypair, body: TxBody) -> Option<cairn_ledger::TxError> {
        let t = self.tx(key, body);
        self.block(1, vec![t]).results[0].error.clone()
    }

    pub(crate) fn register_cpu(&mut self, owner: usize, device: usize, cores: u32, price: u64) {
        let body = testing::register(
            &self.users[owner].address(),
            &self.devices[device],
            "CPU",
            DeviceSpec {
                gpu_count: 0,
                vram_mib: 0,
                cpu_cores: cores,
                ram_mib: 8192,
            },
            "eu-west",
            price,
            &self.genesis.chain_id,
        );
        let owner_key = self.users[owner].clone();
        assert_eq!(self.run(&owner_key, body), None);
        let device = self.devices[device].address();
        self.verify(device);
    }

    /// Asserts the supply identities.
    pub(crate) fn check_supply(&self) {
        let g = self.ledger.globals();
        let p = self.ledger.params();
        assert_eq!(
            u128::from(g.supply.base()),
            u128::from(p.genesis_supply.base()) + u128::from(g.minted.base())
                - u128::from(g.burned.base()),
            "supply = genesis + minted - burned"
        );
        assert_eq!(
            self.ledger.holdings(),
            u128::from(g.supply.base()),
            "holdings = supply"
        );
        assert!(g.supply <= p.supply_cap);
    }
}

pub(crate) fn genesis_ms() -> u64 {
    TEST_GENESIS_MS
}
