//! The `Date` header, formatted once per second instead of once per response.
//!
//! Every final response must carry `Date` (RFC 9110 §6.6.1) in IMF-fixdate form, e.g.
//! `Sun, 06 Nov 1994 08:49:37 GMT`. Formatting a calendar date per request is measurable at
//! a million requests per second, so the server keeps the last formatted value and rebuilds it
//! only when the second changes.
//!
//! The value follows the wall clock, read at most once per wall-clock second: each read also
//! says how long until the wall clock's next second (the text cannot change before then), and
//! until that much loop time has passed, requests get the cached text without a clock read.
//! Checking costs one comparison with the reactor's wake-up timestamp. Deriving the date from
//! the loop's monotonic clock plus the wall time at start would be cheaper still, but would
//! freeze the offset: after the wall clock is stepped (NTP, an operator) Date would stay wrong
//! until a restart. Here a step shows within a second.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock: time since the Unix epoch.
pub(crate) type WallClock = fn() -> Duration;

fn system_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

pub struct DateCache {
    clock: WallClock,
    /// Loop time (ms) from which the wall clock is read again: its next second, as of the
    /// last read.
    next_read_ms: u64,
    /// The Unix second `text` shows.
    second: u64,
    text: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DateCache {
    /// A cache on the system's wall clock.
    pub fn new() -> DateCache {
        DateCache::with_clock(system_clock)
    }

    /// A cache on another clock (tests step it).
    pub(crate) fn with_clock(clock: WallClock) -> DateCache {
        DateCache { clock, next_read_ms: 0, second: u64::MAX, text: [b' '; 29] }
    }

    /// The header value at loop time `now_ms` (the reactor's `now_ms()`).
    pub fn get(&mut self, now_ms: u64) -> &[u8; 29] {
        if now_ms >= self.next_read_ms || self.second == u64::MAX {
            self.read_clock(now_ms);
        }
        &self.text
    }

    fn read_clock(&mut self, now_ms: u64) {
        let unix = (self.clock)();
        let second = unix.as_secs();
        if second != self.second {
            self.second = second;
            self.text = format_imf_fixdate(second);
        }
        // 1..=1000 ms: the text holds until the wall clock's next second.
        let to_next_second = 1000 - u64::from(unix.subsec_millis());
        self.next_read_ms = now_ms.saturating_add(to_next_second);
    }
}

/// Formats a Unix time (seconds) as IMF-fixdate.
pub(crate) fn format_imf_fixdate(unix_secs: u64) -> [u8; 29] {
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
    use std::cell::Cell;

    thread_local! {
        /// The fake wall clock (ms since the epoch) and how often it was read.
        static WALL_MS: Cell<u64> = const { Cell::new(0) };
        static READS: Cell<u32> = const { Cell::new(0) };
    }

    fn fake_clock() -> Duration {
        READS.with(|r| r.set(r.get() + 1));
        Duration::from_millis(WALL_MS.with(Cell::get))
    }

    fn set_wall(ms: u64) {
        WALL_MS.with(|w| w.set(ms));
    }

    fn reads() -> u32 {
        READS.with(Cell::get)
    }

    #[test]
    fn follows_the_wall_clock_reading_it_once_a_second() {
        set_wall(1_795_000_000_500);
        let mut d = DateCache::with_clock(fake_clock);
        assert_eq!(d.get(0), b"Wed, 18 Nov 2026 11:06:40 GMT");
        assert_eq!(reads(), 1);
        // Within the wall clock's second: no clock read.
        for now in [1, 100, 499] {
            assert_eq!(d.get(now), b"Wed, 18 Nov 2026 11:06:40 GMT");
        }
        assert_eq!(reads(), 1);
        // Its next second, 500 ms of loop time later.
        set_wall(1_795_000_001_000);
        assert_eq!(d.get(500), b"Wed, 18 Nov 2026 11:06:41 GMT");
        assert_eq!(reads(), 2);
        // The wall clock is stepped an hour ahead (then back): Date follows within a second
        // of loop time, without a restart.
        set_wall(1_795_003_601_100);
        assert_eq!(d.get(600), b"Wed, 18 Nov 2026 11:06:41 GMT");
        assert_eq!(d.get(1500), b"Wed, 18 Nov 2026 12:06:41 GMT");
        set_wall(1_795_000_002_000);
        assert_eq!(d.get(2400), b"Wed, 18 Nov 2026 11:06:42 GMT");
        // Ten seconds of requests every millisecond, the clock in step with the loop: one read
        // per second.
        let before = reads();
        for now in 2401..12_401u64 {
            set_wall(1_795_000_002_000 + now - 2400);
            d.get(now);
        }
        assert_eq!(reads() - before, 10);
        assert_eq!(d.get(12_400), b"Wed, 18 Nov 2026 11:06:52 GMT");
    }

    #[test]
    fn known_dates() {
        assert_eq!(&format_imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_imf_fixdate(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_imf_fixdate(1_795_000_000), b"Wed, 18 Nov 2026 11:06:40 GMT");
    }
}
