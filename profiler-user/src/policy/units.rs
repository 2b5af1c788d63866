//! Sizes ("256MiB") and durations ("2s", "500ms") as a policy writes them.

use std::{fmt, time::Duration};

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A number of bytes: a TOML integer, or a string with a unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`,
/// or the decimal `kB`, `MB`, `GB`, `TB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// A length of time: a string with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`); fractions allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSpan(pub Duration);

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

const TIME_UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Splits "1.5GiB" into ("1.5", "GiB") and multiplies by the unit's scale, exactly for
/// integers and to the nearest unit for fractions.
fn scaled(text: &str, units: &[(&str, u64)], what: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let known = || units.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ");
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a {what}: it must start with a number"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "`{text}` has no unit; write e.g. `{number}{}` (units: {})",
            units[1].0,
            known()
        ));
    }
    let Some(&(_, scale)) = units.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "`{unit}` is not a unit of {what} (units: {})",
            known()
        ));
    };
    let digits: String = number.chars().filter(|&c| c != '_').collect();
    let value = if let Some((whole, fraction)) = digits.split_once('.') {
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            parse_digits(whole, text)?
        };
        let mut fraction_value = 0u128;
        let mut denominator = 1u128;
        for digit in fraction.chars().take(18) {
            let digit = digit
                .to_digit(10)
                .ok_or_else(|| format!("`{text}` is not a number"))?;
            fraction_value = fraction_value * 10 + u128::from(digit);
            denominator *= 10;
        }
        if fraction.is_empty() || fraction.contains('.') {
            return Err(format!("`{text}` is not a number"));
        }
        let whole = u128::from(whole) * u128::from(scale);
        let part = (fraction_value * u128::from(scale) + denominator / 2) / denominator;
        u64::try_from(whole + part).map_err(|_| format!("`{text}` is too large"))?
    } else {
        parse_digits(&digits, text)?
            .checked_mul(scale)
            .ok_or_else(|| format!("`{text}` is too large"))?
    };
    Ok(value)
}

fn parse_digits(digits: &str, text: &str) -> Result<u64, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a number"));
    }
    digits.parse().map_err(|_| format!("`{text}` is too large"))
}

impl ByteSize {
    /// Parses "256MiB", "1.5GiB", "64kB" or "4096B".
    pub fn parse(text: &str) -> Result<Self, String> {
        scaled(text, SIZE_UNITS, "size").map(Self)
    }
}

impl TimeSpan {
    /// Parses "2s", "500ms", "1.5s", "2m".
    pub fn parse(text: &str) -> Result<Self, String> {
        scaled(text, TIME_UNITS, "duration").map(|ns| Self(Duration::from_nanos(ns)))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly ("256 MiB", "1000 B").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{} {unit}", self.0 / scale);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl fmt::Display for TimeSpan {
    /// Milliseconds below ten seconds ("500 ms", "2000 ms" is shown as "2 s"), seconds above.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{} s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{} ms", nanos / 1_000_000)
        } else {
            write!(f, "{} µs", nanos.div_ceil(1_000))
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"256MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = TimeSpan;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"2s\" or \"500ms\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeSpan, E> {
                Err(E::custom(format!(
                    "a bare number is ambiguous; write \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeSpan, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TimeSpan, E> {
                Err(E::custom(format!(
                    "a bare number is ambiguous; write \"{v}s\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeSpan, E> {
                TimeSpan::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SpanVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ByteSize, TimeSpan};

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("256MiB"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("1.5 GiB"), Ok(ByteSize(3 << 29)));
        assert_eq!(ByteSize::parse("64kB"), Ok(ByteSize(64_000)));
        assert_eq!(ByteSize::parse("4_096B"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize(256 << 20).to_string(), "256 MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 B");
    }

    #[test]
    fn sizes_without_a_known_unit_are_refused() {
        assert!(ByteSize::parse("256").unwrap_err().contains("no unit"));
        assert!(
            ByteSize::parse("256 mb")
                .unwrap_err()
                .contains("not a unit")
        );
        assert!(
            ByteSize::parse("MiB")
                .unwrap_err()
                .contains("start with a number")
        );
        assert!(
            ByteSize::parse("1.2.3MiB")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            ByteSize::parse("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations_take_units_and_fractions() {
        assert_eq!(TimeSpan::parse("2s"), Ok(TimeSpan(Duration::from_secs(2))));
        assert_eq!(
            TimeSpan::parse("500ms"),
            Ok(TimeSpan(Duration::from_millis(500)))
        );
        assert_eq!(
            TimeSpan::parse("1.5s"),
            Ok(TimeSpan(Duration::from_millis(1500)))
        );
        assert_eq!(
            TimeSpan::parse("2m"),
            Ok(TimeSpan(Duration::from_secs(120)))
        );
        assert_eq!(TimeSpan(Duration::from_millis(500)).to_string(), "500 ms");
        assert_eq!(TimeSpan(Duration::from_secs(2)).to_string(), "2 s");
    }

    #[test]
    fn durations_without_a_unit_are_refused() {
        assert!(TimeSpan::parse("2").unwrap_err().contains("no unit"));
        assert!(
            TimeSpan::parse("2 fortnights")
                .unwrap_err()
                .contains("not a unit")
        );
        assert!(
            TimeSpan::parse("-1s")
                .unwrap_err()
                .contains("start with a number")
        );
    }
}
