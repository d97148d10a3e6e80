//! Instants read from the processes' own logs (tracing's default format: an RFC 3339 UTC
//! timestamp first), on one clock with `now`: seconds since UTC midnight, so that a
//! benchmark can split an interval by what the processes logged in between.

use std::time::{SystemTime, UNIX_EPOCH};

const DAY: f64 = 86_400.0;

/// One log line: when it was written and its text (colour codes removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Seconds since UTC midnight.
    pub at: f64,
    /// The line after its timestamp.
    pub text: String,
}

/// Now, in seconds since UTC midnight.
pub fn now() -> f64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0.0, |d| d.as_secs_f64() % DAY)
}

/// Seconds since UTC midnight of a timestamp such as `2026-12-03T10:40:00.123456Z`.
pub fn seconds_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.splitn(3, ':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// Every line of `log` that starts with a timestamp.
pub fn lines(log: &str) -> Vec<Logged> {
    log.lines()
        .filter_map(|line| {
            let line = strip_colours(line);
            let (stamp, text) = line.trim_start().split_once(char::is_whitespace)?;
            let at = seconds_of_day(stamp)?;
            Some(Logged {
                at,
                text: text.trim_start().to_owned(),
            })
        })
        .collect()
}

/// When the first line at or after `after` containing `needle` was written.
pub fn first_after(lines: &[Logged], after: f64, needle: &str) -> Option<f64> {
    nth_after(lines, after, needle, 1)
}

/// When the `n`th (from 1) line at or after `after` containing `needle` was written.
pub fn nth_after(lines: &[Logged], after: f64, needle: &str, n: usize) -> Option<f64> {
    let found = lines
        .iter()
        // On the clock of the day: `between` carries an interval across midnight.
        .filter(|l| between(after, l.at) >= 0.0 && l.text.contains(needle));
    found.map(|l| l.at).nth(n.checked_sub(1)?)
}

/// `later - earlier` in seconds, across one midnight.
pub fn between(earlier: f64, later: f64) -> f64 {
    let d = later - earlier;
    if d < -DAY / 2.0 { d + DAY } else { d }
}

/// `line` without ANSI colour sequences (ESC `[` ... `m`).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\u{1b}[2m2026-12-03T10:40:00.250000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
        inferpool_operator::local_scale: autoscale gw: 0 -> 1 agents\n\
        not a log line\n\
        2026-12-03T10:40:01.000000Z  INFO inferpool_agent::server::run: listening http=x\n\
        2026-12-03T10:40:03.500000Z  INFO inferpool_agent::server::run: ready model=m\n\
        2026-12-03T10:40:04.000000Z  INFO inferpool_agent::server::run: ready model=m\n";

    #[test]
    fn log_lines_are_read_on_the_clock_of_the_day() {
        let lines = lines(LOG);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0].at, 10.0 * 3600.0 + 40.0 * 60.0 + 0.25);
        assert!(
            lines[0].text.starts_with("INFO inferpool_operator"),
            "{lines:?}"
        );
        let start = lines[0].at;
        assert_eq!(first_after(&lines, start, "listening"), Some(start + 0.75));
        assert_eq!(nth_after(&lines, start, ": ready", 2), Some(start + 3.75));
        assert_eq!(nth_after(&lines, start + 3.6, ": ready", 2), None);
        assert_eq!(first_after(&lines, start + 0.1, "autoscale"), None);
    }

    #[test]
    fn intervals_cross_midnight() {
        assert_eq!(between(DAY - 1.0, 1.5), 2.5);
        assert_eq!(between(10.0, 12.0), 2.0);
        assert_eq!(seconds_of_day("2026-12-03T00:00:01.5Z"), Some(1.5));
        assert_eq!(seconds_of_day("garbage"), None);
    }
}
