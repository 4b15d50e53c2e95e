//! The facade's [`MappingContext`] and its [`Builder`]: a context is made with its techniques,
//! their settings and servers in one go, and the port-mapping techniques share the context's
//! gateway arbiter by construction. Configuration flows one way: a program (or the command
//! line) describes what it wants, and the builder makes it; nothing is edited afterwards.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use natt_core::arbiter::GatewayArbiter;
use natt_core::{Error, HolePunchServerAddr, MappingTechnique};

#[cfg(feature = "pcp")]
use natt_pcp::{PcpConfig, PcpTechnique};
#[cfg(feature = "simple")]
use natt_simple::SimpleTechnique;
#[cfg(feature = "stun")]
use natt_stun::{FilterWindow, StunTechnique};
#[cfg(feature = "turn")]
use natt_turn::TurnTechnique;
#[cfg(feature = "upnp")]
use natt_upnp::{UpnpConfig, UpnpTechnique};

/// The techniques a program maps sockets with, their servers and caches.
///
/// It dereferences to [`natt::core::MappingContext`](natt_core::MappingContext), so it is
/// accepted wherever that is (such as [`MappedUdpSocket::new`](crate::MappedUdpSocket::new))
/// and has all its methods.
///
/// The port-mapping techniques (UPnP, PCP and NAT-PMP) share a [`GatewayArbiter`], so that
/// only one of them maps a given port on a given router: on a router that speaks several of
/// these protocols, two mappings of one port would fight over one forwarding rule. The
/// [`Builder`] makes them so; a technique added by hand is made `with_arbiter(mc.arbiter())`
/// to take part.
#[derive(Debug)]
pub struct MappingContext {
    inner: natt_core::MappingContext,
    arbiter: Arc<GatewayArbiter>,
    #[cfg(feature = "upnp")]
    upnp: Option<Arc<UpnpTechnique>>,
}

impl MappingContext {
    /// A context with every technique this build of natt has (see the crate's features), with
    /// their default settings and no server. Nothing is searched for on the network until a
    /// socket is mapped. [`MappingContext::builder`] chooses techniques, settings and servers.
    ///
    /// ```
    /// let mc = natt::MappingContext::new()?;
    /// # #[cfg(feature = "simple")]
    /// assert!(mc.technique_names().contains(&"simple".to_string()));
    /// # Ok::<(), natt::Error>(())
    /// ```
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A builder of a context: every technique of this build, with default settings, until
    /// told otherwise.
    ///
    /// ```
    /// use natt::{HolePunchServerAddr, MappingContext};
    /// use std::time::Duration;
    /// let mc = MappingContext::builder()
    ///     .timeout(Duration::from_secs(2))
    ///     .server(HolePunchServerAddr::parse_stun("stun.example.org")?)
    ///     .no_upnp()
    ///     .build()?;
    /// assert!(!mc.technique_names().contains(&"upnp".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A context with no technique at all (sockets map to their local addresses only).
    pub fn empty() -> Self {
        MappingContext {
            inner: natt_core::MappingContext::empty(),
            arbiter: GatewayArbiter::new(),
            #[cfg(feature = "upnp")]
            upnp: None,
        }
    }

    /// Sets how long mapping a socket may take.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        MappingContext {
            inner: self.inner.with_timeout(timeout),
            ..self
        }
    }

    /// The arbiter the port-mapping techniques of this context share.
    pub fn arbiter(&self) -> Arc<GatewayArbiter> {
        Arc::clone(&self.arbiter)
    }

    /// The context's UPnP technique, when it has one (for reports on the gateway it found).
    #[cfg(feature = "upnp")]
    pub fn upnp(&self) -> Option<Arc<UpnpTechnique>> {
        self.upnp.clone()
    }

    /// The core context.
    pub fn into_inner(self) -> natt_core::MappingContext {
        self.inner
    }
}

impl Deref for MappingContext {
    type Target = natt_core::MappingContext;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// What a [`MappingContext`] is to be made with: which techniques, their settings, the servers
/// and the mapping timeout. Made by [`MappingContext::builder`].
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    timeout: Option<Duration>,
    servers: Vec<HolePunchServerAddr>,
    #[cfg(feature = "simple")]
    simple: bool,
    #[cfg(feature = "stun")]
    stun: bool,
    #[cfg(feature = "stun")]
    stun_filter_window: FilterWindow,
    #[cfg(feature = "upnp")]
    upnp: Option<UpnpConfig>,
    #[cfg(feature = "upnp")]
    upnp_gateways: Vec<String>,
    #[cfg(feature = "pcp")]
    pcp: Option<PcpConfig>,
    #[cfg(feature = "turn")]
    turn: Option<natt_turn::Config>,
    techniques: Vec<Arc<dyn MappingTechnique>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own: Vec<&str> = self.techniques.iter().map(|t| t.name()).collect();
        f.debug_struct("Builder")
            .field("timeout", &self.timeout)
            .field("servers", &self.servers)
            .field("own techniques", &own)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            timeout: None,
            servers: Vec::new(),
            #[cfg(feature = "simple")]
            simple: true,
            #[cfg(feature = "stun")]
            stun: true,
            #[cfg(feature = "stun")]
            stun_filter_window: FilterWindow::DEFAULT,
            #[cfg(feature = "upnp")]
            upnp: Some(UpnpConfig::default()),
            #[cfg(feature = "upnp")]
            upnp_gateways: Vec::new(),
            #[cfg(feature = "pcp")]
            pcp: Some(PcpConfig::default()),
            #[cfg(feature = "turn")]
            turn: Some(natt_turn::Config::default()),
            techniques: Vec::new(),
        }
    }
}

impl Builder {
    /// How long mapping a socket may take (default 3 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A server for the techniques (STUN, simple, a PCP or UPnP gateway, ...); [`build`]
    /// fails if no technique of the context takes it.
    ///
    /// [`build`]: Builder::build
    pub fn server(mut self, server: HolePunchServerAddr) -> Self {
        self.servers.push(server);
        self
    }

    /// Servers, as [`server`](Builder::server).
    pub fn servers(mut self, servers: impl IntoIterator<Item = HolePunchServerAddr>) -> Self {
        self.servers.extend(servers);
        self
    }

    /// Leaves out the simple protocol.
    #[cfg(feature = "simple")]
    pub fn no_simple(mut self) -> Self {
        self.simple = false;
        self
    }

    /// Leaves out STUN.
    #[cfg(feature = "stun")]
    pub fn no_stun(mut self) -> Self {
        self.stun = false;
        self
    }

    /// How long STUN's filtering check waits for the answer from an RFC 5780 server's other
    /// address ([`FilterWindow::DEFAULT`], 1 round trip + 5 ms, unless set): see
    /// [`StunTechnique::with_filter_window`]. A longer window makes the `nat_restricted`
    /// verdict surer, and every mapping behind a NAT that filters waits all of it.
    #[cfg(feature = "stun")]
    pub fn stun_filter_window(mut self, window: FilterWindow) -> Self {
        self.stun_filter_window = window;
        self
    }

    /// Sets UPnP's settings.
    #[cfg(feature = "upnp")]
    pub fn upnp(mut self, config: UpnpConfig) -> Self {
        self.upnp = Some(config);
        self
    }

    /// A UPnP gateway's root description URL, read instead of searching for a gateway (see
    /// [`UpnpTechnique::add_gateway`]); [`build`](Builder::build) fails on a bad URL.
    #[cfg(feature = "upnp")]
    pub fn upnp_gateway(mut self, url: impl Into<String>) -> Self {
        self.upnp_gateways.push(url.into());
        self
    }

    /// Leaves out UPnP.
    #[cfg(feature = "upnp")]
    pub fn no_upnp(mut self) -> Self {
        self.upnp = None;
        self
    }

    /// Sets PCP's (and NAT-PMP's) settings.
    #[cfg(feature = "pcp")]
    pub fn pcp(mut self, config: PcpConfig) -> Self {
        self.pcp = Some(config);
        self
    }

    /// Leaves out PCP and NAT-PMP.
    #[cfg(feature = "pcp")]
    pub fn no_pcp(mut self) -> Self {
        self.pcp = None;
        self
    }

    /// Sets how TURN allocations are made (the lifetime asked for, the retransmission
    /// timeout). TURN allocates only where a server is given
    /// ([`HolePunchServerAddr::Turn`], [`HolePunchServerAddr::parse_turn`]).
    #[cfg(feature = "turn")]
    pub fn turn(mut self, config: natt_turn::Config) -> Self {
        self.turn = Some(config);
        self
    }

    /// Leaves out TURN.
    #[cfg(feature = "turn")]
    pub fn no_turn(mut self) -> Self {
        self.turn = None;
        self
    }

    /// Adds a technique of one's own (after natt's); a port-mapping one is made
    /// `with_arbiter` of the context's arbiter by the caller, see [`MappingContext`].
    pub fn technique(mut self, technique: Arc<dyn MappingTechnique>) -> Self {
        self.techniques.push(technique);
        self
    }

    /// The context: the techniques chosen, in the order simple, STUN, UPnP, PCP, TURN, then one's
    /// own, with the servers given. An error names a server no technique takes, or a bad UPnP
    /// gateway URL.
    pub fn build(self) -> Result<MappingContext, Error> {
        let mut mc = MappingContext::empty();
        if let Some(timeout) = self.timeout {
            mc = mc.with_timeout(timeout);
        }
        #[cfg(feature = "simple")]
        if self.simple {
            mc.add_technique(Arc::new(SimpleTechnique::new()));
        }
        #[cfg(feature = "stun")]
        if self.stun {
            mc.add_technique(Arc::new(
                StunTechnique::new().with_filter_window(self.stun_filter_window),
            ));
        }
        #[cfg(feature = "upnp")]
        if let Some(config) = self.upnp {
            let upnp = Arc::new(UpnpTechnique::with_config(config).with_arbiter(mc.arbiter()));
            for url in &self.upnp_gateways {
                upnp.add_gateway(url)
                    .map_err(|e| Error::Config(format!("UPnP gateway {url}: {e}")))?;
            }
            mc.add_technique(Arc::clone(&upnp) as Arc<dyn MappingTechnique>);
            mc.upnp = Some(upnp);
        }
        #[cfg(feature = "pcp")]
        if let Some(config) = self.pcp {
            mc.add_technique(Arc::new(PcpTechnique::with_config(config).with_arbiter(mc.arbiter())));
        }
        #[cfg(feature = "turn")]
        if let Some(config) = self.turn {
            mc.add_technique(Arc::new(TurnTechnique::with_config(config)));
        }
        for t in self.techniques {
            mc.add_technique(t);
        }
        for server in self.servers {
            if !mc.add_server(server.clone()) {
                return Err(Error::Config(format!(
                    "no technique of this context takes the server {server:?}"
                )));
            }
        }
        Ok(mc)
    }
}
