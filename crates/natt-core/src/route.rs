//! The router of this host's default route (on Linux, from `/proc/net/route`): where the
//! port-mapping techniques find their gateway (PCP, NAT-PMP) or check the one that answered
//! (UPnP).

use std::net::Ipv4Addr;

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
