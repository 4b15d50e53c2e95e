//! `lab info`: everything a test or script needs to know about a running lab, as `KEY=VALUE`
//! lines (shell-quoted where needed, so `eval "$(cargo xtask lab info)"` works), stored in
//! `STATE/state.env`.
//!
//! Keys: `LAB_PREFIX LAB_STATE LAB_TOPOLOGY LAB_NODES LAB_ROUTERS INET_NS INET_GW STUN1 STUN2
//! STUN_PORT SRV1 SRV2 OBSERVER1 OBSERVER2 TURN_IP TURN_PORT TURN_URI TURN_USER TURN_PASSWORD
//! TURN_REALM TURN_LOG` (the TURN relay: `turn:IP:PORT`, its long-term credentials, the path
//! of coturn's verbose log), per router `RN_NS RN_KIND RN_WAN RN_WAN_GW
//! RN_PARENT RN_PUBLIC_IP RN_LAN RN_LAN_NET RN_HAIRPIN RN_FIREWALL RN_DELAY_MS RN_LOSS_PCT
//! RN_UPNP` (+ `RN_IGD_URL RN_NATPMP RN_UPNP_FORWARDING` with miniupnpd), per host
//! `HN_NS HN_IP HN_ROUTER HN_GW HN_PUBLIC_IP` (`H1B_IP`...), per public host `PN_NS PN_IP
//! PN_PUBLIC_IP`.
//!
//! With IPv6 in the lab (`LAB_IPV6=1`): `INET_GW6 STUN1_6 STUN2_6 SRV1_6 SRV2_6`, per dual-stack
//! router `RN_V6=1 RN_WAN6 RN_LAN6 RN_LAN6_NET` (`RN_V6=0` on the others), per host behind one
//! `HN_IP6` (and `HN_V4=0` behind a `v6only` router), per public host `PN_IP6`.

use std::collections::BTreeMap;
use std::path::Path;

use super::daemons::TURN_LOG;
use super::netns::ns_name;
use super::topology::{
    INET_GW, INET_GW6, OBSERVER_PORT, Plan, SRV1, SRV1_6, SRV2, SRV2_6, STUN_PORT, STUN1, STUN1_6, STUN2, STUN2_6,
    TURN_IP, TURN_PASSWORD, TURN_PORT, TURN_REALM, TURN_USER,
};

/// Ordered `KEY=VALUE` pairs.
pub type Info = Vec<(String, String)>;

/// The info of a lab. `upnp_forwarding` holds miniupnpd's verdict per router (`r1` ->
/// `enabled`).
pub fn lines(prefix: &str, dir: &Path, plan: &Plan, upnp_forwarding: &BTreeMap<String, String>) -> Info {
    let mut v: Info = Vec::new();
    let mut put = |k: &str, val: String| v.push((k.to_string(), val));
    put("LAB_PREFIX", prefix.to_string());
    put("LAB_STATE", dir.display().to_string());
    put("LAB_TOPOLOGY", plan.topology.clone());
    put("LAB_NODES", plan.nodes().join(" "));
    put(
        "LAB_ROUTERS",
        plan.routers
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
            .join(" "),
    );
    put("INET_NS", ns_name(prefix, "inet"));
    put("INET_GW", INET_GW.to_string());
    put("STUN1", STUN1.to_string());
    put("STUN2", STUN2.to_string());
    put("STUN_PORT", STUN_PORT.to_string());
    put("SRV1", SRV1.to_string());
    put("SRV2", SRV2.to_string());
    put("OBSERVER1", format!("{SRV1}:{OBSERVER_PORT}"));
    put("OBSERVER2", format!("{SRV2}:{OBSERVER_PORT}"));
    put("TURN_IP", TURN_IP.to_string());
    put("TURN_PORT", TURN_PORT.to_string());
    put("TURN_URI", format!("turn:{TURN_IP}:{TURN_PORT}"));
    put("TURN_USER", TURN_USER.to_string());
    put("TURN_PASSWORD", TURN_PASSWORD.to_string());
    put("TURN_REALM", TURN_REALM.to_string());
    put("TURN_LOG", dir.join(TURN_LOG).display().to_string());
    put("LAB_IPV6", u8::from(plan.ipv6).to_string());
    if plan.ipv6 {
        put("INET_GW6", INET_GW6.to_string());
        put("STUN1_6", STUN1_6.to_string());
        put("STUN2_6", STUN2_6.to_string());
        put("SRV1_6", SRV1_6.to_string());
        put("SRV2_6", SRV2_6.to_string());
    }
    for r in &plan.routers {
        let k = |s: &str| format!("R{}_{s}", r.n);
        put(&k("NS"), ns_name(prefix, &r.name));
        put(&k("KIND"), r.kind.name().to_string());
        put(&k("WAN"), r.wan.to_string());
        put(&k("WAN_GW"), r.wan_gw.to_string());
        put(&k("PARENT"), r.parent.clone());
        put(&k("PUBLIC_IP"), r.public_ip.to_string());
        put(&k("LAN"), r.lan_ip.to_string());
        put(&k("LAN_NET"), format!("{}/24", r.lan_net));
        put(&k("HAIRPIN"), u8::from(r.hairpin).to_string());
        put(&k("FIREWALL"), u8::from(r.firewall).to_string());
        put(&k("DELAY_MS"), r.delay_ms.to_string());
        put(&k("LOSS_PCT"), r.loss_pct.to_string());
        put(&k("UPNP"), u8::from(r.upnp).to_string());
        put(&k("V6"), u8::from(r.v6.is_some()).to_string());
        if let Some(v6) = &r.v6 {
            put(&k("WAN6"), v6.wan.to_string());
            put(&k("LAN6"), v6.lan_ip.to_string());
            put(&k("LAN6_NET"), format!("{}/64", v6.lan_net));
        }
        if r.upnp {
            put(&k("IGD_URL"), r.igd_url());
            put(&k("NATPMP"), r.natpmp_addr());
            let verdict = upnp_forwarding
                .get(&r.name)
                .cloned()
                .unwrap_or_else(|| "starting".to_string());
            put(&k("UPNP_FORWARDING"), verdict);
        }
        for h in &r.hosts {
            let k = |s: &str| format!("{}_{s}", h.name.to_uppercase());
            put(&k("NS"), ns_name(prefix, &h.name));
            put(&k("IP"), h.ip.to_string());
            put(&k("ROUTER"), h.router.clone());
            put(&k("GW"), h.gw.to_string());
            put(&k("PUBLIC_IP"), h.public_ip.to_string());
            if let Some(ip6) = h.ip6 {
                put(&k("IP6"), ip6.to_string());
            }
            if !h.v4 {
                put(&k("V4"), "0".to_string());
            }
        }
    }
    for p in &plan.publics {
        let k = |s: &str| format!("P{}_{s}", p.n);
        put(&k("NS"), ns_name(prefix, &p.name));
        put(&k("IP"), p.ip.to_string());
        put(&k("PUBLIC_IP"), p.ip.to_string());
        if let Some(ip6) = p.ip6 {
            put(&k("IP6"), ip6.to_string());
        }
    }
    v
}

/// `KEY=VALUE` lines, values single-quoted when they hold anything but plain characters.
pub fn render(info: &Info) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:,=@+-%".contains(c);
    info.iter()
        .map(|(k, v)| {
            if !v.is_empty() && v.chars().all(plain) {
                format!("{k}={v}\n")
            } else {
                format!("{k}='{}'\n", v.replace('\'', r"'\''"))
            }
        })
        .collect()
}

/// Reads what [`render`] wrote.
pub fn parse(text: &str) -> Info {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(inner) => inner.replace(r"'\''", "'"),
                None => v.to_string(),
            };
            (k.to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::Topology;

    #[test]
    fn pair_info() {
        let plan = Topology::parse("pair").unwrap().plan().unwrap();
        let info = lines("nl", Path::new("/tmp/natt-lab-nl"), &plan, &BTreeMap::new());
        let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LAB_NODES"), Some("inet r1 h1 r2 h2 p1"));
        assert_eq!(get("R1_NS"), Some("nl-r1"));
        assert_eq!(get("R2_WAN"), Some("203.0.113.102"));
        assert_eq!(get("H1_PUBLIC_IP"), Some("203.0.113.101"));
        assert_eq!(get("P1_IP"), Some("198.51.100.11"));
        assert_eq!(get("OBSERVER2"), Some("203.0.113.21:7000"));
        assert_eq!(get("R1_IGD_URL"), None);
        assert_eq!(get("TURN_URI"), Some("turn:203.0.113.30:3478"));
        assert_eq!(get("TURN_LOG"), Some("/tmp/natt-lab-nl/turn.turnlog"));
    }

    #[test]
    fn upnp_keys() {
        let plan = Topology::parse("double").unwrap().plan().unwrap();
        let mut v = BTreeMap::new();
        v.insert("r2".to_string(), "disabled".to_string());
        let info = lines("t1", Path::new("/x"), &plan, &v);
        let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("R2_IGD_URL"), Some("http://192.168.2.1:5000/rootDesc.xml"));
        assert_eq!(get("R2_NATPMP"), Some("192.168.2.1:5351"));
        assert_eq!(get("R2_UPNP_FORWARDING"), Some("disabled"));
        assert_eq!(get("H2_PUBLIC_IP"), Some("203.0.113.101"));
        assert_eq!(get("R2_PARENT"), Some("r1"));
    }

    #[test]
    fn ipv6_keys() {
        let plan = Topology::parse("r1=sym,v6 r2=prc,v6only p1").unwrap().plan().unwrap();
        let info = lines("t6", Path::new("/x"), &plan, &BTreeMap::new());
        let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LAB_IPV6"), Some("1"));
        assert_eq!(get("STUN2_6"), Some("2001:db8::11"));
        assert_eq!(get("R1_WAN6"), Some("2001:db8::101"));
        assert_eq!(get("R2_LAN6_NET"), Some("2001:db8:2::/64"));
        assert_eq!(get("H1_IP6"), Some("2001:db8:1::2"));
        assert_eq!(get("H2_V4"), Some("0"));
        assert_eq!(get("P1_IP6"), Some("2001:db8:ff::11"));
        let v4 = lines(
            "t4",
            Path::new("/x"),
            &Topology::parse("pair").unwrap().plan().unwrap(),
            &BTreeMap::new(),
        );
        assert!(!v4.iter().any(|(k, _)| k == "STUN1_6" || k == "H1_IP6"));
    }

    #[test]
    fn render_and_parse_round_trip() {
        let info: Info = vec![
            ("A".into(), "plain-1.2.3.4:5".into()),
            ("B".into(), "r1=prc r2=prc p1".into()),
            ("C".into(), "it's".into()),
            ("D".into(), String::new()),
        ];
        let text = render(&info);
        assert!(text.contains("A=plain-1.2.3.4:5\n"));
        assert!(text.contains("B='r1=prc r2=prc p1'\n"));
        assert_eq!(parse(&text), info);
    }
}
