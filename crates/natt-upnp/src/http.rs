//! The HTTP requests natt-upnp sends to a gateway (description GETs, SOAP POSTs), over
//! `attohttpc`: never through a proxy (the gateway is on the LAN; an `http_proxy` set for the
//! internet would send the requests elsewhere), never following redirects (a gateway could
//! send natt anywhere), and reading at most a given number of bytes of the answer.

use std::io::Read;

use crate::error::UpnpError;

/// A request to `url` with no proxy and no redirects (timeouts are the caller's to set).
pub(crate) fn request(
    method: attohttpc::Method,
    url: &str,
    what: &str,
) -> Result<attohttpc::RequestBuilder, UpnpError> {
    Ok(attohttpc::RequestBuilder::try_new(method, url)
        .map_err(|e| UpnpError::request_failed(what, e))?
        .follow_redirects(false)
        .proxy_settings(attohttpc::ProxySettings::builder().build()))
}

/// The whole of `body` if it is at most `limit` bytes, read without keeping more than that
/// (plus one byte); a longer one is [`UpnpError::TooLarge`].
pub(crate) fn read_body(body: impl Read, limit: usize, what: &str) -> Result<Vec<u8>, UpnpError> {
    let mut bytes = Vec::new();
    body.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| UpnpError::io(what, e))?;
    if bytes.len() > limit {
        return Err(UpnpError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_are_read_up_to_their_limit() {
        assert_eq!(read_body(&b"abcd"[..], 4, "x").unwrap(), b"abcd");
        let e = read_body(&b"abcde"[..], 4, "reading x").unwrap_err();
        assert!(matches!(e, UpnpError::TooLarge { limit: 4, .. }), "{e}");
        assert_eq!(e.to_string(), "reading x: response larger than 4 bytes");
    }
}
