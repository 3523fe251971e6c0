//! The RFC 2822 dates of `Release` files (`Date`, `Valid-Until`).
//!
//! Owns turning `Sat, 17 May 2025 09:31:35 UTC` into seconds since the Unix
//! epoch. Reads no clock: callers pass "now" in, so tests are deterministic.

/// Parses a `Release` date into seconds since the Unix epoch (UTC).
///
/// Accepts what RFC 2822 does (an optional weekday, which must match;
/// `GMT`, `UT` and numeric offsets such as `+0000`; one- or two-digit
/// days) and what Debian's archives write besides: the zone `UTC` (or `Z`),
/// or no zone at all, meaning UTC.
pub(crate) fn parse_rfc2822(text: &str) -> Option<i64> {
    let text = text.trim();
    let parser = jiff::fmt::rfc2822::DateTimeParser::new();
    let utc = text
        .strip_suffix(" UTC")
        .or_else(|| text.strip_suffix(" Z"))
        .map(|t| format!("{t} +0000"));
    let parsed = match utc {
        Some(t) => parser.parse_timestamp(t),
        None => parser
            .parse_timestamp(text)
            .or_else(|_| parser.parse_timestamp(format!("{text} +0000"))),
    };
    parsed.ok().map(jiff::Timestamp::as_second)
}

/// Formats seconds since the epoch as a `Release` date (`Sat, 17 May 2025 09:31:35 UTC`).
pub(crate) fn format_rfc2822(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(
        |_| format!("{secs} seconds after 1970"),
        |t| t.strftime("%a, %d %b %Y %H:%M:%S UTC").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_release_dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_rfc2822("Sat, 17 May 2025 09:31:35 UTC"),
            Some(1_747_474_295)
        );
        assert_eq!(
            parse_rfc2822("Sat, 17 May 2025 10:31:35 +0100"),
            Some(1_747_474_295)
        );
        assert_eq!(
            parse_rfc2822("29 Feb 2024 12:00:00 GMT"),
            Some(1_709_208_000)
        );
        assert_eq!(parse_rfc2822("Sat, 17 Foo 2025 09:31:35 UTC"), None);
        assert_eq!(parse_rfc2822("Sat, 17 May 2025 25:31:35 UTC"), None);
    }

    proptest! {
        #[test]
        fn format_round_trips(secs in 0i64..4_102_444_800) {
            prop_assert_eq!(parse_rfc2822(&format_rfc2822(secs)), Some(secs));
        }
    }
}
