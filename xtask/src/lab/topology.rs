//! Topologies: the words given to `lab up` (presets, `rN=KIND,OPT...`, `pN`, `--delay MS`,
//! `--loss PCT`) and the address plan computed from them.
//!
//! Pure: nothing here runs a command, so all of it is unit-tested. To add a topology, add a
//! row to [`PRESETS`]; to add a router option, extend [`RouterSpec`] and [`parse_router`].
//!
//! Address plan (documentation ranges only, nothing here is routable outside the lab):
//!
//! | node | address |
//! |---|---|
//! | `inet` | 203.0.113.1 (gateway of the "internet" bridge), 198.51.100.1 (public hosts' gateway) |
//! | STUN (coturn, RFC 5780) | 203.0.113.10 and 203.0.113.11, port 3478, on `inet` |
//! | TURN relay (a second coturn, long-term credentials) | 203.0.113.30, port 3478, relayed addresses on it |
//! | servers of natt's own | 203.0.113.20 and 203.0.113.21 on `inet` (observer on port 7000) |
//! | `rN` | WAN 203.0.113.(100+N)/32; LAN 192.168.N.1/24 (`cgn`: 100.64.N.1/24) |
//! | `rN` with `via=rM` | WAN = rM's LAN prefix .(100+N)/24 (double NAT) |
//! | `hN`, `hNb`, `hNc` | LAN .2, .3, .4 behind `rN` |
//! | `pN` | 198.51.100.(10+N), public, no NAT |
//!
//! IPv6 (router option `v6`, or `--ipv6` for every top-level router; `v6only`: no IPv4 on the
//! LAN): no NAT, each such router routes a /64 to its LAN behind a home router's stateful
//! firewall (RFC 6092: nothing new comes in from the WAN). With any IPv6 in a lab, `inet`,
//! coturn, natt's own servers and the public hosts have IPv6 addresses too:
//!
//! | node | IPv6 address |
//! |---|---|
//! | `inet` | 2001:db8::1/64 on the internet bridge, 2001:db8:ff::1/64 on the public hosts' |
//! | STUN (a second coturn, RFC 5780) | 2001:db8::10 and 2001:db8::11, port 3478 |
//! | servers of natt's own | 2001:db8::20 and 2001:db8::21 |
//! | `rN` | WAN 2001:db8::(100+N)/64; LAN 2001:db8:N::1/64 (N written as hex digits) |
//! | `hN`, `hNb`, `hNc` | 2001:db8:N::2, ::3, ::4 |
//! | `pN` | 2001:db8:ff::(10+N) |

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The internet's router address on the bridge that routers' WANs hang off.
pub const INET_GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The internet's router address on the bridge of the public hosts (`pN`).
pub const PUBLIC_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// coturn's first address.
pub const STUN1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// coturn's second address (RFC 5780 needs two).
pub const STUN2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// coturn's port on both addresses.
pub const STUN_PORT: u16 = 3478;
/// The TURN relay's address (a second coturn, RFC 8656 and RFC 6062, long-term credentials):
/// it listens there (UDP and TCP) and allocates relayed addresses on it.
pub const TURN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
/// The TURN relay's port.
pub const TURN_PORT: u16 = 3478;
/// The TURN relay's user name (long-term credentials).
pub const TURN_USER: &str = "natt";
/// The TURN relay's password: a lab-only secret, printed by `lab info`.
pub const TURN_PASSWORD: &str = "natt-lab-relay";
/// The TURN relay's realm.
pub const TURN_REALM: &str = "natt.lab";
/// First address reserved for natt's own servers (`natt serve`) and the lab's observer.
pub const SRV1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// Second address reserved for natt's own servers and the lab's observer.
pub const SRV2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);
/// The observer (replies with the address it sees) listens on this port, UDP and TCP.
pub const OBSERVER_PORT: u16 = 7000;
/// The internet's router address on the bridge that routers' WANs hang off (IPv6).
pub const INET_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The internet's router address on the public hosts' bridge (IPv6).
pub const PUBLIC_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// The IPv6 coturn's first address.
pub const STUN1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// The IPv6 coturn's second address (RFC 5780 needs two).
pub const STUN2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
/// First IPv6 address for natt's own servers.
pub const SRV1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
/// Second IPv6 address for natt's own servers.
pub const SRV2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21);
/// Hosts per router at most (`hN`, `hNb`, `hNc`).
pub const MAX_HOSTS: u8 = 3;

/// A named topology: what `lab up NAME` expands to.
pub struct Preset {
    /// The name given to `lab up`.
    pub name: &'static str,
    /// The tokens it stands for.
    pub tokens: &'static str,
    /// One line for `lab presets`.
    pub about: &'static str,
}

/// Every preset. Add a row to add a topology.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "pair",
        tokens: "r1=prc r2=prc p1",
        about: "two hosts behind port-restricted cones, one public host",
    },
    Preset {
        name: "sym-prc",
        tokens: "r1=sym r2=prc p1",
        about: "symmetric NAT and port-restricted cone",
    },
    Preset {
        name: "sym-sym",
        tokens: "r1=sym r2=sym p1",
        about: "two symmetric NATs",
    },
    Preset {
        name: "sym-full",
        tokens: "r1=sym r2=full p1",
        about: "symmetric NAT and full cone",
    },
    Preset {
        name: "full-full",
        tokens: "r1=full r2=full p1",
        about: "two full cones",
    },
    Preset {
        name: "hairpin",
        tokens: "r1=prc,hosts=2,hairpin p1",
        about: "two hosts behind one router that hairpins",
    },
    Preset {
        name: "nohairpin",
        tokens: "r1=prc,hosts=2 p1",
        about: "two hosts behind one router without hairpinning",
    },
    Preset {
        name: "upnp",
        tokens: "r1=prc,upnp p1",
        about: "a router running miniupnpd (UPnP IGD, NAT-PMP, PCP)",
    },
    Preset {
        name: "double",
        tokens: "r1=prc,cgn,hosts=0 r2=prc,via=r1,upnp r3=prc p1",
        about: "h2 behind r2 behind carrier-grade NAT r1 (miniupnpd on r2 cannot map)",
    },
    Preset {
        name: "double-dmz",
        tokens: "r1=full,cgn,hosts=0 r2=prc,via=r1,upnp p1",
        about: "double NAT whose outer router is a full cone (UPnP on r2 works)",
    },
    Preset {
        name: "slow-pair",
        tokens: "r1=prc,delay=50 r2=prc,delay=50 p1",
        about: "pair with 50 ms each way on both WAN links (RTT h1-h2 200 ms)",
    },
    Preset {
        name: "lossy-pair",
        tokens: "r1=prc,loss=10 r2=prc,loss=10 p1",
        about: "pair with 10 % loss each way on both WAN links",
    },
    Preset {
        name: "v6-pair",
        tokens: "r1=prc,v6 r2=prc,v6 p1",
        about: "pair, dual-stack: a routed IPv6 /64 behind each router's firewall",
    },
    Preset {
        name: "v6-sym-sym",
        tokens: "r1=sym,v6 r2=sym,v6 p1",
        about: "two symmetric NATs, dual-stack (IPv4 hopeless, IPv6 firewalls only)",
    },
    Preset {
        name: "v6only-pair",
        tokens: "r1=prc,v6only r2=prc,v6only p1",
        about: "two IPv6-only LANs behind firewalls",
    },
    Preset {
        name: "world",
        tokens: "r1=prc,upnp r2=prc r3=sym r4=full r5=prc,hosts=2,hairpin \
                 r6=prc,cgn,hosts=0 r7=prc,via=r6,upnp p1",
        about: "most of the above at once",
    },
];

/// How a router translates (RFC 4787 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Port-restricted cone: endpoint-independent mapping (port kept when free),
    /// address-and-port-dependent filtering. `MASQUERADE`.
    Prc,
    /// Symmetric: endpoint-dependent mapping. `MASQUERADE --random-fully`.
    Sym,
    /// Full cone 1:1: `SNAT` out, `DNAT` of all inbound UDP/TCP to one inside address.
    Full,
}

impl NatKind {
    /// The name used in topology tokens.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Prc => "prc",
            NatKind::Sym => "sym",
            NatKind::Full => "full",
        }
    }

    fn parse(s: &str) -> Option<NatKind> {
        match s {
            "prc" => Some(NatKind::Prc),
            "sym" => Some(NatKind::Sym),
            "full" => Some(NatKind::Full),
            _ => None,
        }
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `rN=KIND,OPT...` token.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterSpec {
    /// N in `rN` (1..=99).
    pub n: u8,
    /// NAT behaviour.
    pub kind: NatKind,
    /// `upnp`: run miniupnpd (UPnP IGD, NAT-PMP, PCP).
    pub upnp: bool,
    /// `hairpin`: LAN hosts reach each other at the router's public address.
    pub hairpin: bool,
    /// Home-router firewall (on unless `nofw`).
    pub firewall: bool,
    /// `hosts=K`: hosts behind the router (0..=3, default 1).
    pub hosts: u8,
    /// `via=rM`: the WAN is on rM's LAN (double NAT).
    pub via: Option<u8>,
    /// `cgn`: LAN is 100.64.N.0/24 instead of 192.168.N.0/24.
    pub cgn: bool,
    /// `delay=MS`: one-way delay on the WAN link, each direction.
    pub delay_ms: Option<u32>,
    /// `loss=PCT`: random loss on the WAN link, each direction.
    pub loss_pct: Option<f64>,
    /// `v6`: a routed IPv6 /64 on the LAN behind a stateful firewall (dual-stack).
    pub v6: bool,
    /// `v6only`: IPv6 only on the LAN (no IPv4 addresses on the hosts); implies `v6`.
    pub v6only: bool,
}

/// Parsed `lab up` words, presets expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The tokens after preset expansion, in order (`r1=prc r2=prc p1`).
    pub tokens: Vec<String>,
    /// Routers in definition order.
    pub routers: Vec<RouterSpec>,
    /// N of every public host `pN`.
    pub publics: Vec<u8>,
    /// `--delay MS`: default delay of top-level routers' WAN links.
    pub delay_ms: u32,
    /// `--loss PCT`: default loss of top-level routers' WAN links.
    pub loss_pct: f64,
    /// `--ipv6`: every top-level router is dual-stack (`v6`).
    pub ipv6: bool,
}

/// Parses one `rN=KIND,OPT...` token.
pub fn parse_router(token: &str) -> Result<RouterSpec, String> {
    let bad = || format!("bad router token '{token}' (expected rN=prc|sym|full[,OPT...])");
    let (name, rest) = token.split_once('=').ok_or_else(bad)?;
    let n = name
        .strip_prefix('r')
        .and_then(|d| d.parse::<u8>().ok())
        .filter(|n| (1..=99).contains(n))
        .ok_or_else(bad)?;
    let mut parts = rest.split(',');
    let kind_word = parts.next().unwrap_or_default();
    let kind =
        NatKind::parse(kind_word).ok_or_else(|| format!("r{n}: unknown NAT kind '{kind_word}' (prc, sym or full)"))?;
    let mut spec = RouterSpec {
        n,
        kind,
        upnp: false,
        hairpin: false,
        firewall: true,
        hosts: 1,
        via: None,
        cgn: false,
        delay_ms: None,
        loss_pct: None,
        v6: false,
        v6only: false,
    };
    for opt in parts.filter(|o| !o.is_empty()) {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        match (key, value) {
            ("upnp", "") => spec.upnp = true,
            ("hairpin", "") => spec.hairpin = true,
            ("nofw", "") => spec.firewall = false,
            ("cgn", "") => spec.cgn = true,
            ("v6", "") => spec.v6 = true,
            ("v6only", "") => (spec.v6, spec.v6only) = (true, true),
            ("hosts", v) => {
                spec.hosts = v
                    .parse()
                    .ok()
                    .filter(|k| *k <= MAX_HOSTS)
                    .ok_or_else(|| format!("r{n}: hosts must be 0..={MAX_HOSTS}, got '{v}'"))?;
            }
            ("via", v) => {
                let m = v
                    .strip_prefix('r')
                    .and_then(|d| d.parse::<u8>().ok())
                    .ok_or_else(|| format!("r{n}: via must name a router (via=rM), got '{v}'"))?;
                spec.via = Some(m);
            }
            ("delay", v) => {
                spec.delay_ms = Some(parse_delay(v).map_err(|e| format!("r{n}: {e}"))?);
            }
            ("loss", v) => spec.loss_pct = Some(parse_loss(v).map_err(|e| format!("r{n}: {e}"))?),
            _ => {
                return Err(format!(
                    "r{n}: unknown option '{opt}' \
                     (upnp, hairpin, nofw, cgn, v6, v6only, hosts=K, via=rM, delay=MS, loss=PCT)"
                ));
            }
        }
    }
    if spec.hairpin && spec.kind == NatKind::Full {
        return Err(format!("r{n}: hairpin applies to prc and sym routers"));
    }
    if spec.v6 && spec.via.is_some() {
        return Err(format!("r{n}: v6 applies to routers on the internet (not with via=)"));
    }
    Ok(spec)
}

/// Parses a one-way delay in milliseconds (0..=10000).
pub fn parse_delay(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|d| *d <= 10_000)
        .ok_or_else(|| format!("delay must be whole milliseconds 0..=10000, got '{v}'"))
}

/// Parses a loss percentage (0..=100).
pub fn parse_loss(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|l| (0.0..=100.0).contains(l))
        .ok_or_else(|| format!("loss must be a percentage 0..=100, got '{v}'"))
}

/// The preset called `name`, if any.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

impl Topology {
    /// Parses whitespace-separated words, e.g. `"pair --delay 20"` or `"r1=sym p1"`.
    pub fn parse(text: &str) -> Result<Topology, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        Topology::parse_words(&words)
    }

    /// Parses `lab up` words.
    pub fn parse_words<S: AsRef<str>>(words: &[S]) -> Result<Topology, String> {
        let mut topo = Topology {
            tokens: Vec::new(),
            routers: Vec::new(),
            publics: Vec::new(),
            delay_ms: 0,
            loss_pct: 0.0,
            ipv6: false,
        };
        let mut words = words.iter().map(|w| w.as_ref().to_string());
        while let Some(word) = words.next() {
            topo.add_word(&word, &mut words, 0)?;
        }
        if topo.routers.is_empty() && topo.publics.is_empty() {
            return Err("empty topology: give a preset (see `lab presets`) or rN=KIND / pN tokens".to_string());
        }
        Ok(topo)
    }

    fn add_word(&mut self, word: &str, rest: &mut dyn Iterator<Item = String>, depth: u8) -> Result<(), String> {
        match word {
            "--delay" => {
                let v = rest.next().ok_or("--delay needs MS")?;
                self.delay_ms = parse_delay(&v)?;
                self.tokens.extend(["--delay".to_string(), v]);
            }
            "--ipv6" => {
                self.ipv6 = true;
                self.tokens.push("--ipv6".to_string());
            }
            "--loss" => {
                let v = rest.next().ok_or("--loss needs PCT")?;
                self.loss_pct = parse_loss(&v)?;
                self.tokens.extend(["--loss".to_string(), v]);
            }
            w if w.starts_with('r') && w.contains('=') => {
                let spec = parse_router(w)?;
                if self.routers.iter().any(|r| r.n == spec.n) {
                    return Err(format!("r{} defined twice", spec.n));
                }
                if let Some(m) = spec.via
                    && !self.routers.iter().any(|r| r.n == m)
                {
                    return Err(format!("r{}: via=r{m} must be defined before it", spec.n));
                }
                self.routers.push(spec);
                self.tokens.push(w.to_string());
            }
            w if w
                .strip_prefix('p')
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())) =>
            {
                let n = w
                    .strip_prefix('p')
                    .and_then(|d| d.parse::<u8>().ok())
                    .filter(|n| (1..=99).contains(n))
                    .ok_or_else(|| format!("bad public host '{w}' (p1..p99)"))?;
                if self.publics.contains(&n) {
                    return Err(format!("p{n} given twice"));
                }
                self.publics.push(n);
                self.tokens.push(w.to_string());
            }
            w => {
                let p =
                    preset(w).ok_or_else(|| format!("unknown topology word '{w}' (presets: {})", preset_names()))?;
                if depth > 0 {
                    return Err(format!("preset '{w}' inside a preset"));
                }
                let mut inner = p.tokens.split_whitespace().map(str::to_string);
                while let Some(t) = inner.next() {
                    self.add_word(&t, &mut inner, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// The tokens as one line, as they would be given to `lab up`.
    pub fn canonical(&self) -> String {
        self.tokens.join(" ")
    }

    /// Computes every address, parent and link of the lab.
    pub fn plan(&self) -> Result<Plan, String> {
        let mut routers: Vec<RouterPlan> = Vec::new();
        for spec in &self.routers {
            let lan_net = if spec.cgn {
                Ipv4Addr::new(100, 64, spec.n, 0)
            } else {
                Ipv4Addr::new(192, 168, spec.n, 0)
            };
            let (parent, wan, wan_prefix_len, wan_gw, delay_ms, loss_pct) = match spec.via {
                None => (
                    "inet".to_string(),
                    Ipv4Addr::new(203, 0, 113, 100 + spec.n),
                    32,
                    INET_GW,
                    spec.delay_ms.unwrap_or(self.delay_ms),
                    spec.loss_pct.unwrap_or(self.loss_pct),
                ),
                Some(m) => {
                    let up = routers
                        .iter()
                        .find(|r| r.n == m)
                        .ok_or_else(|| format!("r{}: via=r{m} is not defined", spec.n))?;
                    (
                        up.name.clone(),
                        with_host(up.lan_net, 100 + spec.n),
                        24,
                        up.lan_ip,
                        spec.delay_ms.unwrap_or(0),
                        spec.loss_pct.unwrap_or(0.0),
                    )
                }
            };
            let public_ip = match spec.via {
                None => wan,
                Some(m) => routers.iter().find(|r| r.n == m).map(|r| r.public_ip).unwrap_or(wan),
            };
            let lan_ip = with_host(lan_net, 1);
            let v6 = (spec.v6 || (self.ipv6 && spec.via.is_none())).then(|| RouterV6 {
                wan: v6_addr(0, 0x100 + u16::from(spec.n)),
                lan_net: v6_addr(hex_digits(spec.n), 0),
                lan_ip: v6_addr(hex_digits(spec.n), 1),
                v4: !spec.v6only,
            });
            let hosts = (0..spec.hosts)
                .map(|i| HostPlan {
                    ip6: v6.as_ref().map(|_| v6_addr(hex_digits(spec.n), 2 + u16::from(i))),
                    v4: !spec.v6only,
                    name: format!("h{}{}", spec.n, ["", "b", "c"].get(usize::from(i)).unwrap_or(&"")),
                    ip: with_host(lan_net, 2 + i),
                    router: format!("r{}", spec.n),
                    gw: lan_ip,
                    public_ip,
                })
                .collect();
            routers.push(RouterPlan {
                n: spec.n,
                name: format!("r{}", spec.n),
                kind: spec.kind,
                upnp: spec.upnp,
                hairpin: spec.hairpin,
                firewall: spec.firewall,
                parent,
                wan,
                wan_prefix_len,
                wan_gw,
                lan_net,
                lan_ip,
                hosts,
                full_target: None,
                public_ip,
                delay_ms,
                loss_pct,
                v6,
            });
        }
        // A full cone forwards everything to its first host, else to its first child router.
        let children: Vec<(String, Ipv4Addr)> = routers.iter().map(|r| (r.parent.clone(), r.wan)).collect();
        for r in routers.iter_mut().filter(|r| r.kind == NatKind::Full) {
            let child = children.iter().find(|(p, _)| *p == r.name).map(|(_, wan)| *wan);
            r.full_target = r.hosts.first().map(|h| h.ip).or(child);
            if r.full_target.is_none() {
                return Err(format!("{}: a full cone needs a host or a child router", r.name));
            }
        }
        let ipv6 = routers.iter().any(|r| r.v6.is_some());
        let publics = self
            .publics
            .iter()
            .map(|&n| PublicPlan {
                n,
                name: format!("p{n}"),
                ip: Ipv4Addr::new(198, 51, 100, 10 + n),
                ip6: ipv6.then(|| Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10 + u16::from(n))),
            })
            .collect();
        Ok(Plan {
            topology: self.canonical(),
            routers,
            publics,
            ipv6,
        })
    }
}

/// All preset names, comma-separated.
pub fn preset_names() -> String {
    PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// 2001:db8:`net`::`host`.
fn v6_addr(net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
}

/// `n`'s decimal digits read as hex (12 -> 0x12), so that r12's LAN is 2001:db8:12::/64.
fn hex_digits(n: u8) -> u16 {
    u16::from(n / 10) * 16 + u16::from(n % 10)
}

fn with_host(net: Ipv4Addr, host: u8) -> Ipv4Addr {
    let [a, b, c, _] = net.octets();
    Ipv4Addr::new(a, b, c, host)
}

/// Every node and address of a lab.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The topology tokens it was planned from.
    pub topology: String,
    /// Routers, parents before children.
    pub routers: Vec<RouterPlan>,
    /// Public hosts.
    pub publics: Vec<PublicPlan>,
    /// Some router has IPv6: `inet`, its servers and the public hosts have IPv6 addresses too.
    pub ipv6: bool,
}

/// A dual-stack (or IPv6-only) router's IPv6 side: no NAT, a routed /64 behind a firewall.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterV6 {
    /// WAN address (2001:db8::(100+N)/64 on the internet bridge).
    pub wan: Ipv6Addr,
    /// LAN prefix (2001:db8:N::/64).
    pub lan_net: Ipv6Addr,
    /// The router's LAN address (2001:db8:N::1).
    pub lan_ip: Ipv6Addr,
    /// Hosts have IPv4 too (false with `v6only`).
    pub v4: bool,
}

/// One router: its WAN link, LAN and hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterPlan {
    /// N in `rN`.
    pub n: u8,
    /// Node name, `rN`.
    pub name: String,
    /// NAT behaviour.
    pub kind: NatKind,
    /// Runs miniupnpd.
    pub upnp: bool,
    /// Hairpins.
    pub hairpin: bool,
    /// Has the home-router firewall.
    pub firewall: bool,
    /// Node the WAN link goes to: `inet` or the parent router `rM`.
    pub parent: String,
    /// WAN address.
    pub wan: Ipv4Addr,
    /// WAN prefix length: 32 on the internet (only the gateway is a neighbour), 24 on a LAN.
    pub wan_prefix_len: u8,
    /// WAN gateway.
    pub wan_gw: Ipv4Addr,
    /// LAN network address (x.y.z.0/24).
    pub lan_net: Ipv4Addr,
    /// The router's LAN address (x.y.z.1).
    pub lan_ip: Ipv4Addr,
    /// Hosts on the LAN.
    pub hosts: Vec<HostPlan>,
    /// Full cone: where inbound traffic goes.
    pub full_target: Option<Ipv4Addr>,
    /// The address the internet sees for this router's LAN (outermost WAN).
    pub public_ip: Ipv4Addr,
    /// One-way delay on the WAN link, each direction.
    pub delay_ms: u32,
    /// Loss on the WAN link, each direction, in percent.
    pub loss_pct: f64,
    /// The IPv6 side (`v6`, `v6only`, `--ipv6`).
    pub v6: Option<RouterV6>,
}

impl RouterPlan {
    /// The bridge in the parent node that the WAN link is a port of.
    pub fn parent_bridge(&self) -> &'static str {
        if self.parent == "inet" { "br0" } else { "lan" }
    }

    /// miniupnpd's UPnP IGD description URL.
    pub fn igd_url(&self) -> String {
        format!("http://{}:5000/rootDesc.xml", self.lan_ip)
    }

    /// miniupnpd's NAT-PMP / PCP address.
    pub fn natpmp_addr(&self) -> String {
        format!("{}:5351", self.lan_ip)
    }

    /// Whether the WAN link has delay or loss.
    pub fn impaired(&self) -> bool {
        self.delay_ms > 0 || self.loss_pct > 0.0
    }
}

/// A host behind a router.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPlan {
    /// Node name: `hN`, `hNb` or `hNc`.
    pub name: String,
    /// LAN address.
    pub ip: Ipv4Addr,
    /// The router in front of it (`rN`).
    pub router: String,
    /// Default gateway (the router's LAN address).
    pub gw: Ipv4Addr,
    /// The address the internet sees for it (the outermost router's WAN).
    pub public_ip: Ipv4Addr,
    /// Its global IPv6 address, behind a dual-stack router.
    pub ip6: Option<Ipv6Addr>,
    /// It has its IPv4 address (false behind a `v6only` router).
    pub v4: bool,
}

/// A public host, straight on the internet.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicPlan {
    /// N in `pN`.
    pub n: u8,
    /// Node name, `pN`.
    pub name: String,
    /// Its address, 198.51.100.(10+N).
    pub ip: Ipv4Addr,
    /// Its IPv6 address, 2001:db8:ff::(10+N), in a lab with IPv6.
    pub ip6: Option<Ipv6Addr>,
}

impl Plan {
    /// Every node name: `inet`, then each router followed by its hosts, then public hosts.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes = vec!["inet".to_string()];
        for r in &self.routers {
            nodes.push(r.name.clone());
            nodes.extend(r.hosts.iter().map(|h| h.name.clone()));
        }
        nodes.extend(self.publics.iter().map(|p| p.name.clone()));
        nodes
    }

    /// The router called `name` (`r1`).
    pub fn router(&self, name: &str) -> Option<&RouterPlan> {
        self.routers.iter().find(|r| r.name == name)
    }

    /// The host called `name` (`h1`, `h1b`).
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.routers
            .iter()
            .flat_map(|r| r.hosts.iter())
            .find(|h| h.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        Topology::parse(text).unwrap().plan().unwrap()
    }

    #[test]
    fn every_preset_parses_and_plans() {
        for p in PRESETS {
            let plan = plan(p.name);
            assert_eq!(plan.topology, Topology::parse(p.tokens).unwrap().canonical());
            assert!(plan.nodes().len() >= 2, "{}", p.name);
        }
    }

    #[test]
    fn pair_addresses() {
        let plan = plan("pair");
        assert_eq!(plan.nodes(), ["inet", "r1", "h1", "r2", "h2", "p1"]);
        let r1 = plan.router("r1").unwrap();
        assert_eq!(r1.kind, NatKind::Prc);
        assert_eq!(r1.wan, Ipv4Addr::new(203, 0, 113, 101));
        assert_eq!(r1.wan_prefix_len, 32);
        assert_eq!(r1.wan_gw, INET_GW);
        assert_eq!(r1.lan_ip, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(r1.parent_bridge(), "br0");
        assert!(r1.firewall && !r1.upnp && !r1.hairpin);
        let h2 = plan.host("h2").unwrap();
        assert_eq!(h2.ip, Ipv4Addr::new(192, 168, 2, 2));
        assert_eq!(h2.gw, Ipv4Addr::new(192, 168, 2, 1));
        assert_eq!(h2.public_ip, Ipv4Addr::new(203, 0, 113, 102));
        assert_eq!(plan.publics[0].ip, Ipv4Addr::new(198, 51, 100, 11));
    }

    #[test]
    fn double_nat_plan() {
        let plan = plan("double");
        let r1 = plan.router("r1").unwrap();
        assert_eq!(r1.lan_net, Ipv4Addr::new(100, 64, 1, 0));
        assert!(r1.hosts.is_empty());
        let r2 = plan.router("r2").unwrap();
        assert_eq!(r2.parent, "r1");
        assert_eq!(r2.parent_bridge(), "lan");
        assert_eq!(r2.wan, Ipv4Addr::new(100, 64, 1, 102));
        assert_eq!(r2.wan_prefix_len, 24);
        assert_eq!(r2.wan_gw, Ipv4Addr::new(100, 64, 1, 1));
        assert_eq!(r2.public_ip, r1.wan);
        assert_eq!(plan.host("h2").unwrap().public_ip, r1.wan);
        assert_eq!(r2.igd_url(), "http://192.168.2.1:5000/rootDesc.xml");
    }

    #[test]
    fn full_cone_targets() {
        let sf = plan("sym-full");
        assert_eq!(
            sf.router("r2").unwrap().full_target,
            Some(Ipv4Addr::new(192, 168, 2, 2))
        );
        let dmz = plan("double-dmz");
        assert_eq!(
            dmz.router("r1").unwrap().full_target,
            Some(Ipv4Addr::new(100, 64, 1, 102))
        );
        assert!(Topology::parse("r1=full,hosts=0").unwrap().plan().is_err());
    }

    #[test]
    fn hosts_and_options() {
        let plan = plan("r3=sym,hosts=3,hairpin,nofw,delay=20,loss=1.5 p2");
        let r3 = plan.router("r3").unwrap();
        let names: Vec<_> = r3.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h3", "h3b", "h3c"]);
        assert_eq!(r3.hosts[2].ip, Ipv4Addr::new(192, 168, 3, 4));
        assert!(r3.hairpin && !r3.firewall);
        assert_eq!((r3.delay_ms, r3.loss_pct), (20, 1.5));
        assert!(r3.impaired());
        assert_eq!(plan.publics[0].ip, Ipv4Addr::new(198, 51, 100, 12));
    }

    #[test]
    fn global_impairment_applies_to_top_level_routers_only() {
        let d = plan("double --delay 30 --loss 2");
        assert_eq!(d.router("r1").unwrap().delay_ms, 30);
        assert_eq!(d.router("r3").unwrap().loss_pct, 2.0);
        assert_eq!(d.router("r2").unwrap().delay_ms, 0);
        let mixed = plan("pair --delay 30 r3=prc,delay=5");
        assert_eq!(mixed.router("r3").unwrap().delay_ms, 5);
    }

    #[test]
    fn ipv6_plan() {
        let p = plan("r1=sym,v6 r2=prc p1");
        assert!(p.ipv6);
        let r1 = p.router("r1").unwrap().v6.clone().unwrap();
        assert_eq!(r1.wan.to_string(), "2001:db8::101");
        assert_eq!(r1.lan_ip.to_string(), "2001:db8:1::1");
        assert!(p.router("r2").unwrap().v6.is_none());
        assert_eq!(p.host("h1").unwrap().ip6.unwrap().to_string(), "2001:db8:1::2");
        assert_eq!(p.host("h2").unwrap().ip6, None);
        assert_eq!(p.publics[0].ip6.unwrap().to_string(), "2001:db8:ff::11");
        let all = plan("r12=prc,hosts=2 r3=prc,v6only --ipv6");
        assert_eq!(all.host("h12b").unwrap().ip6.unwrap().to_string(), "2001:db8:12::3");
        assert!(all.host("h12").unwrap().v4 && !all.host("h3").unwrap().v4);
        assert!(!plan("pair").ipv6);
        assert!(
            Topology::parse("r1=prc r2=prc,via=r1,v6")
                .and_then(|t| t.plan())
                .is_err()
        );
    }

    #[test]
    fn errors_are_clear() {
        let err = |t: &str| Topology::parse(t).and_then(|t| t.plan()).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("nosuch").contains("unknown topology word"));
        assert!(err("r1=cone").contains("unknown NAT kind"));
        assert!(err("r1=prc r1=sym").contains("twice"));
        assert!(err("r2=prc,via=r1").contains("defined before"));
        assert!(err("r1=prc,hosts=4").contains("hosts"));
        assert!(err("r1=prc,bogus").contains("unknown option"));
        assert!(err("r1=full,hairpin").contains("hairpin"));
        assert!(err("r0=prc").contains("bad router token"));
        assert!(err("pair --delay").contains("--delay"));
        assert!(err("pair --loss 200").contains("loss"));
        assert!(err("p1 p1").contains("twice"));
    }
}
