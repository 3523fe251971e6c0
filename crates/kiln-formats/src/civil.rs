//! Calendar dates and times (UTC) of epoch seconds, for the formats that
//! store them as such (OCI's RFC 3339 strings, FAT's DOS times).

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// The UTC date and time `epoch` seconds after 1970, clamped to the years
/// -9999 to 9999.
pub(crate) fn civil(epoch: i64) -> DateTime {
    TimeZone::UTC.to_datetime(timestamp(epoch))
}

/// `epoch` as a timestamp, clamped to the years -9999 to 9999.
pub(crate) fn timestamp(epoch: i64) -> Timestamp {
    Timestamp::from_second(epoch).unwrap_or(if epoch < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}
