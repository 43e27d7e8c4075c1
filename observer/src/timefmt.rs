//! Turning the kernel's monotonic timestamps into wall-clock time for output.
//!
//! The programs stamp records with `bpf_ktime_get_ns` (CLOCK_MONOTONIC), which is cheap and
//! never jumps; the offset to CLOCK_REALTIME is taken at start and again at every tick of the
//! collector ([`Clock::follow`]), so that event times follow a step of the wall clock
//! (`date -s`, an NTP step) from the next tick on.

/// Converts CLOCK_MONOTONIC nanoseconds to UTC wall-clock text.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC at start, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    /// Reads both clocks now.
    pub fn now() -> Clock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// Takes the offset again when the wall clock stepped by more than a millisecond since
    /// this clock was read (a slew of a few microseconds between ticks is not followed, so
    /// event times do not jitter). True when it changed.
    pub fn follow(&mut self) -> bool {
        let now = Clock::now();
        if (now.offset_ns - self.offset_ns).abs() > 1_000_000 {
            *self = now;
            return true;
        }
        false
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// Unix time in nanoseconds of a monotonic timestamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.offset_ns
    }

    /// Formats a `CLOCK_MONOTONIC` time (as the kernel programs stamp records) as RFC 3339 UTC
    /// with microseconds, into `out` (replacing its text, reusing its allocation).
    pub fn format_monotonic_into(&self, monotonic_ns: u64, out: &mut String) {
        out.clear();
        push_rfc3339(self.unix_ns(monotonic_ns), out);
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the same clock as `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// CLOCK_MONOTONIC_COARSE now, in nanoseconds: the time of the last tick (a few milliseconds
/// old at most), read without the clock source, so much cheaper than `monotonic_ns`.
pub fn monotonic_coarse_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC_COARSE)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// RFC 3339 UTC text with microseconds for Unix nanoseconds, e.g.
/// `2026-11-21T16:23:51.123456Z`.
pub fn format_unix_ns(unix_ns: i128) -> String {
    let mut out = String::with_capacity(27);
    push_rfc3339(unix_ns, &mut out);
    out
}

/// Appends the RFC 3339 text of `unix_ns` to `out`.
fn push_rfc3339(unix_ns: i128, out: &mut String) {
    let text = rfc3339(unix_ns);
    // SAFETY: every byte of `text` is an ASCII digit or separator, so the string stays UTF-8.
    // (Checking that again was a few percent of the collector's time per event.)
    unsafe { out.as_mut_vec() }.extend_from_slice(&text);
}

/// The 27 bytes of the RFC 3339 text, written digit by digit into a fixed buffer (once per
/// event at full rate: no `fmt` machinery, no allocation).
fn rfc3339(unix_ns: i128) -> [u8; 27] {
    // Years outside 0..=9999 cannot be written in RFC 3339's four digits.
    let unix_ns = unix_ns.clamp(-62_167_219_200_000_000_000, 253_402_300_799_999_999_999);
    // Every time until 2262 fits a u64, whose division is far cheaper than an i128's.
    let (secs, micros) = match u64::try_from(unix_ns) {
        Ok(ns) => (
            (ns / 1_000_000_000) as i64,
            (ns % 1_000_000_000 / 1_000) as u32,
        ),
        Err(_) => (
            unix_ns.div_euclid(1_000_000_000) as i64,
            (unix_ns.rem_euclid(1_000_000_000) / 1_000) as u32,
        ),
    };
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    // Events come in bursts within the same second: the date and time of day are worked out
    // once per second.
    thread_local! {
        static LAST: std::cell::Cell<Option<(i64, [u8; 19])>> = const { std::cell::Cell::new(None) };
    }
    match LAST.get() {
        Some((cached, text)) if cached == secs => b[..19].copy_from_slice(&text),
        _ => {
            let days = secs.div_euclid(86_400);
            let sod = secs.rem_euclid(86_400) as u32;
            let (y, m, d) = civil_from_days(days);
            let mut put = |at: usize, width: usize, v: u32| digits(&mut b[at..at + width], v);
            put(0, 4, y as u32);
            put(5, 2, m);
            put(8, 2, d);
            put(11, 2, sod / 3600);
            put(14, 2, sod % 3600 / 60);
            put(17, 2, sod % 60);
            let mut text = [0u8; 19];
            text.copy_from_slice(&b[..19]);
            LAST.set(Some((secs, text)));
        }
    }
    digits(&mut b[20..26], micros);
    b
}

/// Writes `v` in decimal into all of `out`, zero-padded (high digits cut).
fn digits(out: &mut [u8], mut v: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_clock_follows_a_step_of_the_wall_clock_but_not_jitter() {
        // An offset an hour off is what a clock read before `date -s '+1 hour'` holds.
        let mut clock = Clock::now();
        let right = clock;
        clock.offset_ns -= 3_600 * 1_000_000_000;
        assert!(clock.follow());
        assert!((clock.offset_ns - right.offset_ns).abs() < 1_000_000);
        let before = clock.offset_ns;
        assert!(!clock.follow());
        assert_eq!(clock.offset_ns, before);
    }
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_unix_ns(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day in a century year divisible by 400).
        assert_eq!(
            format_unix_ns(951_782_400_000_000_000 + 1_234_567),
            "2000-02-29T00:00:00.001234Z"
        );
        assert_eq!(
            format_unix_ns(1_795_278_231_999_999_999),
            "2026-11-21T16:23:51.999999Z"
        );
        assert_eq!(format_unix_ns(-1_000), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_unix_ns(253_402_300_799_999_999_000),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(format_unix_ns(i128::MAX), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn clock_offsets_monotonic_time() {
        let clock = Clock::with_offset(1_000_000_000);
        assert_eq!(clock.unix_ns(5), 1_000_000_005);
        let mut text = String::from("previous text, longer than a time");
        clock.format_monotonic_into(0, &mut text);
        assert_eq!(text, "1970-01-01T00:00:01.000000Z");
    }
}
