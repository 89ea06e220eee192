//! Human-written quantities in the config file: durations (`500ms`, `5s`, `2m`, `1h`) and
//! sizes (`512KiB`, `10MiB`, `1m` as nginx writes it).

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`. The error starts with the
/// quoted input so callers can prefix the field name.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    const HELP: &str = "write a whole number followed by ms, s, m or h, e.g. \"500ms\" or \"5s\"";
    let (number, unit) = split_number(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration ({HELP})"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        _ => return Err(format!("\"{text}\" is not a duration ({HELP})")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too long a duration"))
}

/// Parses `<integer>[unit]` in bytes; K/M/G units are binary (1024-based), as in nginx.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    const HELP: &str = "write a whole number followed by B, KiB, MiB or GiB, e.g. \"10MiB\"";
    let (number, unit) = split_number(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size ({HELP})"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("\"{text}\" is not a size ({HELP})")),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{text}\" is too large a size"))
}

/// Leading digits and the rest, without trimming: "10 MiB" is rejected, not guessed at.
fn split_number(text: &str) -> (&str, &str) {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    text.split_at(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("five s").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
