//! Link impairment: one-way delay and random loss on a router's WAN link, each direction.
//!
//! This kernel has no `sch_netem`, so each direction is impaired where its packets arrive, in
//! the `raw` table's PREROUTING (before conntrack, so a lost or held packet has touched no NAT
//! state yet, as on a real wire):
//!
//! - internet -> router: in the router, `-i wan`, chain `LINK-rN`, NFQUEUE queue 0;
//! - router -> internet: in the parent (`inet` or `rM`), `-i br0|lan -s WAN`, chain `LINK-rN`,
//!   NFQUEUE queue N.
//!
//! A dual-stack router's IPv6 packets take the same chains and queues in `ip6tables`
//! ([`link_chain6`]; the parent matches the router's IPv6 WAN address and LAN prefix).
//!
//! Loss is the `statistic` match (`-j DROP`). Delay is `-j NFQUEUE` to
//! `xtask lab nfq-delay --queue Q --ms D` ([`run_delay`]), which holds each packet D ms
//! before its ACCEPT verdict; constant delay keeps FIFO order. Its timing granularity is about
//! one millisecond (it polls the queue).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::thread;
use std::time::{Duration, Instant};

use super::topology::RouterPlan;
use super::{Result, err};

/// Which end of a WAN link receives the packets being impaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The router itself: traffic from the internet.
    Router,
    /// The parent node (`inet` or the outer router): traffic from the router.
    Parent,
}

impl Side {
    /// `in` for the router side, `out` for the parent side (daemon names).
    pub fn label(self) -> &'static str {
        match self {
            Side::Router => "in",
            Side::Parent => "out",
        }
    }
}

/// The raw-table chain that impairs router `r`'s link (same name on both ends).
pub fn chain(r: &RouterPlan) -> String {
    format!("LINK-{}", r.name)
}

/// The NFQUEUE number used for `r`'s link at `side`.
pub fn queue_num(r: &RouterPlan, side: Side) -> u16 {
    match side {
        Side::Router => 0,
        Side::Parent => u16::from(r.n),
    }
}

/// `iptables-restore --noflush` input: the (empty) chain of `r`'s link at `side` and the
/// PREROUTING jump that feeds it.
pub fn link_chain(r: &RouterPlan, side: Side) -> String {
    let chain = chain(r);
    let jump = match side {
        Side::Router => format!("-A PREROUTING -i wan -j {chain}"),
        Side::Parent => format!("-A PREROUTING -i {} -s {} -j {chain}", r.parent_bridge(), r.wan),
    };
    format!("*raw\n:{chain} - [0:0]\n{jump}\nCOMMIT\n")
}

/// `ip6tables-restore --noflush` input for a dual-stack router: [`link_chain`] for IPv6 (empty
/// for a router without IPv6). [`link_rules`] serves both families.
pub fn link_chain6(r: &RouterPlan, side: Side) -> String {
    let Some(v6) = &r.v6 else {
        return String::new();
    };
    let chain = chain(r);
    let jumps = match side {
        Side::Router => format!("-A PREROUTING -i wan -j {chain}\n"),
        Side::Parent => format!(
            "-A PREROUTING -i {bridge} -s {wan}/128 -j {chain}\n-A PREROUTING -i {bridge} -s {lan}/64 -j {chain}\n",
            bridge = r.parent_bridge(),
            wan = v6.wan,
            lan = v6.lan_net
        ),
    };
    format!("*raw\n:{chain} - [0:0]\n{jumps}COMMIT\n")
}

/// `iptables-restore --noflush` input that replaces the rules of `r`'s link chain at `side`.
pub fn link_rules(r: &RouterPlan, side: Side, delay_ms: u32, loss_pct: f64) -> String {
    let chain = chain(r);
    let mut s = format!("*raw\n:{chain} - [0:0]\n");
    if loss_pct > 0.0 {
        let _ = writeln!(
            s,
            "-A {chain} -m statistic --mode random --probability {:.6} -j DROP",
            loss_pct / 100.0
        );
    }
    if delay_ms > 0 {
        let _ = writeln!(s, "-A {chain} -j NFQUEUE --queue-num {}", queue_num(r, side));
    }
    s.push_str("COMMIT\n");
    s
}

/// The line [`run_delay`] prints once it is bound to its queue.
pub const READY_LINE: &str = "nfq-delay ready";

/// Holds every packet of NFQUEUE `queue` for `delay`, then accepts it. Runs until killed.
pub fn run_delay(queue: u16, delay: Duration) -> Result<()> {
    let mut q = nfq::Queue::open().map_err(|e| err(format!("cannot open NFQUEUE: {e}")))?;
    q.bind(queue)
        .map_err(|e| err(format!("cannot bind NFQUEUE {queue}: {e}")))?;
    // Metadata only: the verdict needs the packet id, not the payload.
    q.set_copy_range(queue, 0)?;
    q.set_queue_max_len(queue, 8192)?;
    q.set_nonblocking(true);
    println!("{READY_LINE} queue={queue} delay_ms={}", delay.as_millis());
    std::io::stdout().flush()?;
    let poll = Duration::from_millis(1);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut verdict_errors = 0u64;
    loop {
        loop {
            match q.recv() {
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(err(format!("NFQUEUE {queue}: {e}"))),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(nfq::Verdict::Accept);
                if let Err(e) = q.verdict(msg) {
                    verdict_errors += 1;
                    if verdict_errors == 1 {
                        eprintln!("nfq-delay: verdict failed: {e} (further errors not shown)");
                    }
                }
            }
        }
        let wait = held
            .front()
            .map(|(due, _)| due.saturating_duration_since(now))
            .unwrap_or(poll)
            .min(poll);
        thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::Topology;

    fn router(text: &str, name: &str) -> RouterPlan {
        Topology::parse(text)
            .unwrap()
            .plan()
            .unwrap()
            .router(name)
            .unwrap()
            .clone()
    }

    #[test]
    fn chains_sit_where_packets_arrive() {
        let r1 = router("pair", "r1");
        assert_eq!(
            link_chain(&r1, Side::Router),
            "*raw\n:LINK-r1 - [0:0]\n-A PREROUTING -i wan -j LINK-r1\nCOMMIT\n"
        );
        assert!(link_chain(&r1, Side::Parent).contains("-A PREROUTING -i br0 -s 203.0.113.101 -j LINK-r1\n"));
        let r2 = router("double", "r2");
        assert!(link_chain(&r2, Side::Parent).contains("-A PREROUTING -i lan -s 100.64.1.102 -j LINK-r2"));
    }

    #[test]
    fn rules_drop_then_queue() {
        let r3 = router("r1=prc r3=sym", "r3");
        let rules = link_rules(&r3, Side::Parent, 50, 10.0);
        assert!(rules.starts_with("*raw\n:LINK-r3 - [0:0]\n"));
        assert!(rules.contains("-A LINK-r3 -m statistic --mode random --probability 0.100000 -j DROP\n"));
        assert!(rules.contains("-A LINK-r3 -j NFQUEUE --queue-num 3\n"));
        assert!(rules.find("DROP").unwrap() < rules.find("NFQUEUE").unwrap());
        let clear = link_rules(&r3, Side::Router, 0, 0.0);
        assert_eq!(clear, "*raw\n:LINK-r3 - [0:0]\nCOMMIT\n");
        assert!(link_rules(&r3, Side::Router, 5, 0.0).contains("--queue-num 0\n"));
    }
}
