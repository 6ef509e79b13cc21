use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MICROS_PER_USD: i64 = 1_000_000;
const MAX_DECIMALS: usize = 6;

/// A non-negative amount of US dollars, held as integer micro-dollars.
///
/// Budget arithmetic is integer arithmetic on this type; nothing converts
/// through `f64` except the final JSON number on the way out. The largest
/// amount is 999,999,999.999999 USD: fifteen significant digits, the most an
/// IEEE double carries exactly, so every value survives a JSON round trip
/// through any client unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// Why a value is not an amount of [`Money`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be a finite number")]
    NotFinite,
    #[error("amount has more than 6 decimal places (the smallest unit is 0.000001 USD)")]
    TooPrecise,
    #[error("amount is larger than the maximum of 999999999.999999 USD")]
    TooLarge,
    #[error("amount must be a decimal number of USD such as 5 or 0.25, got {0:?}")]
    Malformed(String),
}

impl Money {
    pub const ZERO: Money = Money(0);
    /// 999,999,999.999999 USD; see the type's documentation for why.
    pub const MAX: Money = Money(999_999_999_999_999);
    /// One cent, the amount a delegating parent always keeps.
    pub const CENT: Money = Money(10_000);

    pub fn from_micros(micros: i64) -> Result<Self, MoneyError> {
        if micros < 0 {
            return Err(MoneyError::Negative);
        }
        if micros > Self::MAX.0 {
            return Err(MoneyError::TooLarge);
        }
        Ok(Self(micros))
    }

    /// Whole dollars, for literals in code and tests.
    pub fn from_usd(dollars: u32) -> Self {
        // u32::MAX dollars is below MAX, so this cannot overflow.
        Self(i64::from(dollars) * MICROS_PER_USD)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0
            .checked_add(other.0)
            .filter(|sum| *sum <= Self::MAX.0)
            .map(Money)
    }

    /// `None` when `other` is larger than `self`: money never goes negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        (other.0 <= self.0).then(|| Money(self.0 - other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0).max(0))
    }

    /// Parses a decimal USD amount such as `"5"`, `"0.25"` or `"1.000001"`.
    /// No sign, no exponent, at most six decimals.
    pub fn parse_usd(input: &str) -> Result<Self, MoneyError> {
        let malformed = || MoneyError::Malformed(input.to_owned());
        if input.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let (whole, fraction) = match input.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (input, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(malformed());
        }
        if input.contains('.') && fraction.is_empty() {
            return Err(malformed());
        }
        // Trailing zeros carry no precision: "1.2500000" is 1.25.
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > MAX_DECIMALS {
            return Err(MoneyError::TooPrecise);
        }
        let whole = whole.trim_start_matches('0');
        // More than nine whole digits is above MAX whatever follows.
        if whole.len() > 9 {
            return Err(MoneyError::TooLarge);
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| malformed())?
        };
        let fraction_micros: i64 = format!("{fraction:0<6}").parse().map_err(|_| malformed())?;
        Self::from_micros(whole * MICROS_PER_USD + fraction_micros)
    }

    /// Converts a JSON number. The shortest decimal that reads back as the
    /// same `f64` is what the client wrote (for up to fifteen significant
    /// digits), so parsing that decimal exactly rejects `0.1234567` instead of
    /// rounding it.
    pub fn from_f64_usd(value: f64) -> Result<Self, MoneyError> {
        if !value.is_finite() {
            return Err(MoneyError::NotFinite);
        }
        if value < 0.0 {
            return Err(MoneyError::Negative);
        }
        // `Display` for f64 never uses exponent notation and prints the
        // shortest round-trip form, so the string is plain decimal digits.
        Self::parse_usd(&value.to_string())
    }

    /// The amount as a JSON-ready number of USD; exact for every value of the
    /// type (see the type's documentation).
    pub fn to_f64_usd(self) -> f64 {
        // Both operands are exactly representable and the division is
        // correctly rounded, so this is the double nearest the true amount.
        self.0 as f64 / MICROS_PER_USD as f64
    }
}

impl fmt::Display for Money {
    /// Plain decimal USD without trailing zeros: `5`, `0.25`, `1.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_USD;
        let fraction = self.0 % MICROS_PER_USD;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_usd(s)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Whole dollars go out as `5.0`, the form the seeds show.
        serializer.serialize_f64(self.to_f64_usd())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsdVisitor;

        impl Visitor<'_> for UsdVisitor {
            type Value = Money;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of USD with at most 6 decimals")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                let micros = i64::try_from(v)
                    .ok()
                    .and_then(|v| v.checked_mul(MICROS_PER_USD))
                    .ok_or(MoneyError::TooLarge)
                    .map_err(E::custom)?;
                Money::from_micros(micros).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                if v < 0 {
                    return Err(E::custom(MoneyError::Negative));
                }
                self.visit_u64(v.unsigned_abs())
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                Money::from_f64_usd(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(UsdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(input: &str) -> Result<Money, String> {
        serde_json::from_str::<Money>(input).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_json_numbers_exactly() {
        assert_eq!(json("5").unwrap().micros(), 5_000_000);
        assert_eq!(json("5.0").unwrap().micros(), 5_000_000);
        assert_eq!(json("0.1").unwrap().micros(), 100_000);
        assert_eq!(json("1.23").unwrap().micros(), 1_230_000);
        assert_eq!(json("0.000001").unwrap().micros(), 1);
        assert_eq!(json("0").unwrap(), Money::ZERO);
        assert_eq!(json("1e2").unwrap().micros(), 100_000_000);
        assert_eq!(json("999999999.999999").unwrap(), Money::MAX);
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        assert!(json("-1").unwrap_err().contains("negative"));
        assert!(json("-0.5").unwrap_err().contains("negative"));
        assert!(json("0.0000001").unwrap_err().contains("6 decimal"));
        assert!(json("1000000000").unwrap_err().contains("maximum"));
        assert!(json("1e300").unwrap_err().contains("maximum"));
        assert!(
            json("18446744073709551615")
                .unwrap_err()
                .contains("maximum")
        );
        assert!(json("\"5\"").is_err());
        assert!(json("null").is_err());
        assert_eq!(Money::from_f64_usd(f64::NAN), Err(MoneyError::NotFinite));
        assert_eq!(
            Money::from_f64_usd(f64::INFINITY),
            Err(MoneyError::NotFinite)
        );
        assert_eq!(Money::from_f64_usd(-0.01), Err(MoneyError::Negative));
    }

    #[test]
    fn parses_decimal_strings() {
        assert_eq!(Money::parse_usd("007.50").unwrap().micros(), 7_500_000);
        assert_eq!(Money::parse_usd("1.2500000").unwrap().micros(), 1_250_000);
        for bad in ["", ".5", "5.", "1.2.3", "1e5", "+1", " 1", "abc"] {
            assert!(
                matches!(Money::parse_usd(bad), Err(MoneyError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
        assert_eq!(Money::parse_usd("-3"), Err(MoneyError::Negative));
        assert_eq!(
            Money::parse_usd("0000000001000000000"),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn serializes_as_the_seeds_show() {
        assert_eq!(serde_json::to_string(&Money::from_usd(5)).unwrap(), "5.0");
        let amount = Money::from_micros(3_770_000).unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "3.77");
        assert_eq!(amount.to_string(), "3.77");
        assert_eq!(Money::from_micros(1).unwrap().to_string(), "0.000001");
    }

    #[test]
    fn arithmetic_never_leaves_the_range() {
        let five = Money::from_usd(5);
        assert_eq!(five.checked_sub(Money::from_usd(6)), None);
        assert_eq!(five.saturating_sub(Money::from_usd(6)), Money::ZERO);
        assert_eq!(Money::MAX.checked_add(Money::from_micros(1).unwrap()), None);
        assert_eq!(Money::from_micros(-1), Err(MoneyError::Negative));
    }

    proptest! {
        #[test]
        fn every_amount_survives_a_json_round_trip(micros in 0..=Money::MAX.micros()) {
            let amount = Money::from_micros(micros).unwrap();
            let text = serde_json::to_string(&amount).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&text).unwrap(), amount);
            prop_assert_eq!(Money::parse_usd(&amount.to_string()).unwrap(), amount);
        }

        #[test]
        fn seven_significant_decimals_are_refused(whole in 0u32..1000, micros in 0u32..1_000_000, extra in 1u32..10) {
            let text = format!("{whole}.{micros:06}{extra}");
            prop_assert_eq!(Money::parse_usd(&text), Err(MoneyError::TooPrecise));
        }
    }
}
