//! Which TCP stream both sides of a punch take: a socket-free state machine, fed the streams
//! that come up, the authenticated frames that arrive on them and failures, with the time.
//!
//! Role 1 sends a hello on every stream as soon as it is up, and takes the first stream on
//! which a valid choose arrives. Role 0 sends choose on one stream and takes it once a valid
//! hello arrives on it: the first stream up (a stream with a hello already, if there is one),
//! preferring, for [`LOCAL_HEAD_START`], streams to the peer's local addresses, so that peers on
//! one network connect directly rather than through their router. If the chosen stream fails,
//! or stays silent for [`SWITCH_AFTER`] while another has shown a hello, role 0 chooses again.
//! Role 0 also prefers IPv6: when the peer has IPv6 targets
//! ([`StreamChooser::prefer_ipv6`]), it takes an IPv6 stream when there is one, and waits up to
//! [`IPV6_GRACE`](crate::puncher::IPV6_GRACE) after the first IPv4 stream came up for one.
//! Both frames are bound to their stream ([`crate::wire`]: each names the address its sender
//! sees at the far end), so a party that connects to both peers cannot relay them.
//!
//! A stream through a TURN relay ([`StreamChooser::stream_up_relayed`]) is taken only when
//! no direct one can be: role 0 chooses it only once the peer's hello arrived on it and no
//! direct stream is up [`RELAY_GRACE`] later (the policy of natt's UDP fallback).
//!
//! Every stream reaches this chooser only from an address of the peer's token's IPs
//! ([`crate::path`]), and a stream on which the peer's frame has not arrived within
//! [`HANDSHAKE_TIMEOUT`] is closed by its driver.

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::Kind;

/// How long, from the start, role 0 chooses only a stream with one of the peer's local
/// addresses (when the peer has any).
pub const LOCAL_HEAD_START: Duration = Duration::from_millis(20);

/// How long role 0 waits for the peer's hello on the stream it chose before it chooses another
/// stream that has shown one. The peer sends its hello as soon as a stream is up, so this only
/// matters when the chosen stream leads somewhere else (a host sharing the peer's IP address
/// that connected to our punch port and stays silent). It is long enough for TCP to retransmit
/// a lost hello twice (its first retransmission timeout is 1 s when it has no round-trip
/// sample, as after a simultaneous open): switching while the peer's hello is merely late would
/// leave the peer on the first stream (it takes the first choose it reads) and us on the other.
pub const SWITCH_AFTER: Duration = Duration::from_secs(3);

/// A stream on which the peer's frame has not arrived this long after it came up is closed
/// (role 1 gets choose only on the one stream role 0 takes, so its other streams end so).
/// Role 0 chooses a stream at most `CHOOSE_BEFORE` (4 s) after it came up, and role 1 must
/// still be reading it when the choose arrives: the 6 s between them cover the choose and two
/// retransmissions of it (TCP's first retransmission timeout is 1 s without a round-trip
/// sample, as after a simultaneous open, then 2 s). With 5 s, a choose lost twice under 10 %
/// loss arrived after role 1 had closed its stream, and only role 0 connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long role 0 waits, after the peer's hello arrived on a relayed stream, for a direct
/// stream before it chooses the relayed one. natt's UDP fallback waits as long
/// (`DIRECT_PATIENCE`) when its direct path is half open; a TCP punch cannot see that (a SYN
/// that crossed shows nothing until the stream is up, and a lost one is retransmitted only
/// after a second), so a relayed stream always waits this long.
pub const RELAY_GRACE: Duration = Duration::from_millis(300);

/// Role 0 chooses no stream older than this: role 1 may be closing it.
const CHOOSE_BEFORE: Duration = Duration::from_secs(4);

/// What the driver is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Role 0: write choose on this stream.
    SendChoose(u64),
    /// The punch is done on this stream.
    Done(u64),
}

#[derive(Debug)]
struct Stream {
    remote: SocketAddr,
    up_at: Instant,
    /// The peer's frame (hello for role 0, choose for role 1) arrived on it.
    frame: bool,
    /// When the peer's frame arrived.
    frame_at: Option<Instant>,
    /// The stream goes through a TURN relay.
    relayed: bool,
}

/// The stream choice of one side.
#[derive(Debug)]
pub struct StreamChooser {
    role: u8,
    locals: Vec<SocketAddr>,
    head_start_until: Instant,
    streams: BTreeMap<u64, Stream>,
    chosen: Option<(u64, Instant)>,
    done: Option<u64>,
    last_failure: Option<String>,
    /// The peer has IPv6 targets: prefer an IPv6 stream.
    prefer_ipv6: bool,
}

impl StreamChooser {
    /// The chooser of a side of `role`, starting `now`; `peer_locals` are the peer's
    /// local-interface endpoints.
    pub fn new(role: u8, peer_locals: &[SocketAddr], now: Instant) -> Self {
        StreamChooser {
            role,
            locals: peer_locals.to_vec(),
            head_start_until: now + LOCAL_HEAD_START,
            streams: BTreeMap::new(),
            chosen: None,
            done: None,
            last_failure: None,
            prefer_ipv6: false,
        }
    }

    /// Prefers IPv6 streams when `peer_has_ipv6` (some of the peer's targets are IPv6): role 0
    /// takes an IPv6 stream if one is up, and waits up to
    /// [`IPV6_GRACE`](crate::puncher::IPV6_GRACE) after the first IPv4 stream for one.
    pub fn prefer_ipv6(mut self, peer_has_ipv6: bool) -> Self {
        self.prefer_ipv6 = peer_has_ipv6;
        self
    }

    /// Until when role 0 waits for an IPv6 stream: [`IPV6_GRACE`](crate::puncher::IPV6_GRACE)
    /// after the first IPv4 stream came up, while no IPv6 stream is up.
    fn ipv6_wait_until(&self) -> Option<Instant> {
        if !self.prefer_ipv6 || self.streams.values().any(|s| s.remote.is_ipv6()) {
            return None;
        }
        let first_v4 = self.streams.values().map(|s| s.up_at).min()?;
        Some(first_v4 + crate::puncher::IPV6_GRACE)
    }

    /// Stream `id` to `remote` came up.
    pub fn stream_up(&mut self, id: u64, remote: SocketAddr, now: Instant) {
        self.up(id, remote, now, false);
    }

    /// Stream `id` through a TURN relay came up (`remote`: the peer's relayed address, or the
    /// peer as our relay sees it): a fallback, see the module documentation.
    pub fn stream_up_relayed(&mut self, id: u64, remote: SocketAddr, now: Instant) {
        self.up(id, remote, now, true);
    }

    fn up(&mut self, id: u64, remote: SocketAddr, now: Instant, relayed: bool) {
        self.streams.insert(
            id,
            Stream {
                remote,
                up_at: now,
                frame: false,
                frame_at: None,
                relayed,
            },
        );
    }

    /// An authenticated frame of `kind`, bound to this stream, arrived on stream `id` (taken
    /// as arrived when the stream came up; [`frame_at`](Self::frame_at) says when).
    pub fn frame(&mut self, id: u64, kind: Kind) {
        let at = self.streams.get(&id).map(|s| s.up_at);
        if let Some(at) = at {
            self.frame_at(id, kind, at);
        }
    }

    /// An authenticated frame of `kind`, bound to this stream, arrived on stream `id` at `now`.
    pub fn frame_at(&mut self, id: u64, kind: Kind, now: Instant) {
        let expected = if self.role == 0 { Kind::Hello } else { Kind::Choose };
        if kind != expected {
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.frame = true;
            s.frame_at.get_or_insert(now);
        }
    }

    /// Whether stream `id` goes through a relay.
    pub fn is_relayed(&self, id: u64) -> bool {
        self.streams.get(&id).is_some_and(|s| s.relayed)
    }

    /// When the earliest relayed stream with the peer's hello becomes a candidate.
    fn relay_ready_at(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter(|s| s.relayed)
            .filter_map(|s| s.frame_at)
            .min()
            .map(|at| at + RELAY_GRACE)
    }

    /// Stream `id` failed (closed, reset, timed out, or something other than the peer's frame
    /// arrived), for reason `why`.
    pub fn failed(&mut self, id: u64, why: String) {
        if let Some(s) = self.streams.remove(&id) {
            self.last_failure = Some(format!("{}: {why}", s.remote));
        }
        if self.chosen.is_some_and(|(c, _)| c == id) {
            self.chosen = None;
        }
    }

    /// The stream's remote address.
    pub fn remote(&self, id: u64) -> Option<SocketAddr> {
        self.streams.get(&id).map(|s| s.remote)
    }

    /// What made the last stream fail, if one did.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// The number of streams up now.
    pub fn streams_up(&self) -> usize {
        self.streams.len()
    }

    /// Whether the peer's frame has arrived on some stream (the peer is reachable and holds the
    /// session's keys).
    pub fn heard_peer(&self) -> bool {
        self.streams.values().any(|s| s.frame)
    }

    /// The next thing to do at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if let Some(id) = self.done {
            return Some(Action::Done(id));
        }
        if self.role == 1 {
            let id = self.streams.iter().find(|(_, s)| s.frame).map(|(id, _)| *id)?;
            self.done = Some(id);
            return Some(Action::Done(id));
        }
        // Role 0: done once the chosen stream has shown the peer's hello.
        if let Some((c, _)) = self.chosen
            && self.streams.get(&c).is_some_and(|s| s.frame)
        {
            self.done = Some(c);
            return Some(Action::Done(c));
        }
        let silent = self
            .chosen
            .is_some_and(|(_, at)| now.saturating_duration_since(at) >= SWITCH_AFTER);
        if self.chosen.is_some() && !silent {
            return None;
        }
        let head_start = now < self.head_start_until && !self.locals.is_empty();
        let allowed = |(id, s): (&u64, &Stream)| {
            let fresh = now.saturating_duration_since(s.up_at) < CHOOSE_BEFORE;
            let local_ok = !head_start || self.locals.contains(&s.remote);
            let other = self.chosen.is_none_or(|(c, _)| c != *id);
            (fresh && local_ok && other).then_some((*id, s.frame))
        };
        if !silent && self.ipv6_wait_until().is_some_and(|until| now < until) {
            return None;
        }
        // Prefer a stream that has shown a hello (done at once), else the first one up; after a
        // silent choice, only one with a hello. IPv6 streams first when preferred.
        let mut candidates: Vec<(u64, bool)> = self.streams.iter().filter_map(allowed).collect();
        // Direct streams first; a relayed one only with the peer's hello, after the grace.
        if candidates.iter().any(|(id, _)| !self.is_relayed(*id)) {
            candidates.retain(|(id, _)| !self.is_relayed(*id));
        } else {
            candidates.retain(|(id, _)| {
                self.streams
                    .get(id)
                    .and_then(|s| s.frame_at)
                    .is_some_and(|at| now >= at + RELAY_GRACE)
            });
        }
        if self.prefer_ipv6
            && candidates
                .iter()
                .any(|(id, _)| self.remote(*id).is_some_and(|r| r.is_ipv6()))
        {
            candidates.retain(|(id, _)| self.remote(*id).is_some_and(|r| r.is_ipv6()));
        }
        let next = candidates
            .iter()
            .find(|(_, hello)| *hello)
            .or_else(|| if silent { None } else { candidates.first() })
            .map(|(id, _)| *id)?;
        self.chosen = Some((next, now));
        Some(Action::SendChoose(next))
    }

    /// When [`poll`](Self::poll) may next have something to do without new input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.role == 1 || self.done.is_some() {
            return None;
        }
        let wake = match self.chosen {
            Some((_, at)) => Some(at + SWITCH_AFTER),
            None if self.ipv6_wait_until().is_some() => self.ipv6_wait_until(),
            None if !self.locals.is_empty() && !self.streams.is_empty() => Some(self.head_start_until),
            None => None,
        };
        match (wake, self.chosen.is_none().then(|| self.relay_ready_at()).flatten()) {
            (Some(w), Some(r)) => Some(w.min(r)),
            (w, r) => w.or(r),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn role_0_chooses_the_first_stream_and_is_done_on_its_hello() {
        let t0 = Instant::now();
        let mut c = StreamChooser::new(0, &[], t0);
        assert_eq!(c.poll(t0), None);
        c.stream_up(7, addr("203.0.113.2:5"), t0);
        c.stream_up(8, addr("203.0.113.2:6"), t0);
        assert_eq!(c.poll(t0), Some(Action::SendChoose(7)));
        assert_eq!(c.poll(t0), None);
        // A hello on the other stream does not end the punch on it.
        c.frame(8, Kind::Hello);
        assert_eq!(c.poll(t0), None);
        c.frame(7, Kind::Choose); // not role 1's frame: ignored
        assert_eq!(c.poll(t0), None);
        c.frame(7, Kind::Hello);
        assert_eq!(c.poll(t0), Some(Action::Done(7)));
    }

    #[test]
    fn role_0_prefers_ipv6_and_waits_a_grace_for_it() {
        use crate::puncher::IPV6_GRACE;
        let t0 = Instant::now();
        // An IPv6 stream up after the IPv4 one, within the grace, is taken.
        let mut c = StreamChooser::new(0, &[], t0).prefer_ipv6(true);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        c.frame(1, Kind::Hello);
        assert_eq!(c.poll(t0), None);
        assert_eq!(c.poll_timeout(), Some(t0 + IPV6_GRACE));
        let t1 = t0 + IPV6_GRACE / 2;
        c.stream_up(2, addr("[2001:db8:2::2]:6"), t1);
        assert_eq!(c.poll(t1), Some(Action::SendChoose(2)));
        // No IPv6 stream within the grace: the IPv4 one.
        let mut c = StreamChooser::new(0, &[], t0).prefer_ipv6(true);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        assert_eq!(c.poll(t0), None);
        assert_eq!(c.poll(t0 + IPV6_GRACE), Some(Action::SendChoose(1)));
        // A peer without IPv6: no wait.
        let mut c = StreamChooser::new(0, &[], t0).prefer_ipv6(false);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        assert_eq!(c.poll(t0), Some(Action::SendChoose(1)));
    }

    #[test]
    fn role_0_prefers_a_stream_with_a_hello_and_switches_after_silence() {
        let t0 = Instant::now();
        let mut c = StreamChooser::new(0, &[], t0);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        c.stream_up(2, addr("203.0.113.2:6"), t0);
        c.frame(2, Kind::Hello);
        assert_eq!(c.poll(t0), Some(Action::SendChoose(2)));
        assert_eq!(c.poll(t0), Some(Action::Done(2)));

        let mut c = StreamChooser::new(0, &[], t0);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        assert_eq!(c.poll(t0), Some(Action::SendChoose(1)));
        let t1 = t0 + Duration::from_millis(500);
        c.stream_up(2, addr("203.0.113.2:6"), t1);
        c.frame(2, Kind::Hello);
        // Stream 1 may only be late: no switch before SWITCH_AFTER.
        assert_eq!(c.poll(t1), None);
        assert_eq!(c.poll_timeout(), Some(t0 + SWITCH_AFTER));
        assert_eq!(c.poll(t0 + SWITCH_AFTER), Some(Action::SendChoose(2)));
        assert_eq!(c.poll(t0 + SWITCH_AFTER), Some(Action::Done(2)));
    }

    #[test]
    fn a_failed_choice_is_replaced_and_old_streams_are_not_chosen() {
        let t0 = Instant::now();
        let mut c = StreamChooser::new(0, &[], t0);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        c.stream_up(2, addr("203.0.113.2:6"), t0);
        assert_eq!(c.poll(t0), Some(Action::SendChoose(1)));
        c.failed(1, "reset".into());
        assert_eq!(c.last_failure(), Some("203.0.113.2:5: reset"));
        // Stream 2 is too old by now: the peer may be closing it.
        let late = t0 + CHOOSE_BEFORE;
        assert_eq!(c.poll(late), None);
        c.stream_up(3, addr("203.0.113.2:7"), late);
        assert_eq!(c.poll(late), Some(Action::SendChoose(3)));
    }

    #[test]
    fn local_streams_get_a_head_start() {
        let t0 = Instant::now();
        let lan = addr("192.168.1.3:5");
        let mut c = StreamChooser::new(0, &[lan], t0);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        assert_eq!(c.poll(t0), None);
        assert_eq!(c.poll_timeout(), Some(t0 + LOCAL_HEAD_START));
        c.stream_up(2, lan, t0);
        assert_eq!(c.poll(t0), Some(Action::SendChoose(2)));
        let mut c = StreamChooser::new(0, &[lan], t0);
        c.stream_up(1, addr("203.0.113.2:5"), t0);
        assert_eq!(c.poll(t0 + LOCAL_HEAD_START), Some(Action::SendChoose(1)));
    }

    #[test]
    fn role_0_takes_a_relayed_stream_only_after_its_hello_and_the_grace() {
        let t0 = Instant::now();
        let relayed = addr("203.0.113.30:50000");
        let mut c = StreamChooser::new(0, &[], t0);
        c.stream_up_relayed(1, relayed, t0);
        assert!(c.is_relayed(1));
        // Up, but without the peer's hello: not chosen.
        assert_eq!(c.poll(t0 + SWITCH_AFTER / 2), None);
        let t1 = t0 + Duration::from_millis(100);
        c.frame_at(1, Kind::Hello, t1);
        assert_eq!(c.poll(t1), None);
        assert_eq!(c.poll_timeout(), Some(t1 + RELAY_GRACE));
        assert_eq!(c.poll(t1 + RELAY_GRACE), Some(Action::SendChoose(1)));
        assert_eq!(c.poll(t1 + RELAY_GRACE), Some(Action::Done(1)));

        // A direct stream up within the grace wins, even without a hello yet.
        let mut c = StreamChooser::new(0, &[], t0);
        c.stream_up_relayed(1, relayed, t0);
        c.frame_at(1, Kind::Hello, t1);
        c.stream_up(2, addr("203.0.113.2:5"), t1 + RELAY_GRACE / 2);
        assert!(!c.is_relayed(2));
        assert_eq!(c.poll(t1 + RELAY_GRACE), Some(Action::SendChoose(2)));
        c.frame_at(2, Kind::Hello, t1 + RELAY_GRACE);
        assert_eq!(c.poll(t1 + RELAY_GRACE), Some(Action::Done(2)));
    }

    #[test]
    fn role_1_takes_the_stream_its_choose_arrives_on() {
        let t0 = Instant::now();
        let mut c = StreamChooser::new(1, &[], t0);
        c.stream_up(1, addr("203.0.113.1:5"), t0);
        c.stream_up(2, addr("203.0.113.1:6"), t0);
        c.frame(1, Kind::Hello); // role 0 never sends a hello: ignored
        assert_eq!(c.poll(t0), None);
        c.frame(2, Kind::Choose);
        assert_eq!(c.poll(t0), Some(Action::Done(2)));
        assert_eq!(c.poll_timeout(), None);
    }
}
