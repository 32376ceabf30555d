//! Byte sizes in the config file: `65536`, `"512B"`, `"64KiB"`, `"1MiB"`, `"1GiB"`.
//!
//! Written by hand for the same reason as durations: four binary suffixes and a plain
//! number; a crate would accept decimal units (`KB`) whose meaning users misread.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A byte count read from the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

const SIZE_HINT: &str = "write a whole number of bytes or one with a unit: 65536, \"64KiB\", \"1MiB\" or \"1GiB\"";

/// Parses `"<digits>[B|KiB|MiB|GiB]"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 =
        digits.parse().map_err(|_| format!("size \"{text}\" does not start with a number; {SIZE_HINT}"))?;
    let factor = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("size \"{text}\" has unknown unit \"{unit}\"; {SIZE_HINT}")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("size \"{text}\" is too large"))
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a size such as \"64KiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigSize, E> {
                parse_size(v).map(ConfigSize).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigSize, E> {
                u64::try_from(v)
                    .map(ConfigSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative; {SIZE_HINT}")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    }

    #[test]
    fn rejects_decimal_units_and_garbage_with_a_hint() {
        for bad in ["64KB", "1 MiB", "MiB", "", "-1"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains("\"64KiB\""), "{bad}: {err}");
        }
    }
}
