//! Human-readable durations in the config file: `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
//!
//! Written by hand because the grammar is four suffixes; a crate would add more
//! surface (and more accepted spellings to document) than it saves.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration read from the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// What a user should write instead of a malformed duration.
const DURATION_HINT: &str = "write a whole number with a unit: \"250ms\", \"10s\", \"5m\" or \"1h\"";

/// Parses `"<digits><unit>"` where unit is one of ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration \"{text}\" has no unit; {DURATION_HINT}"))?;
    let (digits, unit) = text.split_at(split);
    let value: u64 =
        digits.parse().map_err(|_| format!("duration \"{text}\" does not start with a number; {DURATION_HINT}"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        _ => return Err(format!("duration \"{text}\" has unknown unit \"{unit}\"; {DURATION_HINT}")),
    };
    millis.map(Duration::from_millis).ok_or_else(|| format!("duration \"{text}\" is too large"))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration string such as \"10s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_missing_or_unknown_units_with_a_hint() {
        for bad in ["10", "s", "10 sec", "ten s", "-1s", ""] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("\"10s\""), "{bad}: {err}");
        }
    }
}
