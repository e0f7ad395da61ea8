use cairn_ledger::tokenomics::{cumulative_emission, emission_between};
use cairn_primitives::decay_per_epoch;
use cairn_primitives::{Amount, DECAY_SCALE};

/// io.net's schedule: 300M tokens emitted hourly over 20 years with a 0.885 annual decay.
fn ionet() -> cairn_primitives::Params {
    let mut g = cairn_ledger::testing::genesis(&[]);
    g.epoch_secs = 3600;
    g.emission.epochs = 20 * 365 * 24;
    g.emission.decay_per_epoch = decay_per_epoch(0.885, 3600);
    g.validate().unwrap()
}

#[test]
fn ionet_schedule_sums_to_its_budget_and_decays() {
    let p = ionet();
    let n = p.emission_epochs;
    let mut total: u128 = 0;
    let mut prev = u64::MAX;
    let mut first_year = 0u128;
    for h in 0..n {
        let e = emission_between(&p, h, h + 1).base();
        total += u128::from(e);
        if h < 8760 {
            first_year += u128::from(e);
        }
        // Geometric decay: never increases (allowing one base unit of rounding).
        assert!(e <= prev.saturating_add(1), "epoch {h}: {e} after {prev}");
        prev = e;
    }
    // Differences of the cumulative curve: the sum is the budget exactly (error 0 ≤ 1 unit
    // per epoch).
    assert_eq!(total, u128::from(p.emission_budget.base()));
    assert_eq!(emission_between(&p, n, n + 1000), Amount::ZERO);
    // Year one is (1 - 0.885) / (1 - 0.885^20) of the budget: about 12.6%.
    let share = first_year as f64 / p.emission_budget.base() as f64;
    let expect = (1.0 - 0.885) / (1.0 - 0.885f64.powi(20));
    assert!((share - expect).abs() < 1e-6, "{share} vs {expect}");
}

#[test]
fn each_epoch_is_within_one_unit_of_the_exact_geometric_term() {
    let p = ionet();
    let r = p.decay_per_epoch as f64 / DECAY_SCALE as f64;
    let n = p.emission_epochs as i32;
    let b = p.emission_budget.base() as f64;
    let e0 = b * (1.0 - r) / (1.0 - r.powi(n));
    for h in [0u64, 1, 100, 8760, 87_600, 175_199] {
        let got = emission_between(&p, h, h + 1).base() as f64;
        let want = e0 * r.powi(h as i32);
        // Fixed point at 1e-18 relative error per step is far inside this.
        assert!(
            (got - want).abs() <= want * 1e-6 + 1.0,
            "h={h}: {got} vs {want}"
        );
    }
}

#[test]
fn the_cap_is_never_crossed() {
    // Cumulative emission is monotone and ends at the budget; genesis validation refuses a
    // budget that would cross the cap with the genesis balances.
    let p = ionet();
    let mut last = Amount::ZERO;
    for h in (0..=p.emission_epochs + 10).step_by(997) {
        let c = cumulative_emission(p.emission_budget, p.decay_per_epoch, p.emission_epochs, h);
        assert!(c >= last && c <= p.emission_budget);
        last = c;
    }
    let mut g = cairn_ledger::testing::genesis(&[(
        cairn_primitives::Address([1; 32]),
        500_000_001_000_000_000,
    )]);
    g.token.supply_cap = "800000000".into();
    let err = g.validate().unwrap_err().to_string();
    assert!(err.contains("token.supply_cap"), "{err}");
}
