//! Token amounts and compute credits, in integer base units with checked arithmetic.

use bytes::BufMut;
use commonware_codec::{Buf, Error, FixedSize, Read, ReadExt, Write};
use std::fmt;

/// A token amount in base units (the token has [`Amount::DECIMALS`] decimals by default;
/// genesis may choose another count, and display then uses that).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

/// Compute credits: non-transferable, priced in USD (one credit is $0.00001, Helium's data
/// credit), minted by burning tokens and consumed by leases.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Credits(pub u64);

/// Why a decimal string is not an amount.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseAmountError {
    /// Not a non-negative decimal number.
    #[error("'{0}' is not a non-negative decimal number")]
    NotANumber(String),
    /// More fractional digits than the token has decimals.
    #[error("'{0}' has more than {1} decimal places")]
    TooPrecise(String, u8),
    /// Does not fit in 64 bits of base units.
    #[error("'{0}' is too large")]
    Overflow(String),
}

impl Amount {
    /// Decimal places of the default token (like SOL's lamports).
    pub const DECIMALS: u8 = 9;
    /// Zero.
    pub const ZERO: Amount = Amount(0);
    /// The largest representable amount.
    pub const MAX: Amount = Amount(u64::MAX);

    /// An amount of `base` base units.
    pub const fn from_base(base: u64) -> Self {
        Self(base)
    }

    /// The amount in base units.
    pub const fn base(self) -> u64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, or `None` when it would go below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `floor(self * num / den)` computed in 128 bits, or `None` when `den` is zero or the
    /// result does not fit. Flooring is the protocol's rounding: remainders are accounted by
    /// the caller, never lost.
    pub fn mul_div_floor(self, num: u64, den: u64) -> Option<Amount> {
        if den == 0 {
            return None;
        }
        let v = u128::from(self.0).checked_mul(u128::from(num))? / u128::from(den);
        u64::try_from(v).ok().map(Amount)
    }

    /// Parses a decimal string such as `"12.5"` with `decimals` decimal places into base units.
    pub fn parse_decimal(s: &str, decimals: u8) -> Result<Amount, ParseAmountError> {
        let t = s.trim().replace('_', "");
        let (int, frac) = t.split_once('.').unwrap_or((&t, ""));
        if int.is_empty() && frac.is_empty()
            || !int.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return Err(ParseAmountError::NotANumber(s.to_string()));
        }
        if frac.len() > usize::from(decimals) {
            return Err(ParseAmountError::TooPrecise(s.to_string(), decimals));
        }
        let scale = 10u128
            .checked_pow(u32::from(decimals))
            .ok_or_else(|| ParseAmountError::Overflow(s.to_string()))?;
        let int_v: u128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| ParseAmountError::Overflow(s.to_string()))?
        };
        let mut frac_s = frac.to_string();
        while frac_s.len() < usize::from(decimals) {
            frac_s.push('0');
        }
        let frac_v: u128 = if frac_s.is_empty() {
            0
        } else {
            frac_s
                .parse()
                .map_err(|_| ParseAmountError::Overflow(s.to_string()))?
        };
        let total = int_v
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_v))
            .ok_or_else(|| ParseAmountError::Overflow(s.to_string()))?;
        u64::try_from(total)
            .map(Amount)
            .map_err(|_| ParseAmountError::Overflow(s.to_string()))
    }

    /// Formats with `decimals` decimal places, trailing zeros trimmed: `12.5`.
    pub fn display(self, decimals: u8) -> String {
        let scale = 10u64.pow(u32::from(decimals.min(19)));
        let int = self.0 / scale;
        let frac = self.0 % scale;
        if frac == 0 {
            return int.to_string();
        }
        let f = format!("{frac:0width$}", width = usize::from(decimals));
        format!("{int}.{}", f.trim_end_matches('0'))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display(Self::DECIMALS))
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}b", self.0)
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Amount)
    }
}

impl Write for Amount {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.write(buf);
    }
}
impl FixedSize for Amount {
    const SIZE: usize = 8;
}
impl Read for Amount {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(Self(u64::read(buf)?))
    }
}

/// Payment units: what prices per hour, deposits and lease payments count in. One unit is
/// one compute credit under the `bme` payment model and one token base unit under `direct`;
/// the ledger converts them to [`Credits`] or an [`Amount`] only where credits or tokens
/// change hands (a deposit taken, a provider paid, a customer refunded).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct PayUnits(pub u64);

impl PayUnits {
    /// Zero.
    pub const ZERO: PayUnits = PayUnits(0);

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: PayUnits) -> Option<PayUnits> {
        self.0.checked_add(other.0).map(PayUnits)
    }

    /// `self - other`, or `None` when it would go below zero.
    pub fn checked_sub(self, other: PayUnits) -> Option<PayUnits> {
        self.0.checked_sub(other.0).map(PayUnits)
    }

    /// `self - other`, or zero when it would go below zero.
    pub fn saturating_sub(self, other: PayUnits) -> PayUnits {
        PayUnits(self.0.saturating_sub(other.0))
    }

    /// The same number of credits (the `bme` model's conversion).
    pub fn as_credits(self) -> Credits {
        Credits(self.0)
    }

    /// The same number of token base units (the `direct` model's conversion).
    pub fn as_tokens(self) -> Amount {
        Amount::from_base(self.0)
    }
}

impl fmt::Display for PayUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for PayUnits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl Write for PayUnits {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.write(buf);
    }
}
impl FixedSize for PayUnits {
    const SIZE: usize = 8;
}
impl Read for PayUnits {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(Self(u64::read(buf)?))
    }
}

impl Credits {
    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }
    /// `self - other`, or `None` when it would go below zero.
    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} credits", self.0)
    }
}

impl serde::Serialize for Credits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl Write for Credits {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.write(buf);
    }
}
impl FixedSize for Credits {
    const SIZE: usize = 8;
}
impl Read for Credits {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, Error> {
        Ok(Self(u64::read(buf)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let a = Amount::parse_decimal("12.5", 9).unwrap();
        assert_eq!(a.base(), 12_500_000_000);
        assert_eq!(a.to_string(), "12.5");
        assert_eq!(Amount::parse_decimal("0.000000001", 9).unwrap().base(), 1);
        assert_eq!(
            Amount::parse_decimal("1_000", 9).unwrap().base(),
            1_000_000_000_000
        );
        assert!(matches!(
            Amount::parse_decimal("0.0000000001", 9),
            Err(ParseAmountError::TooPrecise(..))
        ));
        assert!(matches!(
            Amount::parse_decimal("-1", 9),
            Err(ParseAmountError::NotANumber(..))
        ));
        assert!(matches!(
            Amount::parse_decimal("99999999999", 9),
            Err(ParseAmountError::Overflow(..))
        ));
        assert!(Amount::parse_decimal(".", 9).is_err());
    }

    #[test]
    fn checked_arithmetic_refuses_overflow() {
        assert_eq!(Amount::MAX.checked_add(Amount::from_base(1)), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::from_base(1)), None);
        assert_eq!(
            Amount::from_base(10).mul_div_floor(1, 3),
            Some(Amount::from_base(3))
        );
        assert_eq!(Amount::from_base(10).mul_div_floor(1, 0), None);
        assert_eq!(Amount::MAX.mul_div_floor(2, 1), None);
    }
}
