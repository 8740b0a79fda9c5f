//! Sizes and durations for people.

/// Nanoseconds as seconds, in one division (`micros(ns) / 1e6` rounds twice: 0.41272601 s
/// became 0.41272601000000003).
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "seconds for people")]
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Nanoseconds as microseconds.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "microseconds for people")]
pub fn micros(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// `1.5GiB`, `64.0MiB`, `512B`.
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    #[expect(clippy::cast_precision_loss, reason = "one decimal is shown")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// `--max-size`: bytes with an optional binary suffix, `500M`, `2G`, `1048576`, `64KiB`.
///
/// # Errors
///
/// A message for clap when it is not such a size.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size (e.g. 100M, 2G, 1048576)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{value:?}: unknown unit {unit:?} (use K, M, G or T)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{value:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, parse_size};

    #[test]
    fn parses_sizes_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn picks_the_unit() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(64 << 20), "64.0MiB");
        assert_eq!(human_bytes(3 << 29), "1.5GiB");
    }
}
