//! Loading a gateway from its root description URL, without an SSDP search: read the
//! description and make the [`Gateway`] it describes, with the actions' argument lists the
//! specifications fix (see [`crate::description`], which also
//! does the parsing). Here is the HTTP GET, bounded by the caller's deadline (see
//! [`crate::bounded`]) and by [`MAX_DESCRIPTION_BYTES`].
//!
//! This is how a gateway given by URL ([`crate::UpnpTechnique::add_gateway`], `NATT_UPNP_IGD`)
//! is reached, as `upnpc -u` does: an SSDP search first would cost the gateway's answer delay
//! (up to the search's MX; miniupnpd answers in about 50 ms), and reading the service's
//! description (SCPD) as well would cost another request.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use url::Url;

use crate::bounded;
use crate::description::{self, MAX_DESCRIPTION_BYTES};
use crate::error::{UpnpError, shorten};
use crate::gateway::Gateway;
use crate::http;

/// The longest wait for a gateway's HTTP port to accept a connection (and at most half the
/// time left): a URL whose port drops packets leaves time to search for the gateway.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The gateway whose root description is at `url`, by `deadline`.
pub(crate) fn load(url: &str, deadline: Instant) -> Result<Gateway, UpnpError> {
    let bad = |why: &str| UpnpError::BadUrl {
        url: shorten(url, 100),
        why: why.to_owned(),
    };
    let parsed: Url = url.trim().parse().map_err(|e: url::ParseError| bad(&e.to_string()))?;
    description::http_ipv4(&parsed).map_err(bad)?;
    let xml = get(&parsed, deadline)?;
    let found = description::parse_description(&xml)?;
    let at = description::resolve(&parsed, &found)?;
    // IGD:2's IPv6 firewall control, resolved as the WAN service's control URL is.
    let firewall = description::firewall_control(&xml).ok().flatten().and_then(|control| {
        let d = description::DeviceDescription {
            control_url: control,
            ..found.clone()
        };
        description::resolve(&parsed, &d).ok().map(|e| e.control)
    });
    Ok(Gateway::new(at.addr, &at.root, &at.control, found.service_type)?.with_firewall(firewall))
}

/// The body of `url` (an HTTP GET on a worker thread, no proxy, no redirects), by `deadline`.
fn get(url: &Url, deadline: Instant) -> Result<Vec<u8>, UpnpError> {
    let what = format!("reading {}", shorten(url.as_str(), 100));
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let connect = CONNECT_TIMEOUT.min(remaining / 2).max(Duration::from_millis(1));
    let request = http::request(attohttpc::Method::GET, url.as_str(), &what)?
        // The worker thread ends by the deadline too (plus a little).
        .connect_timeout(connect)
        .read_timeout(remaining)
        .timeout(remaining);
    let worker_what = what.clone();
    bounded::call(
        &what,
        deadline,
        move || {
            let response = request.send().map_err(|e| match e.kind() {
                // Before the deadline, a timeout is the connect timeout's: nothing there.
                attohttpc::ErrorKind::Io(io)
                    if matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
                        && Instant::now() < deadline =>
                {
                    UpnpError::Io {
                        what: format!("{worker_what}: no connection within {} ms", connect.as_millis()),
                        source: std::io::Error::from(ErrorKind::TimedOut),
                    }
                }
                _ => UpnpError::request_failed(&worker_what, e),
            })?;
            let (status, _, body) = response.split();
            if !status.is_success() {
                return Err(UpnpError::HttpStatus {
                    what: worker_what,
                    status: status.as_u16(),
                });
            }
            http::read_body(body, MAX_DESCRIPTION_BYTES, &worker_what)
        },
        drop,
    )?
}

/// The gateway at the first of `urls` that loads, trying them all at once (one thread each
/// when there are several); all failing, the error of each.
pub(crate) fn load_first(urls: &[String], deadline: Instant) -> Result<Gateway, Vec<UpnpError>> {
    if let [url] = urls {
        return load(url, deadline).map_err(|e| vec![e]);
    }
    bounded::first_ok(
        urls.to_vec(),
        "natt-upnp-load",
        "reading the descriptions of the gateways given",
        deadline,
        move |url: String| load(&url, deadline),
    )
}

/// True when `e` says that nothing answers at a gateway URL (refused, unreachable, no
/// connection within [`CONNECT_TIMEOUT`], not found): the gateway may have moved, and a
/// search may find it.
pub(crate) fn nobody_there(e: &UpnpError) -> bool {
    matches!(e, UpnpError::Io { .. } | UpnpError::HttpStatus { .. })
}
