//! Emission schedule and reward arithmetic: integer fixed point, identical on every machine.
//!
//! The schedule is `E_h = E_0 · r^h`. Rather than minting `E_h` rounded each epoch (which
//! drifts), the ledger mints the difference of the cumulative curve
//! `C(h) = B · (1 − r^h) / (1 − r^N)`, so that any run of epochs sums exactly to
//! `C(end) − C(start)` and the whole schedule to the budget `B`, with no drift at all.

use cairn_primitives::{Amount, DECAY_SCALE, Params};

/// `r^h` in fixed point (`DECAY_SCALE` = 1), by squaring, flooring each product.
pub fn pow_fixed(r: u128, mut h: u64) -> u128 {
    let mut base = r.min(DECAY_SCALE);
    let mut acc = DECAY_SCALE;
    while h > 0 {
        if h & 1 == 1 {
            acc = acc.saturating_mul(base) / DECAY_SCALE;
        }
        base = base.saturating_mul(base) / DECAY_SCALE;
        h >>= 1;
    }
    acc
}

/// Cumulative emission after `h` completed epochs: `C(h)`, in base units.
pub fn cumulative_emission(budget: Amount, r: u128, epochs: u64, h: u64) -> Amount {
    if h >= epochs {
        return budget;
    }
    let b = u128::from(budget.base());
    let v = if r >= DECAY_SCALE {
        // No decay: a straight line.
        straight(b, h, epochs)
    } else {
        let num = DECAY_SCALE.saturating_sub(pow_fixed(r, h));
        let den = DECAY_SCALE.saturating_sub(pow_fixed(r, epochs));
        // b < 2^64 and num < 2^60, so the product fits in 128 bits.
        b.saturating_mul(num)
            .checked_div(den)
            .unwrap_or_else(|| straight(b, h, epochs))
    };
    Amount::from_base(u64::try_from(v.min(b)).unwrap_or(budget.base()))
}

/// `b · h / epochs` (h < epochs, so epochs ≥ 1).
fn straight(b: u128, h: u64, epochs: u64) -> u128 {
    b.saturating_mul(u128::from(h))
        .checked_div(u128::from(epochs))
        .unwrap_or(b)
}

/// Scheduled emission for the epochs `[from, to)`.
pub fn emission_between(params: &Params, from: u64, to: u64) -> Amount {
    let c = |h| {
        cumulative_emission(
            params.emission_budget,
            params.decay_per_epoch,
            params.emission_epochs,
            h,
        )
    };
    c(to).checked_sub(c(from)).unwrap_or(Amount::ZERO)
}

/// `floor(total · part / whole)`: a share of a pool, rounded down so that shares never add up
/// to more than the pool; the caller sends the remainder to the treasury.
pub fn floor_share(total: u64, part: u128, whole: u128) -> u64 {
    if whole == 0 {
        return 0;
    }
    let v = u128::from(total)
        .saturating_mul(part)
        .checked_div(whole)
        .unwrap_or(0);
    u64::try_from(v.min(u128::from(total))).unwrap_or(total)
}

/// `ceil(a · b / c)`: used where rounding must favour the protocol (fees taken, deposits held).
pub fn ceil_mul_div(a: u64, b: u64, c: u64) -> Option<u64> {
    if c == 0 {
        return None;
    }
    let n = u128::from(a).checked_mul(u128::from(b))?;
    let v = n.div_ceil(u128::from(c));
    u64::try_from(v).ok()
}

/// `floor(a · b / c)`.
pub fn floor_mul_div(a: u64, b: u64, c: u64) -> Option<u64> {
    if c == 0 {
        return None;
    }
    let v = u128::from(a)
        .checked_mul(u128::from(b))?
        .checked_div(u128::from(c))?;
    u64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_fixed_matches_float_closely() {
        let r = 999_986_060_000_000_000u128;
        for h in [0u64, 1, 2, 100, 8760, 175_200] {
            let fixed = pow_fixed(r, h) as f64 / DECAY_SCALE as f64;
            let float = (r as f64 / DECAY_SCALE as f64).powf(h as f64);
            assert!((fixed - float).abs() < 1e-9, "h={h}: {fixed} vs {float}");
        }
    }

    #[test]
    fn shares_round_down() {
        assert_eq!(floor_share(10, 1, 3), 3);
        assert_eq!(floor_share(10, 0, 0), 0);
        assert_eq!(ceil_mul_div(10, 1, 3), Some(4));
        assert_eq!(floor_mul_div(10, 1, 3), Some(3));
        assert_eq!(ceil_mul_div(1, 1, 0), None);
    }
}
