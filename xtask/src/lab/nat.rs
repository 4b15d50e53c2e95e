//! A router's NAT behaviour, home-router firewall and hairpinning, as rule text.
//!
//! The rules are generated as `iptables-restore` / `nft -f` input (pure functions, unit-tested)
//! and loaded in one command each. The NAT and firewall use the nft-backed `iptables`;
//! miniupnpd's chains use `iptables-legacy` (see [`super::daemons`]). Both coexist.
//!
//! - `prc`: `MASQUERADE`: endpoint-independent mapping that keeps the port when it can,
//!   address-and-port-dependent filtering (conntrack lets in replies to known flows only).
//! - `sym`: `MASQUERADE --random-fully`: a new random port per destination (symmetric).
//! - `full`: `SNAT` to the WAN address and `DNAT` of all inbound UDP/TCP to one inside
//!   address (1:1, endpoint-independent filtering).
//! - firewall: new inbound traffic from the WAN is dropped unless a DNAT (port mapping, full
//!   cone) lets it in. Without it, a peer's early hole-punching packet reaches the router
//!   itself and leaves a conntrack entry; the host's own outgoing packet then clashes with it
//!   and MASQUERADE picks another port, so punching fails for the wrong reason.
//! - hairpin: an nft dynamic map "external port -> internal ip.port", learned from conntrack
//!   after SNAT; LAN packets to the WAN address are DNATed through it and SNATed to the WAN
//!   address (RFC 4787 REQ-9).
//! - IPv6 (`v6`): no NAT; a home router's stateful firewall (RFC 6092) in legacy `ip6tables`
//!   (`ip6tables-legacy-restore`), so that miniupnpd's IPv6 pinholes (ACCEPT rules in a legacy
//!   `MINIUPNPD` chain) are not overruled by a DROP in the nft-backed table: ICMPv6 in (neighbour
//!   discovery), replies to known flows in, nothing new in from the WAN.

use std::fmt::Write as _;

use super::Result;
use super::netns;
use super::topology::{NatKind, RouterPlan, STUN1, STUN2};

/// `iptables-restore --noflush` input: the router's NAT and, unless `nofw`, its firewall.
pub fn router_rules(r: &RouterPlan) -> String {
    let mut nat = String::from("*nat\n");
    match r.kind {
        NatKind::Prc => nat.push_str("-A POSTROUTING -o wan -j MASQUERADE\n"),
        NatKind::Sym => nat.push_str("-A POSTROUTING -o wan -j MASQUERADE --random-fully\n"),
        NatKind::Full => {
            let _ = writeln!(nat, "-A POSTROUTING -o wan -j SNAT --to-source {}", r.wan);
            if let Some(target) = r.full_target {
                for proto in ["udp", "tcp"] {
                    let _ = writeln!(nat, "-A PREROUTING -i wan -p {proto} -j DNAT --to-destination {target}");
                }
            }
        }
    }
    nat.push_str("COMMIT\n");
    if r.firewall {
        nat.push_str("*filter\n");
        nat.push_str("-A INPUT -i wan -p icmp --icmp-type echo-request -j ACCEPT\n");
        if r.upnp {
            // miniupnpd's RFC 5780 self-test gets answers from coturn's other address/port.
            for stun in [STUN1, STUN2] {
                let _ = writeln!(nat, "-A INPUT -i wan -p udp -s {stun} -j ACCEPT");
            }
        }
        nat.push_str("-A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP\n");
        nat.push_str("-A FORWARD -i wan -m conntrack --ctstate NEW -m conntrack ! --ctstate DNAT -j DROP\n");
        nat.push_str("COMMIT\n");
    }
    nat
}

/// `ip6tables-legacy-restore --noflush` input: the IPv6 firewall of a dual-stack router (none
/// without `v6`, or with `nofw`). A `upnp` router jumps to miniupnpd's `MINIUPNPD` chain (its
/// pinholes) before the drop.
pub fn router_rules6(r: &RouterPlan) -> String {
    if r.v6.is_none() || !r.firewall {
        return String::new();
    }
    let mut f = String::from("*filter\n");
    if r.upnp {
        f.push_str(":MINIUPNPD - [0:0]\n");
    }
    f.push_str("-A INPUT -i wan -p ipv6-icmp -j ACCEPT\n");
    f.push_str("-A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP\n");
    f.push_str("-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    f.push_str("-A FORWARD -i wan -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT\n");
    if r.upnp {
        f.push_str("-A FORWARD -i wan ! -o wan -j MINIUPNPD\n");
    }
    f.push_str("-A FORWARD -i wan -j DROP\n");
    f.push_str("COMMIT\n");
    f
}

/// `nft -f` input that makes an endpoint-independent router hairpin.
pub fn hairpin_nft(r: &RouterPlan) -> String {
    let wan = r.wan;
    let lan = r.lan_net;
    format!(
        r#"table ip natt_lab_hairpin {{
  map udp_eim {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 180s; }}
  map tcp_eim {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 7440s; }}
  chain learn {{
    type filter hook postrouting priority 200; policy accept;
    oifname "wan" ct direction original meta l4proto udp update @udp_eim {{ ct reply proto-dst : ct original ip saddr . ct original proto-src }}
    oifname "wan" ct direction original meta l4proto tcp update @tcp_eim {{ ct reply proto-dst : ct original ip saddr . ct original proto-src }}
  }}
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "lan" ip daddr {wan} meta l4proto udp dnat ip to udp dport map @udp_eim
    iifname "lan" ip daddr {wan} meta l4proto tcp dnat ip to tcp dport map @tcp_eim
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "lan" ct status dnat ip saddr {lan}/24 snat ip to {wan}
  }}
}}
"#
    )
}

/// Loads the NAT, firewall and hairpin rules into router `r`'s namespace `ns`.
pub fn apply(ns: &str, r: &RouterPlan) -> Result<()> {
    netns::run_with_input(
        netns::exec_in(ns, "iptables-restore").arg("--noflush"),
        Some(&router_rules(r)),
    )?;
    if r.hairpin {
        netns::run_with_input(netns::exec_in(ns, "nft").args(["-f", "-"]), Some(&hairpin_nft(r)))?;
    }
    let rules6 = router_rules6(r);
    if !rules6.is_empty() {
        netns::run_with_input(
            netns::exec_in(ns, "ip6tables-legacy-restore").arg("--noflush"),
            Some(&rules6),
        )?;
    }
    Ok(())
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
    fn prc_masquerades_with_firewall() {
        let rules = router_rules(&router("r1=prc", "r1"));
        assert!(rules.contains("-A POSTROUTING -o wan -j MASQUERADE\n"));
        assert!(!rules.contains("random-fully"));
        assert!(rules.contains("--ctstate NEW,INVALID -j DROP"));
        assert!(rules.contains("! --ctstate DNAT -j DROP"));
        assert!(!rules.contains("203.0.113.10"));
    }

    #[test]
    fn sym_is_random_fully() {
        assert!(router_rules(&router("r1=sym", "r1")).contains("MASQUERADE --random-fully"));
    }

    #[test]
    fn full_cone_is_one_to_one() {
        let rules = router_rules(&router("r4=full", "r4"));
        assert!(rules.contains("-j SNAT --to-source 203.0.113.104"));
        assert!(rules.contains("-p udp -j DNAT --to-destination 192.168.4.2"));
        assert!(rules.contains("-p tcp -j DNAT --to-destination 192.168.4.2"));
    }

    #[test]
    fn nofw_and_upnp() {
        assert!(!router_rules(&router("r1=prc,nofw", "r1")).contains("*filter"));
        let rules = router_rules(&router("r1=prc,upnp", "r1"));
        assert!(rules.contains("-s 203.0.113.10 -j ACCEPT"));
        assert!(rules.contains("-s 203.0.113.11 -j ACCEPT"));
        let accept = rules.find("203.0.113.11 -j ACCEPT").unwrap();
        assert!(accept < rules.find("NEW,INVALID").unwrap(), "accept before drop");
    }

    #[test]
    fn ipv6_firewall_lets_nothing_new_in() {
        assert!(router_rules6(&router("r1=prc", "r1")).is_empty());
        assert!(router_rules6(&router("r1=prc,v6,nofw", "r1")).is_empty());
        let rules = router_rules6(&router("r1=prc,v6", "r1"));
        let established = rules.find("ESTABLISHED,RELATED -j ACCEPT").unwrap();
        assert!(established < rules.find("-A FORWARD -i wan -j DROP").unwrap());
        assert!(!rules.contains("MINIUPNPD"));
        let upnp = router_rules6(&router("r1=prc,v6,upnp", "r1"));
        assert!(upnp.find("-j MINIUPNPD").unwrap() < upnp.find("-A FORWARD -i wan -j DROP").unwrap());
    }

    #[test]
    fn hairpin_uses_wan_and_lan() {
        let nft = hairpin_nft(&router("r5=prc,hosts=2,hairpin", "r5"));
        assert!(nft.contains("ip daddr 203.0.113.105 meta l4proto udp dnat"));
        assert!(nft.contains("ip saddr 192.168.5.0/24 snat ip to 203.0.113.105"));
    }
}
