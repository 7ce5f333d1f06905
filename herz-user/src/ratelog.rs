//! Log lines that cannot explode: a per-site budget of lines per second, the rest counted and reported
//! in the next line that gets through (or in a summary line once their second is over). The one home of
//! this mechanism for the hot loop and the shield's event thread; time is passed in (monotonic ns).

/// A budget of `per_sec` lines per second for one call site.
#[derive(Debug)]
pub struct RateLimitedLog {
    per_sec: u32,
    window_start_ns: u64,
    used: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    /// A budget of `per_sec` lines per second.
    pub const fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window_start_ns: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now; when it may, also how many were suppressed since the last one.
    pub fn allow(&mut self, now_ns: u64) -> Option<u64> {
        self.roll(now_ns);
        if self.used < self.per_sec {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Suppressed lines not yet reported, once their second is over (for a summary line).
    pub fn overdue(&mut self, now_ns: u64) -> Option<u64> {
        if self.suppressed > 0 && now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.roll(now_ns);
            self.used = 1;
            return Some(std::mem::take(&mut self.suppressed));
        }
        None
    }

    fn roll(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now_ns;
            self.used = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_second_and_suppressed_count() {
        let mut l = RateLimitedLog::new(3);
        let t = 5_000_000_000;
        let allowed = (0..1000).filter(|i| l.allow(t + i).is_some()).count();
        assert_eq!(allowed, 3);
        assert_eq!(l.allow(t + 1_000_000_000), Some(997));
    }

    #[test]
    fn suppressed_lines_are_reported_once_their_second_is_over() {
        let t = 5_000_000_000;
        let mut b = RateLimitedLog::new(3);
        let allowed = (0..100).filter(|_| b.allow(t).is_some()).count();
        assert_eq!(allowed, 3);
        assert_eq!(b.overdue(t), None, "not before the second is over");
        assert_eq!(b.overdue(t + 1_100_000_000), Some(97));
        assert_eq!(b.allow(t + 1_200_000_000), Some(0));
    }
}
