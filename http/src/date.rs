//! The `Date` header, formatted once per second instead of once per response.
//!
//! Every final response must carry `Date` (RFC 9110 §6.6.1) in IMF-fixdate form, e.g.
//! `Sun, 06 Nov 1994 08:49:37 GMT`. Formatting a calendar date per request is measurable at
//! a million requests per second, so the server keeps the last formatted value and rebuilds it
//! only when the second changes. The current time comes from the reactor's wake-up timestamp,
//! so checking costs no extra clock read either.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct DateCache {
    /// Unix time in ms when the reactor's clock read 0.
    base_unix_ms: u64,
    second: u64,
    text: [u8; 29],
}

impl DateCache {
    /// `loop_elapsed` is the reactor's current elapsed time, used to align the two clocks.
    pub fn new(loop_elapsed: Duration) -> DateCache {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let base_unix_ms = unix.saturating_sub(loop_elapsed).as_millis() as u64;
        let mut d = DateCache { base_unix_ms, second: u64::MAX, text: [b' '; 29] };
        d.update(0);
        d
    }

    /// The header value for loop time `now_ms` (the reactor's `now_ms()`).
    pub fn get(&mut self, now_ms: u64) -> &[u8; 29] {
        self.update(now_ms);
        &self.text
    }

    fn update(&mut self, now_ms: u64) {
        let second = (self.base_unix_ms + now_ms) / 1000;
        if second != self.second {
            self.second = second;
            self.text = format_imf_fixdate(second);
        }
    }
}

/// Formats a Unix time (seconds) as IMF-fixdate.
pub fn format_imf_fixdate(unix_secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    put2(&mut out[5..7], day as u64);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year as u64;
    put2(&mut out[12..14], y / 100);
    put2(&mut out[14..16], y % 100);
    put2(&mut out[17..19], secs / 3600);
    put2(&mut out[20..22], secs / 60 % 60);
    put2(&mut out[23..25], secs % 60);
    out
}

fn put2(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(&format_imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_imf_fixdate(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_imf_fixdate(1_795_000_000), b"Wed, 18 Nov 2026 11:06:40 GMT");
    }
}
