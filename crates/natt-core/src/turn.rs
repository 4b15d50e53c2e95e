//! A TURN relay as a server of [`HolePunchServerAddr::Turn`](crate::HolePunchServerAddr::Turn):
//! its transport ([`TurnTransport`]), the long-term credentials it wants ([`TurnCredentials`],
//! whose password never shows in `Debug` output or logs), and its URI, `turn:HOST[:PORT]
//! [?transport=udp|tcp]` (RFC 7065; default port [`TURN_PORT`], 3478).
//!
//! ```
//! use natt_core::turn::{TurnCredentials, TurnTransport, parse_turn_uri};
//! let (addr, transport) = parse_turn_uri("turn:203.0.113.30?transport=tcp").unwrap();
//! assert_eq!((addr.to_string(), transport), ("203.0.113.30:3478".to_string(), TurnTransport::Tcp));
//! let c = TurnCredentials::new("alice", "secret");
//! assert!(!format!("{c:?}").contains("secret"));
//! ```

use std::fmt;
use std::net::SocketAddr;

use crate::names::{ServerName, ServerNameError};

/// TURN's default port (RFC 8656), over UDP and TCP.
pub const TURN_PORT: u16 = 3478;

/// How the client reaches the TURN server. Either way the relayed address is a UDP one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TurnTransport {
    /// UDP to the server (`?transport=udp`, the default).
    #[default]
    Udp,
    /// TCP to the server (`?transport=tcp`): for networks that let no UDP out.
    Tcp,
}

impl TurnTransport {
    /// `"udp"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TurnTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Long-term credentials for a TURN server (RFC 8489 section 9.2): a user name and a
/// password. `Debug` shows the user name only; the password is reachable through
/// [`password`](Self::password) alone, for the message integrity key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TurnCredentials {
    username: String,
    password: String,
}

impl TurnCredentials {
    /// Credentials of `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        TurnCredentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password (for the message integrity key; never log it).
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a TURN URI was refused.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnUriError {
    /// It does not start with `turn:` (`turns:`, TURN over TLS, is not supported).
    #[error("{0:?}: not a TURN URI (expected turn:HOST[:PORT][?transport=udp|tcp])")]
    Scheme(String),
    /// The host or port is bad.
    #[error(transparent)]
    Address(#[from] ServerNameError),
    /// The host is a name: natt takes a TURN server by IP address.
    #[error("{0:?}: give the TURN server by IP address, not by name")]
    Name(String),
    /// A query other than `transport=udp` or `transport=tcp`.
    #[error("{0:?}: unknown query (expected ?transport=udp or ?transport=tcp)")]
    Query(String),
}

crate::debug_as_display!(TurnUriError);

/// Parses `turn:HOST[:PORT][?transport=udp|tcp]` (RFC 7065): the server's address (port 3478
/// unless given; an IPv6 address in brackets) and transport (UDP unless given).
pub fn parse_turn_uri(uri: &str) -> Result<(SocketAddr, TurnTransport), TurnUriError> {
    let rest = uri
        .strip_prefix("turn:")
        .ok_or_else(|| TurnUriError::Scheme(uri.to_owned()))?;
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let transport = match query {
        None => TurnTransport::Udp,
        Some("transport=udp") => TurnTransport::Udp,
        Some("transport=tcp") => TurnTransport::Tcp,
        Some(q) => return Err(TurnUriError::Query(q.to_owned())),
    };
    let name = ServerName::parse(hostport, TURN_PORT)?;
    let addr = name.socket_addr().ok_or_else(|| TurnUriError::Name(uri.to_owned()))?;
    Ok((addr, transport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let p = |s: &str| parse_turn_uri(s).map(|(a, t)| (a.to_string(), t));
        assert_eq!(
            p("turn:203.0.113.30"),
            Ok(("203.0.113.30:3478".into(), TurnTransport::Udp))
        );
        assert_eq!(
            p("turn:203.0.113.30:5000?transport=udp"),
            Ok(("203.0.113.30:5000".into(), TurnTransport::Udp))
        );
        assert_eq!(
            p("turn:[2001:db8::1]?transport=tcp"),
            Ok(("[2001:db8::1]:3478".into(), TurnTransport::Tcp))
        );
        assert!(matches!(p("stun:1.2.3.4"), Err(TurnUriError::Scheme(_))));
        assert!(matches!(p("turns:1.2.3.4"), Err(TurnUriError::Scheme(_))));
        assert!(matches!(p("turn:relay.example.org"), Err(TurnUriError::Name(_))));
        assert!(matches!(p("turn:1.2.3.4?transport=sctp"), Err(TurnUriError::Query(_))));
        assert!(matches!(p("turn:1.2.3.4:0"), Err(TurnUriError::Address(_))));
        assert!(matches!(p("turn:"), Err(TurnUriError::Address(_))));
    }

    #[test]
    fn the_password_is_never_shown() {
        let c = TurnCredentials::new("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
        let server = crate::HolePunchServerAddr::Turn {
            addr: "203.0.113.30:3478".parse().unwrap(),
            transport: TurnTransport::Udp,
            credentials: c,
        };
        assert!(!format!("{server:?}").contains("hunter2"));
    }
}
