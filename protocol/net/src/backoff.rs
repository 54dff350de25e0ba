//! Retry delays that double after every failure up to a cap, and start over after a success.
//! Pure: it computes delays, never sleeps.

use std::time::Duration;

/// A doubling retry delay between `min` and `max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff whose first delay is `min` and that never exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The delay before the next retry, without moving.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The delay before the next retry; the one after it is twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(self.max);
        wait
    }

    /// Starts over at the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(350), ms(350), ms(350)]);
        b.reset();
        assert_eq!(b.current(), ms(100));
        assert_eq!(Backoff::new(ms(10), ms(1)).next_delay(), ms(10));
    }
}
