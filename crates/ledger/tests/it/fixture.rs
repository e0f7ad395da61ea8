use cairn_ledger::testing::{self, TEST_GENESIS_MS};
use cairn_ledger::{BlockOutcome, Ledger};
use cairn_primitives::{Address, DeviceSpec, Genesis, Keypair, SignedTx, TxBody};

pub(crate) const TOKEN: u64 = 1_000_000_000;

pub(crate) struct World {
    pub(crate) genesis: Genesis,
    pub(crate) ledger: Ledger,
    pub(crate) users: Vec<Keypair>,
    pub(crate) devices: Vec<Keypair>,
    pub(crate) oracle: Keypair,
    pub(crate) checker: Keypair,
}

impl World {
    /// A world whose leases never time out unless a test says so (most tests apply blocks
    /// hours apart without the device reporting in between).
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
        let checker = Keypair::from_seed([91; 32]);
        let mut funded: Vec<(Address, u64)> = users
            .iter()
            .map(|k| (k.address(), 100_000 * TOKEN))
            .collect();
        funded.push((oracle.address(), 10 * TOKEN));
        funded.push((checker.address(), 10 * TOKEN));
        let mut genesis = testing::genesis(&funded);
        genesis.payment_model = model;
        genesis.oracle.keys = vec![oracle.address()];
        genesis.checkers = vec![checker.address()];
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
        }
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
