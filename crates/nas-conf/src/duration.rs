//! Go-style duration strings (`time.ParseDuration`), which NATS configs use for timeouts and
//! intervals (`"2m"`, `"1.9s"`, `"1h30m"`).

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}")]
pub struct DurationError {
    /// The text as given.
    pub input: String,
    /// What was wrong.
    pub reason: &'static str,
}

/// Go's limit: a `time.Duration` is an `i64` of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration: a sequence of decimal numbers, each with an optional fraction and a
/// unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `"300ms"`, `"1.5h"`, `"2h45m"`, with an
/// optional leading sign; a lone `"0"` needs no unit.
///
/// Unlike Go, negative durations are rejected (`std::time::Duration` cannot hold them), and
/// fractions are computed exactly rather than through a float. Values above Go's maximum
/// (about 292 years) are rejected as Go does.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &rest[..frac_len];
            s = &rest[frac_len..];
            if int_digits.is_empty() && frac_digits.is_empty() {
                return Err(err("a number needs at least one digit"));
            }
        } else if int_digits.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = s
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(err("missing unit"));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit = unit_nanos(unit).ok_or_else(|| err("unknown unit"))?;

        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            if whole > MAX_NANOS {
                return Err(err("out of range"));
            }
        }
        let mut part = whole * unit;
        // Digits beyond nanosecond precision of the largest unit cannot change the result, and
        // capping them keeps the arithmetic inside u128.
        let frac_digits = &frac_digits[..frac_digits.len().min(20)];
        if !frac_digits.is_empty() {
            let mut num: u128 = 0;
            for d in frac_digits.bytes() {
                num = num * 10 + u128::from(d - b'0');
            }
            let den = 10u128.pow(frac_digits.len() as u32);
            part += num * unit / den;
        }
        total += part;
        if total > MAX_NANOS {
            return Err(err("out of range"));
        }
    }
    if negative && total != 0 {
        return Err(err("negative durations are not supported"));
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn go_examples() {
        assert_eq!(parse_duration("2s").unwrap(), ms(2000));
        assert_eq!(parse_duration("500ms").unwrap(), ms(500));
        assert_eq!(parse_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse_duration("2h").unwrap(), ms(7_200_000));
        assert_eq!(parse_duration("1.9s").unwrap(), ms(1900));
        assert_eq!(parse_duration("1500ms").unwrap(), ms(1500));
        assert_eq!(parse_duration("1.5h").unwrap(), ms(5_400_000));
        assert_eq!(parse_duration(".5s").unwrap(), ms(500));
        assert_eq!(parse_duration("1.s").unwrap(), ms(1000));
        assert_eq!(parse_duration("+3m").unwrap(), ms(180_000));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("-0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("-0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("10µs").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("10μs").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(
            parse_duration("1h2m3s4ms5us6ns").unwrap(),
            Duration::new(3723, 4_005_006)
        );
        assert_eq!(
            parse_duration("2562047h47m16.854775807s").unwrap(),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "-",
            "+",
            "s",
            "1",
            "10",
            ".s",
            "1x",
            "1sec",
            "1s2",
            "-1s",
            "1.2.3s",
            " 1s",
            "1s ",
            "1 s",
            "2562047h47m16.854775808s",
            "99999999999999999999h",
            "1e3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        let e = parse_duration("3d").unwrap_err();
        assert_eq!(e.to_string(), "invalid duration `3d`: unknown unit");
    }
}
