//! What the peer says of itself in every probe on every link (a drill in progress, its answer
//! pins), and which of it holds now.
//!
//! The peer sends the same notice on all its links, but the links have different latencies: a
//! probe sent on the slow link just before the peer changed its mind can arrive after one sent
//! on the fast link just after. Taking the latest arrival would bring an ended notice back
//! until the slow link's next probe, and a DNS record written from it would flap. So each link
//! keeps the latest value it carried and when that value last changed, and the notice is the
//! value of the link whose value changed last: a late probe repeats what its link already said
//! and changes nothing. Only links heard from within the freshness time count; when none is,
//! there is no notice (the default value): a peer that cannot be heard can neither renew nor
//! end what it says, and is taken to say nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One link's latest value, when it last arrived and when it last changed.
#[derive(Debug, Clone)]
struct Heard<T> {
    value: T,
    heard: Instant,
    changed: Instant,
}

/// One kind of notice (`T::default()`: none), per link.
#[derive(Debug, Clone)]
pub(crate) struct Notices<T> {
    links: BTreeMap<String, Heard<T>>,
}

impl<T> Default for Notices<T> {
    fn default() -> Self {
        Notices {
            links: BTreeMap::new(),
        }
    }
}

impl<T: Clone + Default + PartialEq> Notices<T> {
    /// An accepted probe on `link` at `at` says `value`.
    pub fn handle(&mut self, link: &str, value: T, at: Instant) {
        match self.links.get_mut(link) {
            Some(h) => {
                if h.value != value {
                    h.value = value;
                    h.changed = at;
                }
                h.heard = h.heard.max(at);
            }
            None => {
                self.links.insert(
                    link.to_owned(),
                    Heard {
                        value,
                        heard: at,
                        changed: at,
                    },
                );
            }
        }
    }

    /// Forget links not heard from within `fresh_for` before `now`.
    pub fn expire(&mut self, now: Instant, fresh_for: Duration) {
        self.links
            .retain(|_, h| now.saturating_duration_since(h.heard) < fresh_for);
    }

    /// Forget what `link` said (a new peer on it).
    pub fn forget(&mut self, link: &str) {
        self.links.remove(link);
    }

    /// Keep only the links `keep` says yes to.
    pub fn retain_links(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.links.retain(|l, _| keep(l));
    }

    /// What holds now, among the links left by the last [`Notices::expire`]: the value of the
    /// link whose value changed last (the default when no link is left).
    pub fn current(&self) -> T {
        self.links
            .values()
            .max_by_key(|h| h.changed)
            .map(|h| h.value.clone())
            .unwrap_or_default()
    }

    /// When the earliest link expires, while some link says something: the notice may then
    /// change or end. `None` while every link says nothing (expiry changes nothing then).
    pub fn deadline(&self, fresh_for: Duration) -> Option<Instant> {
        let default = T::default();
        if self.links.values().all(|h| h.value == default) {
            return None;
        }
        self.links.values().map(|h| h.heard + fresh_for).min()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real instant as the simulated clock's origin
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const FRESH: Duration = Duration::from_millis(650);

    #[test]
    fn a_late_probe_on_the_slow_link_does_not_bring_an_ended_notice_back() {
        let t0 = Instant::now();
        let mut n: Notices<Option<&str>> = Notices::default();
        n.handle("ic", Some("g"), t0);
        n.handle("inet", Some("g"), t0 + ms(5));
        assert_eq!(n.current(), Some("g"));
        // Ended: the fast link says so first, then the slow one delivers an older probe.
        n.handle("inet", None, t0 + ms(100));
        assert_eq!(n.current(), None);
        n.handle("ic", Some("g"), t0 + ms(130));
        assert_eq!(n.current(), None, "the late probe changed nothing");
        n.handle("ic", None, t0 + ms(200));
        assert_eq!(n.current(), None);
        // Started again: the first link to carry it decides.
        n.handle("ic", Some("h"), t0 + ms(300));
        assert_eq!(n.current(), Some("h"));
    }

    #[test]
    fn links_not_heard_from_expire_and_with_all_of_them_the_notice() {
        let t0 = Instant::now();
        let mut n: Notices<Option<&str>> = Notices::default();
        assert_eq!(n.deadline(FRESH), None);
        n.handle("ic", None, t0);
        assert_eq!(n.deadline(FRESH), None, "nothing said: nothing to expire");
        n.handle("inet", Some("g"), t0 + ms(10));
        assert_eq!(n.deadline(FRESH), Some(t0 + FRESH), "ic expires first");
        n.expire(t0 + FRESH, FRESH);
        assert_eq!(n.current(), Some("g"));
        assert_eq!(n.deadline(FRESH), Some(t0 + ms(10) + FRESH));
        n.expire(t0 + ms(10) + FRESH - ms(1), FRESH);
        assert_eq!(n.current(), Some("g"), "still fresh");
        n.expire(t0 + ms(10) + FRESH, FRESH);
        assert_eq!(n.current(), None);
        assert_eq!(n.deadline(FRESH), None);
    }
}
