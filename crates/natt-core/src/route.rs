//! The router of this host's default route (on Linux, from `/proc/net/route`): where the
//! port-mapping techniques find their gateway (PCP, NAT-PMP) or check the one that answered
//! (UPnP).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

/// `RTF_UP | RTF_GATEWAY` in `/proc/net/route`'s flags.
const UP_GATEWAY: u32 = 0x1 | 0x2;

/// The IPv4 router of the default route (Linux: `/proc/net/route`; elsewhere `None`).
pub fn default_router() -> Option<Ipv4Addr> {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string("/proc/net/route") {
            Ok(text) => parse_proc_net_route(&text),
            Err(e) => {
                log::debug!("cannot read /proc/net/route: {e}");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The router of the best default route in the text of `/proc/net/route` (lowest metric,
/// routes without a router left out).
///
/// The kernel prints addresses as the hex of their in-memory (network order) bytes read as a
/// native integer, so on a little-endian machine 192.168.1.1 reads `0101A8C0`.
pub fn parse_proc_net_route(text: &str) -> Option<Ipv4Addr> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (destination, gateway, flags, metric, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(6)?, f.get(7)?);
            if hex(destination)? != 0 || hex(mask)? != 0 || hex(flags)? & UP_GATEWAY != UP_GATEWAY {
                return None;
            }
            let router = Ipv4Addr::from(hex(gateway)?.to_ne_bytes());
            (!router.is_unspecified()).then_some((metric.parse::<u32>().ok()?, router))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, router)| router)
}

/// The IPv6 router of the default route, with the scope of its interface when it is a
/// link-local address (Linux: `/proc/net/ipv6_route`; elsewhere `None`). The port is 0.
pub fn default_router_v6() -> Option<SocketAddrV6> {
    #[cfg(target_os = "linux")]
    {
        let text = match std::fs::read_to_string("/proc/net/ipv6_route") {
            Ok(text) => text,
            Err(e) => {
                log::debug!("cannot read /proc/net/ipv6_route: {e}");
                return None;
            }
        };
        let (router, device) = parse_proc_net_ipv6_route(&text)?;
        let scope = if router.is_unicast_link_local() {
            let index = std::fs::read_to_string(format!("/sys/class/net/{device}/ifindex")).ok()?;
            index.trim().parse().ok()?
        } else {
            0
        };
        Some(SocketAddrV6::new(router, 0, 0, scope))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The router and device of the best IPv6 default route in the text of
/// `/proc/net/ipv6_route` (lowest metric; routes without a next hop left out). Each line:
/// destination, its prefix length, source, its prefix length, next hop, metric, reference
/// count, use count, flags (hex), device.
pub fn parse_proc_net_ipv6_route(text: &str) -> Option<(Ipv6Addr, String)> {
    let addr = |s: &str| -> Option<Ipv6Addr> {
        (s.len() == 32)
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten()
            .map(Ipv6Addr::from)
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, dest_len, next_hop, metric, flags, device) =
                (f.first()?, f.get(1)?, f.get(4)?, f.get(5)?, f.get(8)?, f.get(9)?);
            let router = addr(next_hop)?;
            let default = addr(dest)?.is_unspecified() && *dest_len == "00";
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (default && flags & UP_GATEWAY == UP_GATEWAY && !router.is_unspecified())
                .then(|| Some((u32::from_str_radix(metric, 16).ok()?, router, (*device).to_owned())))
                .flatten()
        })
        .min_by_key(|(metric, _, _)| *metric)
        .map(|(_, router, device)| (router, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    fn route(dest: &str, gw: &str, flags: &str, metric: u32, mask: &str) -> String {
        format!("eth0\t{dest}\t{gw}\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n")
    }

    /// `a.b.c.d` as the kernel prints it on this machine.
    fn kernel_hex(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    #[test]
    fn finds_the_ipv6_default_router() {
        let text = "\
20010db8000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000100000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000200 00000002 00000000 00000003     wlan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let (router, device) = parse_proc_net_ipv6_route(text).unwrap();
        assert_eq!((router.to_string().as_str(), device.as_str()), ("fe80::1", "wlan0"));
        let first_two: String = text.lines().take(2).collect::<Vec<_>>().join("\n");
        let (router, _) = parse_proc_net_ipv6_route(&first_two).unwrap();
        assert_eq!(router.to_string(), "2001:db8:1::1");
        assert_eq!(parse_proc_net_ipv6_route("garbage\n\n1 2 3"), None);
    }

    #[test]
    fn finds_the_default_router() {
        let text = format!(
            "{HEADER}{}{}",
            route("00000000", &kernel_hex([192, 168, 1, 1]), "0003", 0, "00000000"),
            route(
                &kernel_hex([192, 168, 1, 0]),
                "00000000",
                "0001",
                0,
                &kernel_hex([255, 255, 255, 0])
            ),
        );
        assert_eq!(parse_proc_net_route(&text), Some(Ipv4Addr::new(192, 168, 1, 1)));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn reads_the_kernels_byte_order() {
        let text = format!("{HEADER}{}", route("00000000", "0101A8C0", "0003", 100, "00000000"));
        assert_eq!(parse_proc_net_route(&text), Some(Ipv4Addr::new(192, 168, 1, 1)));
    }

    #[test]
    fn lowest_metric_wins_and_routes_without_router_are_skipped() {
        let text = format!(
            "{HEADER}{}{}{}{}",
            route("00000000", &kernel_hex([10, 0, 0, 1]), "0003", 600, "00000000"),
            route("00000000", &kernel_hex([10, 0, 1, 1]), "0003", 100, "00000000"),
            // Default route straight out of an interface: no router.
            route("00000000", "00000000", "0001", 0, "00000000"),
            // A down route.
            route("00000000", &kernel_hex([10, 0, 2, 1]), "0002", 0, "00000000"),
        );
        assert_eq!(parse_proc_net_route(&text), Some(Ipv4Addr::new(10, 0, 1, 1)));
    }

    #[test]
    fn no_default_route_or_garbage() {
        assert_eq!(parse_proc_net_route(HEADER), None);
        assert_eq!(parse_proc_net_route(""), None);
        assert_eq!(
            parse_proc_net_route("x\n1 2 3\nzz 00000000 XYZ 0003 0 0 0 00000000"),
            None
        );
        let text = format!(
            "{HEADER}{}",
            route(
                &kernel_hex([10, 0, 0, 0]),
                &kernel_hex([10, 0, 0, 1]),
                "0003",
                0,
                &kernel_hex([255, 0, 0, 0])
            )
        );
        assert_eq!(parse_proc_net_route(&text), None);
    }
}
