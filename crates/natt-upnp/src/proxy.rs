//! Warning about HTTP proxies: `igd-next` talks to the gateway over `attohttpc`, which sends
//! plain-HTTP requests through the proxy named in the environment (`http_proxy`,
//! `HTTP_PROXY`, else `all_proxy`, `ALL_PROXY`) unless `no_proxy` (`NO_PROXY`) covers the
//! host. A proxy somewhere on the internet cannot reach the gateway on the LAN, so its port
//! mapping requests fail, or reach another network's device. `igd-next` offers no way to turn
//! the proxy off, and a library must not change its program's environment; so this module
//! only detects the case and logs a warning saying what to set (`no_proxy`).

use std::net::Ipv4Addr;

/// The proxy that `attohttpc` would use for `http://{gateway}/...` (for any host not in
/// `no_proxy` when `gateway` is `None`), if any, from `env` (a variable's value by name). The same rules as `attohttpc` 0.30's
/// `ProxySettings::from_env`: lower-case names first; `no_proxy=*` disables proxies; a
/// `no_proxy` entry covers the host when the host ends with it (after a leading `.` is
/// trimmed); proxy URLs other than `http://` or `https://` are ignored.
pub(crate) fn proxy_for(gateway: Option<Ipv4Addr>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |name: &str| env(&name.to_ascii_lowercase()).or_else(|| env(&name.to_ascii_uppercase()));
    let usable = |v: Option<String>| {
        v.map(|v| v.trim().to_owned())
            .filter(|v| v.starts_with("http://") || v.starts_with("https://"))
    };
    let proxy = usable(get("http_proxy")).or_else(|| usable(get("all_proxy")))?;
    if let Some(no_proxy) = get("no_proxy") {
        if no_proxy == "*" {
            return None;
        }
        if let Some(gateway) = gateway
            && no_proxy
                .split(',')
                .map(|s| s.trim().trim_start_matches('.').to_lowercase())
                .any(|pattern| gateway.to_string().ends_with(&pattern))
        {
            return None;
        }
    }
    Some(proxy)
}

/// Logs a warning when requests to `gateway` would go through a proxy.
pub(crate) fn warn_if_proxied(gateway: Ipv4Addr) {
    if let Some(proxy) = proxy_for(Some(gateway), |name| std::env::var(name).ok()) {
        log::warn!(
            "upnp: an HTTP proxy is set in the environment ({proxy}) and igd-next's HTTP client (attohttpc) \
             will send the requests for the gateway {gateway} to it, where they fail or reach the wrong device; \
             add the gateway to no_proxy (e.g. no_proxy={gateway}) or unset http_proxy/all_proxy"
        );
    }
}

/// After a search found nothing: logs a warning when a proxy is set (the search's requests for
/// gateways' descriptions go through it too, unless `no_proxy` names them).
pub(crate) fn warn_if_search_proxied() {
    if let Some(proxy) = proxy_for(None, |name| std::env::var(name).ok()) {
        log::warn!(
            "upnp: an HTTP proxy is set in the environment ({proxy}): igd-next's HTTP client (attohttpc) sends \
             its requests for gateways not listed in no_proxy to it, which may be why no gateway was found; add \
             the gateway's address to no_proxy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn proxy(vars: &[(&str, &str)]) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        proxy_for(Some(Ipv4Addr::new(192, 168, 1, 1)), |name| vars.get(name).cloned())
    }

    #[test]
    fn proxies_are_found_as_attohttpc_finds_them() {
        assert_eq!(proxy(&[]), None);
        assert_eq!(
            proxy(&[("http_proxy", "http://p:3128")]).as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(
            proxy(&[("HTTP_PROXY", "http://p:3128")]).as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(
            proxy(&[("ALL_PROXY", "http://a:3128")]).as_deref(),
            Some("http://a:3128")
        );
        assert_eq!(proxy(&[("http_proxy", "socks5://p:1080")]), None);
        assert_eq!(proxy(&[("http_proxy", "")]), None);
    }

    #[test]
    fn no_proxy_covers_the_gateway() {
        let p = ("http_proxy", "http://p:3128");
        assert_eq!(proxy(&[p, ("no_proxy", "*")]), None);
        assert_eq!(proxy(&[p, ("NO_PROXY", "localhost,192.168.1.1")]), None);
        assert_eq!(proxy(&[p, ("no_proxy", "example.com, .1.1")]), None);
        assert!(proxy(&[p, ("no_proxy", "example.com,10.0.0.1")]).is_some());
        let any = |no_proxy: &str| {
            proxy_for(None, |name| match name {
                "http_proxy" => Some("http://p:3128".to_owned()),
                "no_proxy" => Some(no_proxy.to_owned()),
                _ => None,
            })
        };
        assert!(any("192.168.1.1").is_some());
        assert!(any("*").is_none());
    }
}
