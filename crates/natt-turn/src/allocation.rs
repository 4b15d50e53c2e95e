//! [`Allocation`]: a TURN client (RFC 8656) without sockets, threads or clock (a protocol core:
//! fed datagrams, the time and a random generator; drivers in [`crate::relay`] and
//! [`crate::technique`]).
//!
//! It allocates a UDP relayed address with long-term credentials: the first Allocate goes
//! without them, the server's 401 names the realm and a nonce, and the request is sent again
//! with MESSAGE-INTEGRITY; a 438 (stale nonce) is answered with the new nonce, at most
//! [`MAX_STALE_RETRIES`] times a request. Responses to authenticated requests that carry a
//! MESSAGE-INTEGRITY made with another key are ignored. Then it keeps the allocation:
//!
//! - Refresh at half the granted lifetime, sooner again after a failure
//!   ([`natt_core::lease::Schedule`]); [`delete`](Allocation::delete) sends a Refresh with
//!   lifetime 0.
//! - Permissions (CreatePermission) refreshed [`PERMISSION_REFRESH`] after they were made
//!   (they last 5 minutes), channels (ChannelBind) [`CHANNEL_REFRESH`] after (they last 10).
//! - Data to a peer goes as a Send indication until its channel is bound, then as ChannelData
//!   ([`crate::channel_data`], padded over TCP); from the server come Data indications and
//!   ChannelData, decoded by [`handle_datagram`](Allocation::handle_datagram) into the peer
//!   and its payload.
//!
//! Requests are retransmitted on RFC 8489's schedule over UDP ([`natt_core::retransmit`]),
//! sent once over TCP, and given up on at the schedule's end ([`TurnError::Silent`]).

#![deny(clippy::disallowed_methods)] // a protocol core: see clippy.toml

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use natt_core::Transmit;
use natt_core::lease::{Next, Schedule as LeaseSchedule};
use natt_core::retransmit::{Params, Schedule};
use natt_core::turn::{TurnCredentials, TurnTransport};
use rand::Rng;
use rand::rngs::StdRng;

use crate::channel_data::{self, Kind, MAX_CHANNEL, MIN_CHANNEL};
use crate::error::TurnError;
use crate::message::{self, Auth, DecodeError, Integrity, Request, Response, ServerMessage, Success};

/// How often one request is sent again with a fresh nonce after 438 Stale Nonce.
pub const MAX_STALE_RETRIES: u8 = 3;
/// A permission is refreshed this long after it was made or last refreshed (it lasts 300 s).
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// A channel binding is refreshed this long after it was made or last refreshed (it lasts
/// 600 s).
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// The least time between two refreshes of the allocation, however short its lifetime.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// The most connection attempts (RFC 6062) kept until they are taken; older ones are dropped.
pub const MAX_CONNECTION_ATTEMPTS: usize = 64;
/// The lifetime asked for by default (RFC 8656's default, 10 minutes).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// How an allocation is asked for and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The lifetime asked for in Allocate and Refresh. The allocation is refreshed at half of
    /// this or of the lifetime granted, whichever is shorter.
    pub lifetime: Duration,
    /// The initial retransmission timeout over UDP (RFC 8489: 500 ms).
    pub rto: Duration,
    /// Relay TCP (RFC 6062: Connect, ConnectionAttempt, ConnectionBind) instead of UDP. Needs
    /// TCP to the server; data then goes on data connections, not through this core.
    pub tcp_relay: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lifetime: DEFAULT_LIFETIME,
            rto: natt_stun::transaction::DEFAULT_RTO,
            tcp_relay: false,
        }
    }
}

/// The allocation the server made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    /// The relayed transport address: where peers send to reach us.
    pub relayed: SocketAddr,
    /// Where the server sees us (XOR-MAPPED-ADDRESS), if it said.
    pub mapped: Option<SocketAddr>,
    /// The lifetime granted.
    pub lifetime: Duration,
}

/// Where an allocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Allocate sent, no allocation yet.
    Allocating,
    /// Allocated (and kept alive).
    Allocated(Allocated),
    /// Refresh with lifetime 0 sent.
    Deleting,
    /// Deleted (or never made and given up: see [`State::Failed`]).
    Deleted,
    /// The allocation failed or was lost.
    Failed(TurnError),
}

/// Something that happened, for the driver's logs and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The allocation was made.
    Allocated(Allocated),
    /// The allocation was refreshed for this lifetime.
    Refreshed(Duration),
    /// A permission for this peer IP was installed or refreshed.
    Permission(IpAddr),
    /// A channel was bound (or its binding refreshed).
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// A request on the allocation (Refresh, CreatePermission, ChannelBind) failed.
    Failed(TurnError),
    /// The allocation was deleted.
    Deleted,
}

/// What a datagram from the server was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Not from this allocation's server: someone else's (direct traffic on a shared socket).
    NotFromServer,
    /// A response to one of our requests, taken in.
    Control,
    /// Data from `peer`, through the relay.
    Data {
        /// The peer that sent it (to the relayed address).
        peer: SocketAddr,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// From the server, but nothing to act on (garbage, an unknown channel, a response to no
    /// request of ours, a response with a bad MESSAGE-INTEGRITY).
    Ignored,
}

struct Pending {
    request: Request,
    txid: [u8; 12],
    bytes: Vec<u8>,
    schedule: Schedule,
    authenticated: bool,
    stale_retries: u8,
}

struct Permission {
    ip: IpAddr,
    /// When to refresh it; `None` while a CreatePermission for it is under way.
    refresh_at: Option<Instant>,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    bound: bool,
    /// When to refresh it; `None` while a ChannelBind for it is under way.
    refresh_at: Option<Instant>,
}

/// A TURN allocation and what it holds (see the module documentation).
pub struct Allocation {
    server: SocketAddr,
    transport: TurnTransport,
    credentials: TurnCredentials,
    config: Config,
    auth: Option<Auth>,
    state: State,
    pending: Vec<Pending>,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    refresh: Option<LeaseSchedule>,
    /// When `refresh` next renews (what it said last).
    refresh_at: Option<Instant>,
    /// RFC 6062: Connects under way or answered, by peer.
    connects: Vec<(SocketAddr, Option<Result<u32, TurnError>>)>,
    /// RFC 6062: peers that connected to the relayed address, with their CONNECTION-IDs.
    attempts: VecDeque<(SocketAddr, u32)>,
    events: VecDeque<Event>,
    rng: StdRng,
}

impl std::fmt::Debug for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocation")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("credentials", &self.credentials)
            .field("state", &self.state)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Allocation {
    /// Starts allocating on `server`, reached over `transport`, with `credentials`: the first
    /// Allocate is due at `now`. Transaction ids come from `rng`.
    pub fn new(
        server: SocketAddr,
        transport: TurnTransport,
        credentials: TurnCredentials,
        config: Config,
        now: Instant,
        rng: StdRng,
    ) -> Self {
        let mut a = Allocation {
            server,
            transport,
            credentials,
            config,
            auth: None,
            state: State::Allocating,
            pending: Vec::new(),
            permissions: Vec::new(),
            channels: Vec::new(),
            refresh: None,
            refresh_at: None,
            connects: Vec::new(),
            attempts: VecDeque::new(),
            events: VecDeque::new(),
            rng,
        };
        if config.tcp_relay && transport == TurnTransport::Udp {
            a.state = State::Failed(TurnError::NotSupported(
                "TCP relaying (RFC 6062) needs TCP to the server",
            ));
            return a;
        }
        let lifetime = a.lifetime_secs();
        a.start(
            Request::Allocate {
                lifetime,
                tcp: config.tcp_relay,
            },
            now,
            0,
        );
        a
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// How the server is reached.
    pub fn transport(&self) -> TurnTransport {
        self.transport
    }

    /// Where the allocation stands.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The allocation, while it is held.
    pub fn allocated(&self) -> Option<Allocated> {
        match self.state {
            State::Allocated(a) => Some(a),
            _ => None,
        }
    }

    /// The relayed address, while the allocation is held.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.allocated().map(|a| a.relayed)
    }

    /// The outcome of allocating: `None` while Allocate is under way.
    pub fn allocate_result(&self) -> Option<Result<Allocated, TurnError>> {
        match &self.state {
            State::Allocating => None,
            State::Allocated(a) => Some(Ok(*a)),
            State::Failed(e) => Some(Err(e.clone())),
            State::Deleting | State::Deleted => Some(Err(TurnError::NoAllocation(self.server))),
        }
    }

    /// Whether this is a TCP relay (RFC 6062).
    pub fn is_tcp_relay(&self) -> bool {
        self.config.tcp_relay
    }

    /// True when no request is under way.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How long an allocation granted `lifetime` is kept before it is refreshed again: the
    /// lifetime granted or the one asked for, whichever is shorter (a server may grant more
    /// than asked: coturn grants at least 10 minutes), refreshed at half of it.
    fn kept(&self, lifetime: Duration) -> Duration {
        self.config.lifetime.min(lifetime)
    }

    fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX).max(1)
    }

    fn retransmit(&self) -> Params {
        match self.transport {
            TurnTransport::Udp => natt_stun::transaction::retransmit(self.config.rto),
            // A stream delivers or fails: one send, then RFC 8489's Ti (39.5 s) for the answer.
            TurnTransport::Tcp => Params {
                max_sends: Some(1),
                last_wait: Some(Duration::from_millis(39_500)),
                ..Params::new(Duration::from_millis(39_500), natt_core::retransmit::Factor::CONSTANT)
            },
        }
    }

    /// Sends `request` (authenticated once the server named its realm), due at `now`.
    fn start(&mut self, request: Request, now: Instant, stale_retries: u8) {
        let txid: [u8; 12] = self.rng.random();
        match message::encode_request(txid, &request, self.auth.as_ref()) {
            Ok(bytes) => self.pending.push(Pending {
                authenticated: self.auth.is_some(),
                request,
                txid,
                bytes,
                schedule: Schedule::new(self.retransmit(), now),
                stale_retries,
            }),
            Err(e) => self.fail(now, &request, e),
        }
    }

    fn is_pending(&self, f: impl Fn(&Request) -> bool) -> bool {
        self.pending.iter().any(|p| f(&p.request))
    }

    /// The next datagram to send to the server at `now`: a request that is due (acting first
    /// on the timers: refreshes due, requests given up).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.handle_timeout(now);
        let p = self.pending.iter_mut().find(|p| p.schedule.is_due(now))?;
        p.schedule.on_sent(now);
        Some(Transmit {
            destination: self.server,
            payload: p.bytes.clone(),
        })
    }

    /// When the allocation next needs [`poll_transmit`](Self::poll_transmit): a
    /// retransmission, a request to give up on, or a refresh; `None` when nothing is ahead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.pending.iter().filter_map(|p| p.schedule.poll_timeout());
        let held = matches!(self.state, State::Allocated(_));
        let refresh = self
            .refresh_at
            .filter(|_| held && !self.is_pending(|r| matches!(r, Request::Refresh { .. })));
        let permissions = self.permissions.iter().filter_map(|p| p.refresh_at).filter(|_| held);
        let channels = self
            .channels
            .iter()
            .filter(|c| c.bound)
            .filter_map(|c| c.refresh_at)
            .filter(|_| held);
        requests.chain(refresh).chain(permissions).chain(channels).min()
    }

    /// Acts on the time `now`: requests given up on, refreshes that fall due (queued for
    /// [`poll_transmit`](Self::poll_transmit), which does this too).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Requests given up on.
        let (expired, kept): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.schedule.is_exhausted(now));
        self.pending = kept;
        for p in expired {
            let e = TurnError::Silent {
                server: self.server,
                what: p.request.name(),
            };
            self.fail(now, &p.request, e);
        }
        if !matches!(self.state, State::Allocated(_)) {
            return;
        }
        if self.refresh.as_ref().is_some_and(|s| s.poll(now) == Next::Renew)
            && !self.is_pending(|r| matches!(r, Request::Refresh { .. }))
        {
            let lifetime = self.lifetime_secs();
            self.start(Request::Refresh { lifetime }, now, 0);
        }
        let due: Vec<SocketAddr> = self
            .permissions
            .iter_mut()
            .filter(|p| p.refresh_at.is_some_and(|at| at <= now))
            .map(|p| {
                p.refresh_at = None;
                SocketAddr::new(p.ip, 0)
            })
            .collect();
        if !due.is_empty() {
            self.start(Request::CreatePermission { peers: due }, now, 0);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter_mut()
            .filter(|c| c.bound && c.refresh_at.is_some_and(|at| at <= now))
            .map(|c| {
                c.refresh_at = None;
                (c.peer, c.number)
            })
            .collect();
        for (peer, channel) in due {
            self.start(Request::ChannelBind { peer, channel }, now, 0);
        }
    }

    /// Asks for a permission for `peer`'s IP address (if it has none yet): data from and to
    /// it passes the relay once the server installed it. Sending to it before then goes as a
    /// Send indication, which the server drops until then.
    pub fn create_permission(&mut self, peer: SocketAddr, now: Instant) -> Result<(), TurnError> {
        self.allocated().ok_or(TurnError::NoAllocation(self.server))?;
        if self.permissions.iter().any(|p| p.ip == peer.ip()) {
            return Ok(());
        }
        self.permissions.push(Permission {
            ip: peer.ip(),
            refresh_at: None,
        });
        self.start(Request::CreatePermission { peers: vec![peer] }, now, 0);
        Ok(())
    }

    /// Binds a channel to `peer` (if it has none yet; it also installs the peer's
    /// permission): once bound, data to and from it goes as ChannelData (4 bytes of overhead
    /// instead of 36). The channel number.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, TurnError> {
        self.allocated().ok_or(TurnError::NoAllocation(self.server))?;
        if let Some(c) = self.channels.iter().find(|c| c.peer == peer) {
            return Ok(c.number);
        }
        let number = (MIN_CHANNEL..=MAX_CHANNEL)
            .find(|n| !self.channels.iter().any(|c| c.number == *n))
            .ok_or(TurnError::NoChannel)?;
        self.channels.push(Channel {
            number,
            peer,
            bound: false,
            refresh_at: None,
        });
        self.start(Request::ChannelBind { peer, channel: number }, now, 0);
        Ok(number)
    }

    /// [`create_permission`](Self::create_permission) and
    /// [`bind_channel`](Self::bind_channel) for `peer` at once: data may go as Send
    /// indications as soon as the permission is installed, and as ChannelData once the channel
    /// is bound.
    pub fn add_peer(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, TurnError> {
        self.create_permission(peer, now)?;
        self.bind_channel(peer, now)
    }

    /// The channel bound to `peer`, once the server confirmed it.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.bound)
            .map(|c| c.number)
    }

    /// Whether the server installed a permission for `ip` (and it is kept).
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        self.permissions.iter().any(|p| p.ip == ip && p.refresh_at.is_some())
            || self.channels.iter().any(|c| c.peer.ip() == ip && c.bound)
    }

    /// The datagram (to the server) that carries `payload` to `peer` through the relay:
    /// ChannelData once the peer's channel is bound, else a Send indication. The peer must
    /// have been added ([`add_peer`](Self::add_peer) or
    /// [`create_permission`](Self::create_permission)).
    pub fn send_to(&mut self, peer: SocketAddr, payload: &[u8]) -> Result<Transmit, TurnError> {
        self.allocated().ok_or(TurnError::NoAllocation(self.server))?;
        if self.config.tcp_relay {
            return Err(TurnError::NotSupported(
                "a TCP relay carries data on its connections' own streams",
            ));
        }
        let bytes = if let Some(channel) = self.channel(peer) {
            let pad = self.transport == TurnTransport::Tcp;
            channel_data::encode(channel, payload, pad).map_err(|e| TurnError::Encode(e.to_string()))?
        } else if self.permissions.iter().any(|p| p.ip == peer.ip()) || self.channels.iter().any(|c| c.peer == peer) {
            message::encode_send(self.rng.random(), peer, payload)?
        } else {
            return Err(TurnError::NoPermission(peer.ip()));
        };
        Ok(Transmit {
            destination: self.server,
            payload: bytes,
        })
    }

    /// Deletes the allocation: a Refresh with lifetime 0 (due at `now`), and nothing else is
    /// sent. [`State::Deleted`] once the server answers (or the request is given up on).
    pub fn delete(&mut self, now: Instant) {
        match self.state {
            State::Allocated(_) => {
                self.pending.clear();
                self.state = State::Deleting;
                self.start(Request::Refresh { lifetime: 0 }, now, 0);
            }
            State::Allocating => {
                // An Allocate may have been made without our hearing it: delete it too, if the
                // server has our credentials' realm by now.
                self.pending.clear();
                if self.auth.is_some() {
                    self.state = State::Deleting;
                    self.start(Request::Refresh { lifetime: 0 }, now, 0);
                } else {
                    self.state = State::Deleted;
                }
            }
            _ => {}
        }
    }

    /// Takes a datagram (or stream frame) that came from `from`: a response to one of our
    /// requests, or data from a peer (see [`Input`]).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Input {
        if from != self.server {
            return Input::NotFromServer;
        }
        match channel_data::classify(data) {
            Kind::ChannelData => match channel_data::decode(data) {
                Ok((number, payload)) => match self.channels.iter().find(|c| c.number == number) {
                    Some(c) => Input::Data {
                        peer: c.peer,
                        payload: payload.to_vec(),
                    },
                    None => Input::Ignored,
                },
                Err(e) => {
                    log::debug!("turn: bad ChannelData from {from}: {e}");
                    Input::Ignored
                }
            },
            Kind::Stun => match message::decode(data) {
                Ok(ServerMessage::Data { peer, data }) => Input::Data { peer, payload: data },
                Ok(ServerMessage::ConnectionAttempt { peer, id }) if self.config.tcp_relay => {
                    if self.attempts.len() >= MAX_CONNECTION_ATTEMPTS {
                        self.attempts.pop_front();
                    }
                    self.attempts.push_back((peer, id));
                    Input::Control
                }
                Ok(ServerMessage::ConnectionAttempt { .. }) => Input::Ignored,
                Ok(ServerMessage::Response(r)) => self.on_response(now, r),
                Err(DecodeError::NotStun) | Err(_) => Input::Ignored,
            },
            Kind::Other => Input::Ignored,
        }
    }

    fn on_response(&mut self, now: Instant, r: Response) -> Input {
        let Some(i) = self.pending.iter().position(|p| p.txid == r.txid) else {
            return Input::Ignored;
        };
        let Some(p) = self.pending.get(i) else {
            return Input::Ignored;
        };
        if p.authenticated
            && let Some(auth) = &self.auth
            && r.integrity(auth) == Integrity::Invalid
        {
            log::warn!(
                "turn: ignoring a response from {} with a bad MESSAGE-INTEGRITY",
                self.server
            );
            return Input::Ignored;
        }
        let p = self.pending.remove(i);
        if r.method != p.request.method() {
            let why = format!(
                "it answered {} with a {} response",
                p.request.name(),
                message::method_name(r.method)
            );
            let e = self.not_turn(why);
            self.fail(now, &p.request, e);
            return Input::Control;
        }
        match r.result {
            Ok(s) => self.on_success(now, p.request, s),
            Err((401, _)) if !p.authenticated => match (&r.realm, &r.nonce) {
                (Some(realm), Some(nonce)) => {
                    match Auth::new(self.credentials.username(), self.credentials.password(), realm, nonce) {
                        Ok(auth) => {
                            self.auth = Some(auth);
                            self.start(p.request, now, p.stale_retries);
                        }
                        Err(e) => self.fail(now, &p.request, e),
                    }
                }
                _ => {
                    let e = self.not_turn("401 without REALM and NONCE".into());
                    self.fail(now, &p.request, e);
                }
            },
            Err((438, _)) => {
                let renewed = r.nonce.as_deref().and_then(|nonce| {
                    let auth = self.auth.as_ref()?;
                    let realm = r.realm.as_deref().unwrap_or(auth.realm());
                    Auth::new(self.credentials.username(), self.credentials.password(), realm, nonce).ok()
                });
                match renewed {
                    Some(auth) if p.stale_retries < MAX_STALE_RETRIES => {
                        self.auth = Some(auth);
                        self.start(p.request, now, p.stale_retries + 1);
                    }
                    _ => {
                        let e = TurnError::StaleNonceLoop {
                            server: self.server,
                            retries: p.stale_retries,
                        };
                        self.fail(now, &p.request, e);
                    }
                }
            }
            Err((code, reason)) => {
                let e = self.error_response(&p.request, code, reason);
                self.fail(now, &p.request, e);
            }
        }
        Input::Control
    }

    fn not_turn(&self, why: String) -> TurnError {
        TurnError::NotTurn {
            server: self.server,
            why,
        }
    }

    fn error_response(&self, request: &Request, code: u16, reason: String) -> TurnError {
        let (server, what) = (self.server, request.name());
        match code {
            400 | 420 if request.method() == message::methods::ALLOCATE => {
                self.not_turn(format!("{code} {reason} to Allocate"))
            }
            401 | 441 => TurnError::WrongCredentials {
                server,
                username: self.credentials.username().to_owned(),
                realm: self.auth.as_ref().map(|a| a.realm().to_owned()).unwrap_or_default(),
            },
            486 => TurnError::QuotaReached { server },
            437 => TurnError::AllocationMismatch { server, what },
            _ => TurnError::Refused {
                server,
                what,
                code,
                reason,
            },
        }
    }

    fn on_success(&mut self, now: Instant, request: Request, s: Success) {
        match request {
            Request::Allocate { .. } => {
                if self.state != State::Allocating {
                    return;
                }
                let Some(relayed) = s.relayed else {
                    let e = self.not_turn("Allocate succeeded without XOR-RELAYED-ADDRESS".into());
                    return self.fail(now, &request, e);
                };
                let lifetime = s.lifetime.unwrap_or(self.config.lifetime);
                let a = Allocated {
                    relayed,
                    mapped: s.mapped,
                    lifetime,
                };
                self.state = State::Allocated(a);
                let schedule = LeaseSchedule::new(now, Some(self.kept(lifetime)), MIN_REFRESH_INTERVAL);
                self.refresh_at = wait_of(&schedule, now);
                self.refresh = Some(schedule);
                self.events.push_back(Event::Allocated(a));
            }
            Request::Refresh { lifetime: 0 } => {
                self.state = State::Deleted;
                self.events.push_back(Event::Deleted);
            }
            Request::Refresh { .. } => {
                let lifetime = s.lifetime.unwrap_or(self.config.lifetime);
                if let Some(sched) = &mut self.refresh {
                    sched.renewed(now, self.config.lifetime.min(lifetime));
                    self.refresh_at = wait_of(sched, now);
                }
                if let State::Allocated(a) = &mut self.state {
                    a.lifetime = lifetime;
                }
                self.events.push_back(Event::Refreshed(lifetime));
            }
            Request::CreatePermission { peers } => {
                for peer in peers {
                    if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == peer.ip()) {
                        p.refresh_at = now.checked_add(PERMISSION_REFRESH);
                    }
                    self.events.push_back(Event::Permission(peer.ip()));
                }
            }
            Request::ChannelBind { peer, channel } => {
                if let Some(c) = self.channels.iter_mut().find(|c| c.number == channel) {
                    c.bound = true;
                    c.refresh_at = now.checked_add(CHANNEL_REFRESH);
                }
                self.events.push_back(Event::ChannelBound { peer, channel });
            }
            Request::Connect { peer } => {
                let result = s
                    .connection_id
                    .ok_or_else(|| self.not_turn("Connect succeeded without CONNECTION-ID".into()));
                if let Some(c) = self.connects.iter_mut().find(|c| c.0 == peer) {
                    c.1 = Some(result);
                }
            }
            // Sent on a data connection, never through the core's transactions.
            Request::ConnectionBind { .. } => {}
        }
    }

    /// `request` failed with `e`.
    fn fail(&mut self, now: Instant, request: &Request, e: TurnError) {
        match request {
            Request::Allocate { .. } => {
                if self.state == State::Allocating {
                    self.state = State::Failed(e);
                }
            }
            Request::Refresh { lifetime: 0 } => {
                log::debug!("turn: deleting the allocation on {}: {e}", self.server);
                self.state = State::Deleted;
                self.events.push_back(Event::Deleted);
            }
            Request::Refresh { .. } => {
                if matches!(e, TurnError::AllocationMismatch { .. }) {
                    self.state = State::Failed(e.clone());
                } else if let Some(s) = &mut self.refresh {
                    s.failed(now);
                    self.refresh_at = wait_of(s, now);
                }
                self.events.push_back(Event::Failed(e));
            }
            Request::CreatePermission { peers } => {
                self.permissions.retain(|p| !peers.iter().any(|q| q.ip() == p.ip));
                self.events.push_back(Event::Failed(e));
            }
            Request::ChannelBind { channel, .. } => {
                self.channels.retain(|c| c.number != *channel);
                self.events.push_back(Event::Failed(e));
            }
            Request::Connect { peer } => {
                if let Some(c) = self.connects.iter_mut().find(|c| c.0 == *peer) {
                    c.1 = Some(Err(e));
                }
            }
            Request::ConnectionBind { .. } => {}
        }
    }

    /// RFC 6062: asks the server to open a TCP connection to `peer` from the relayed address
    /// (the peer needs a permission: [`create_permission`](Self::create_permission)). Its
    /// outcome, the CONNECTION-ID to bind a data connection to, comes from
    /// [`connect_result`](Self::connect_result).
    pub fn connect(&mut self, peer: SocketAddr, now: Instant) -> Result<(), TurnError> {
        self.allocated().ok_or(TurnError::NoAllocation(self.server))?;
        if !self.config.tcp_relay {
            return Err(TurnError::NotSupported("Connect needs a TCP relay (RFC 6062)"));
        }
        self.connects.retain(|c| c.0 != peer);
        self.connects.push((peer, None));
        self.start(Request::Connect { peer }, now, 0);
        Ok(())
    }

    /// RFC 6062: the outcome of [`connect`](Self::connect) to `peer` (taken out), once the
    /// server answered or the request was given up on.
    pub fn connect_result(&mut self, peer: SocketAddr) -> Option<Result<u32, TurnError>> {
        let i = self.connects.iter().position(|c| c.0 == peer && c.1.is_some())?;
        self.connects.remove(i).1
    }

    /// RFC 6062: the next peer that connected to the relayed address (a ConnectionAttempt),
    /// with the CONNECTION-ID to bind a data connection to.
    pub fn take_connection_attempt(&mut self) -> Option<(SocketAddr, u32)> {
        self.attempts.pop_front()
    }

    /// RFC 6062: the ConnectionBind request for connection `id`, to send first on a new TCP
    /// connection to the server (the data connection): its transaction id and bytes.
    pub fn connection_bind(&mut self, id: u32) -> Result<([u8; 12], Vec<u8>), TurnError> {
        let txid: [u8; 12] = self.rng.random();
        let bytes = message::encode_request(txid, &Request::ConnectionBind { id }, self.auth.as_ref())?;
        Ok((txid, bytes))
    }

    /// RFC 6062: whether `response`, read from a data connection, confirms the ConnectionBind
    /// with transaction id `txid` (after it, the connection carries the peer's bytes).
    pub fn connection_bound(&self, txid: [u8; 12], response: &[u8]) -> Result<(), TurnError> {
        let request = Request::ConnectionBind { id: 0 };
        let r = match message::decode(response) {
            Ok(ServerMessage::Response(r)) if r.txid == txid && r.method == request.method() => r,
            _ => return Err(self.not_turn("no ConnectionBind response on the data connection".into())),
        };
        if let Some(auth) = &self.auth
            && r.integrity(auth) == Integrity::Invalid
        {
            return Err(self.not_turn("a ConnectionBind response with a bad MESSAGE-INTEGRITY".into()));
        }
        match r.result {
            Ok(_) => Ok(()),
            Err((code, reason)) => Err(self.error_response(&request, code, reason)),
        }
    }
}

/// When `schedule` next renews, as seen at `now`.
fn wait_of(schedule: &LeaseSchedule, now: Instant) -> Option<Instant> {
    match schedule.poll(now) {
        Next::Renew => Some(now),
        Next::Wait(at) => at,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a starting instant from the clock
mod tests {
    use super::*;
    use crate::message::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
    use crate::message::{decode_request, encode_data_indication, encode_response};
    use rand::SeedableRng;
    /// STUN's Binding method.
    const BINDING: u16 = 0x001;

    const REALM: &str = "natt.lab";

    fn server() -> SocketAddr {
        "203.0.113.30:3478".parse().unwrap()
    }
    fn relayed() -> SocketAddr {
        "203.0.113.30:50000".parse().unwrap()
    }
    fn peer() -> SocketAddr {
        "198.51.100.11:3480".parse().unwrap()
    }
    fn auth(nonce: &str) -> Auth {
        Auth::new("natt", "secret", REALM, nonce).unwrap()
    }

    fn start(transport: TurnTransport) -> (Allocation, Instant) {
        let t0 = Instant::now();
        let a = Allocation::new(
            server(),
            transport,
            TurnCredentials::new("natt", "secret"),
            Config::default(),
            t0,
            StdRng::seed_from_u64(7),
        );
        (a, t0)
    }

    /// The request sent now: its method, txid and whether it is signed with `nonce`'s key.
    fn sent(a: &mut Allocation, now: Instant, nonce: &str) -> (u16, [u8; 12], Option<bool>) {
        let t = a.poll_transmit(now).expect("a request is due");
        assert_eq!(t.destination, server());
        decode_request(&t.payload, Some(&auth(nonce))).unwrap()
    }

    fn unauthorized(txid: [u8; 12], method: u16, nonce: &str) -> Vec<u8> {
        encode_response(txid, method, Err((401, "Unauthorized")), Some((REALM, nonce)), None).unwrap()
    }

    fn success(txid: [u8; 12], method: u16, s: &Success, nonce: &str) -> Vec<u8> {
        encode_response(txid, method, Ok(s), None, Some(&auth(nonce))).unwrap()
    }

    fn allocated_success() -> Success {
        Success {
            relayed: Some(relayed()),
            mapped: Some("203.0.113.101:40000".parse().unwrap()),
            lifetime: Some(Duration::from_secs(600)),
            connection_id: None,
        }
    }

    /// Allocates through a 401: the allocation and the time.
    fn allocate(transport: TurnTransport) -> (Allocation, Instant) {
        allocate_with(transport, Config::default())
    }

    /// [`allocate`] with `config`.
    fn allocate_with(transport: TurnTransport, config: Config) -> (Allocation, Instant) {
        let t0 = Instant::now();
        let creds = TurnCredentials::new("natt", "secret");
        let mut a = Allocation::new(server(), transport, creds, config, t0, StdRng::seed_from_u64(7));
        let (m, txid, signed) = sent(&mut a, t0, "n1");
        assert_eq!(
            (m, signed),
            (ALLOCATE, None),
            "the first Allocate carries no credentials"
        );
        assert_eq!(
            a.handle_datagram(t0, server(), &unauthorized(txid, ALLOCATE, "n1")),
            Input::Control
        );
        let (m, txid, signed) = sent(&mut a, t0, "n1");
        assert_eq!((m, signed), (ALLOCATE, Some(true)), "then with MESSAGE-INTEGRITY");
        assert_eq!(
            a.handle_datagram(t0, server(), &success(txid, ALLOCATE, &allocated_success(), "n1")),
            Input::Control
        );
        assert_eq!(a.relayed(), Some(relayed()));
        assert!(matches!(a.poll_event(), Some(Event::Allocated(_))));
        (a, t0)
    }

    #[test]
    fn allocates_after_401_with_long_term_credentials() {
        let (a, _) = allocate(TurnTransport::Udp);
        let got = a.allocate_result().unwrap().unwrap();
        assert_eq!(got.mapped, Some("203.0.113.101:40000".parse().unwrap()));
        assert_eq!(got.lifetime, Duration::from_secs(600));
    }

    #[test]
    fn wrong_credentials_end_it() {
        let (mut a, t0) = start(TurnTransport::Udp);
        let (_, txid, _) = sent(&mut a, t0, "n1");
        a.handle_datagram(t0, server(), &unauthorized(txid, ALLOCATE, "n1"));
        let (_, txid, _) = sent(&mut a, t0, "n1");
        a.handle_datagram(t0, server(), &unauthorized(txid, ALLOCATE, "n2"));
        let e = a.allocate_result().unwrap().unwrap_err();
        assert!(matches!(e, TurnError::WrongCredentials { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "TURN server 203.0.113.30:3478: wrong credentials for user \"natt\" (realm \"natt.lab\")"
        );
        assert!(!format!("{e:?}{a:?}").contains("secret"));
        assert!(
            a.poll_transmit(t0 + Duration::from_secs(5)).is_none(),
            "nothing more is sent"
        );
    }

    #[test]
    fn a_stale_nonce_is_replaced_a_bounded_number_of_times() {
        let (mut a, t0) = start(TurnTransport::Udp);
        let (_, txid, _) = sent(&mut a, t0, "n0");
        a.handle_datagram(t0, server(), &unauthorized(txid, ALLOCATE, "n0"));
        let stale = |txid, nonce: &str| {
            encode_response(txid, ALLOCATE, Err((438, "Stale Nonce")), Some((REALM, nonce)), None).unwrap()
        };
        // One 438: the request goes again, signed with the new nonce, and succeeds.
        let (_, txid, _) = sent(&mut a, t0, "n0");
        a.handle_datagram(t0, server(), &stale(txid, "n1"));
        let (_, txid, signed) = sent(&mut a, t0, "n1");
        assert_eq!(signed, Some(true));
        a.handle_datagram(t0, server(), &success(txid, ALLOCATE, &allocated_success(), "n1"));
        assert!(a.relayed().is_some());
        // A server that never stops: given up after MAX_STALE_RETRIES.
        let (mut a, t0) = start(TurnTransport::Udp);
        let (_, txid, _) = sent(&mut a, t0, "n0");
        a.handle_datagram(t0, server(), &unauthorized(txid, ALLOCATE, "n0"));
        for i in 0..=MAX_STALE_RETRIES {
            let (_, txid, _) = sent(&mut a, t0, &format!("n{i}"));
            a.handle_datagram(t0, server(), &stale(txid, &format!("n{}", i + 1)));
        }
        let e = a.allocate_result().unwrap().unwrap_err();
        assert!(matches!(e, TurnError::StaleNonceLoop { retries: 3, .. }), "{e}");
    }

    #[test]
    fn quota_and_servers_that_do_not_speak_turn() {
        let answer = |code: u16, method| {
            let (mut a, t0) = start(TurnTransport::Udp);
            let (_, txid, _) = sent(&mut a, t0, "n");
            a.handle_datagram(t0, server(), &unauthorized(txid, ALLOCATE, "n"));
            let (_, txid, _) = sent(&mut a, t0, "n");
            let r = encode_response(txid, method, Err((code, "x")), None, None).unwrap();
            a.handle_datagram(t0, server(), &r);
            a.allocate_result().unwrap().unwrap_err()
        };
        assert!(matches!(answer(486, ALLOCATE), TurnError::QuotaReached { .. }));
        assert!(answer(486, ALLOCATE).to_string().contains("quota reached (486)"));
        assert!(matches!(answer(400, ALLOCATE), TurnError::NotTurn { .. }));
        assert!(matches!(answer(420, ALLOCATE), TurnError::NotTurn { .. }));
        assert!(matches!(answer(437, ALLOCATE), TurnError::AllocationMismatch { .. }));
        assert!(matches!(answer(508, ALLOCATE), TurnError::Refused { code: 508, .. }));
        // An answer of another method: a STUN server answering as Binding.
        let e = answer(400, BINDING);
        assert!(e.to_string().contains("does not speak TURN"), "{e}");
        // A success without a relayed address.
        let (mut a, t0) = start(TurnTransport::Udp);
        let (_, txid, _) = sent(&mut a, t0, "n");
        let r = encode_response(txid, ALLOCATE, Ok(&Success::default()), None, None).unwrap();
        a.handle_datagram(t0, server(), &r);
        assert!(matches!(a.allocate_result(), Some(Err(TurnError::NotTurn { .. }))));
        // 401 without realm and nonce.
        let (mut a, t0) = start(TurnTransport::Udp);
        let (_, txid, _) = sent(&mut a, t0, "n");
        let r = encode_response(txid, ALLOCATE, Err((401, "x")), None, None).unwrap();
        a.handle_datagram(t0, server(), &r);
        assert!(matches!(a.allocate_result(), Some(Err(TurnError::NotTurn { .. }))));
    }

    #[test]
    fn a_silent_server_is_given_up_on_at_the_end_of_the_schedule() {
        let (mut a, t0) = start(TurnTransport::Udp);
        let mut sends = 0;
        let mut now = t0;
        while a.allocate_result().is_none() {
            while a.poll_transmit(now).is_some() {
                sends += 1;
            }
            now = a.poll_timeout().unwrap_or(now);
            if a.poll_transmit(now).is_some() {
                sends += 1;
            }
        }
        assert_eq!(sends, 7, "RFC 8489's Rc");
        assert_eq!(now - t0, Duration::from_millis(39_500));
        assert!(matches!(
            a.allocate_result(),
            Some(Err(TurnError::Silent { what: "Allocate", .. }))
        ));
        // Over TCP: one send.
        let (mut a, t0) = start(TurnTransport::Tcp);
        assert!(a.poll_transmit(t0).is_some());
        assert!(a.poll_transmit(t0 + Duration::from_secs(39)).is_none());
        assert!(a.poll_transmit(t0 + Duration::from_millis(39_500)).is_none());
        assert!(matches!(a.allocate_result(), Some(Err(TurnError::Silent { .. }))));
    }

    #[test]
    fn refreshes_at_half_the_lifetime_and_deletes_with_lifetime_zero() {
        let (mut a, t0) = allocate(TurnTransport::Udp);
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        assert!(a.poll_transmit(t0 + Duration::from_secs(299)).is_none());
        let t1 = t0 + Duration::from_secs(300);
        let (m, txid, signed) = sent(&mut a, t1, "n1");
        assert_eq!((m, signed), (REFRESH, Some(true)));
        let granted = Success {
            lifetime: Some(Duration::from_secs(100)),
            ..Success::default()
        };
        a.handle_datagram(t1, server(), &success(txid, REFRESH, &granted, "n1"));
        assert_eq!(a.poll_event(), Some(Event::Refreshed(Duration::from_secs(100))));
        assert_eq!(a.poll_timeout(), Some(t1 + Duration::from_secs(50)));
        // A response with a bad MESSAGE-INTEGRITY is ignored.
        let t2 = t1 + Duration::from_secs(50);
        let (_, txid, _) = sent(&mut a, t2, "n1");
        // The same answer, signed with another password.
        let other = Auth::new("natt", "guess", REALM, "n1").unwrap();
        let forged = encode_response(txid, REFRESH, Ok(&granted), None, Some(&other)).unwrap();
        assert_eq!(a.handle_datagram(t2, server(), &forged), Input::Ignored);
        assert!(!a.is_idle());
        a.delete(t2);
        let (m, txid, _) = sent(&mut a, t2, "n1");
        assert_eq!(m, REFRESH);
        let gone = Success {
            lifetime: Some(Duration::ZERO),
            ..Success::default()
        };
        a.handle_datagram(t2, server(), &success(txid, REFRESH, &gone, "n1"));
        assert_eq!(a.state(), &State::Deleted);
        assert!(a.poll_transmit(t2 + Duration::from_secs(1000)).is_none());
    }

    #[test]
    fn a_lifetime_granted_longer_than_asked_is_refreshed_as_asked() {
        let config = Config {
            lifetime: Duration::from_secs(4),
            ..Config::default()
        };
        let (a, t0) = allocate_with(TurnTransport::Udp, config);
        assert_eq!(a.allocated().unwrap().lifetime, Duration::from_secs(600));
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn permissions_and_channels_are_made_and_refreshed() {
        let (mut a, t0) = allocate(TurnTransport::Udp);
        assert!(matches!(a.send_to(peer(), b"x"), Err(TurnError::NoPermission(_))));
        let channel = a.add_peer(peer(), t0).unwrap();
        assert_eq!(channel, MIN_CHANNEL);
        let (m1, tx1, _) = sent(&mut a, t0, "n1");
        let (m2, tx2, _) = sent(&mut a, t0, "n1");
        assert_eq!((m1, m2), (CREATE_PERMISSION, CHANNEL_BIND));
        // Before the channel is bound: a Send indication.
        let t = a.send_to(peer(), b"hello").unwrap();
        assert_eq!(channel_data::classify(&t.payload), Kind::Stun);
        a.handle_datagram(
            t0,
            server(),
            &success(tx1, CREATE_PERMISSION, &Success::default(), "n1"),
        );
        assert!(a.has_permission(peer().ip()));
        a.handle_datagram(t0, server(), &success(tx2, CHANNEL_BIND, &Success::default(), "n1"));
        assert_eq!(a.channel(peer()), Some(channel));
        // After: ChannelData, padded over TCP only.
        let t = a.send_to(peer(), b"hello").unwrap();
        assert_eq!(t.payload, channel_data::encode(channel, b"hello", false).unwrap());
        // Refreshes: the permission after 240 s, the channel after 540 s.
        let t1 = t0 + PERMISSION_REFRESH;
        let (m, tx, _) = sent(&mut a, t1, "n1");
        assert_eq!(m, CREATE_PERMISSION);
        a.handle_datagram(t1, server(), &success(tx, CREATE_PERMISSION, &Success::default(), "n1"));
        let t2 = t0 + Duration::from_secs(300);
        let (m, tx, _) = sent(&mut a, t2, "n1");
        assert_eq!(m, REFRESH);
        a.handle_datagram(t2, server(), &success(tx, REFRESH, &allocated_success(), "n1"));
        let t3 = t0 + CHANNEL_REFRESH;
        let mut methods = Vec::new();
        while let Some(t) = a.poll_transmit(t3) {
            methods.push(decode_request(&t.payload, None).unwrap().0);
        }
        assert_eq!(methods, [CREATE_PERMISSION, CHANNEL_BIND]);
        // A failed channel bind forgets the channel: data goes as Send indications again.
        let (mut a, t0) = allocate(TurnTransport::Tcp);
        a.add_peer(peer(), t0).unwrap();
        let _ = sent(&mut a, t0, "n1");
        let (_, tx, _) = sent(&mut a, t0, "n1");
        let refused = encode_response(tx, CHANNEL_BIND, Err((400, "Bad Request")), None, None).unwrap();
        a.handle_datagram(t0, server(), &refused);
        assert!(matches!(
            a.poll_event(),
            Some(Event::Failed(TurnError::Refused { code: 400, .. }))
        ));
        assert_eq!(a.channel(peer()), None);
    }

    #[test]
    fn data_both_ways_and_garbage() {
        let (mut a, t0) = allocate(TurnTransport::Tcp);
        let ch = a.add_peer(peer(), t0).unwrap();
        let _ = sent(&mut a, t0, "n1");
        let (_, tx, _) = sent(&mut a, t0, "n1");
        a.handle_datagram(t0, server(), &success(tx, CHANNEL_BIND, &Success::default(), "n1"));
        let out = a.send_to(peer(), b"hello").unwrap();
        assert_eq!(out.payload.len(), 12, "padded over TCP");
        // ChannelData from the peer, and a Data indication.
        let cd = channel_data::encode(ch, b"back", true).unwrap();
        assert_eq!(
            a.handle_datagram(t0, server(), &cd),
            Input::Data {
                peer: peer(),
                payload: b"back".to_vec()
            }
        );
        let di = encode_data_indication([1; 12], peer(), b"again").unwrap();
        assert_eq!(
            a.handle_datagram(t0, server(), &di),
            Input::Data {
                peer: peer(),
                payload: b"again".to_vec()
            }
        );
        // Anything from elsewhere is not ours, whatever it looks like.
        assert_eq!(a.handle_datagram(t0, peer(), &cd), Input::NotFromServer);
        // Garbage, an unknown channel, a response to nothing.
        for junk in [
            &b""[..],
            &b"\xff\xff"[..],
            &channel_data::encode(ch + 1, b"?", false).unwrap(),
            &[0x40, 0, 0, 9, 1],
            &encode_response([9; 12], REFRESH, Ok(&Success::default()), None, None).unwrap(),
            &[
                0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            ],
        ] {
            assert_eq!(a.handle_datagram(t0, server(), junk), Input::Ignored, "{junk:?}");
        }
        assert!(a.relayed().is_some());
    }

    #[test]
    fn tcp_relaying_connects_accepts_and_binds_data_connections() {
        use crate::message::methods::{CONNECT, CONNECTION_BIND};
        let t0 = Instant::now();
        let config = Config {
            tcp_relay: true,
            ..Config::default()
        };
        let creds = || TurnCredentials::new("natt", "secret");
        // Over UDP to the server it cannot be done.
        let a = Allocation::new(
            server(),
            TurnTransport::Udp,
            creds(),
            config,
            t0,
            StdRng::seed_from_u64(1),
        );
        assert!(matches!(a.allocate_result(), Some(Err(TurnError::NotSupported(_)))));
        let (mut a, t0) = allocate_with(TurnTransport::Tcp, config);
        assert!(a.relayed().is_some());
        assert!(matches!(a.send_to(peer(), b"x"), Err(TurnError::NotSupported(_))));
        // Connect: the CONNECTION-ID comes back.
        a.connect(peer(), t0).unwrap();
        let (m, txid, signed) = sent(&mut a, t0, "n1");
        assert_eq!((m, signed), (CONNECT, Some(true)));
        assert_eq!(a.connect_result(peer()), None);
        let connected = Success {
            connection_id: Some(0x1234),
            ..Success::default()
        };
        a.handle_datagram(t0, server(), &success(txid, CONNECT, &connected, "n1"));
        assert_eq!(a.connect_result(peer()), Some(Ok(0x1234)));
        assert_eq!(a.connect_result(peer()), None, "taken out");
        // A refused Connect (447: the server could not reach the peer).
        a.connect(peer(), t0).unwrap();
        let (_, txid, _) = sent(&mut a, t0, "n1");
        let refused = encode_response(txid, CONNECT, Err((447, "Connection Timeout or Failure")), None, None).unwrap();
        a.handle_datagram(t0, server(), &refused);
        assert!(matches!(
            a.connect_result(peer()),
            Some(Err(TurnError::Refused { code: 447, .. }))
        ));
        // A peer connects to us.
        let attempt = crate::message::encode_connection_attempt([5; 12], peer(), 77).unwrap();
        assert_eq!(a.handle_datagram(t0, server(), &attempt), Input::Control);
        assert_eq!(a.take_connection_attempt(), Some((peer(), 77)));
        // Attempts nobody takes are bounded: the oldest go.
        for id in 0..(MAX_CONNECTION_ATTEMPTS as u32 + 6) {
            let attempt = crate::message::encode_connection_attempt([5; 12], peer(), id).unwrap();
            a.handle_datagram(t0, server(), &attempt);
        }
        let kept: Vec<u32> = std::iter::from_fn(|| a.take_connection_attempt())
            .map(|(_, id)| id)
            .collect();
        assert_eq!(kept.len(), MAX_CONNECTION_ATTEMPTS);
        assert_eq!(kept.first(), Some(&6));
        // ConnectionBind on a data connection: signed, and its answer checked.
        let (txid, bytes) = a.connection_bind(77).unwrap();
        let (m, got, signed) = decode_request(&bytes, Some(&auth("n1"))).unwrap();
        assert_eq!((m, got, signed), (CONNECTION_BIND, txid, Some(true)));
        let ok = success(txid, CONNECTION_BIND, &Success::default(), "n1");
        assert_eq!(a.connection_bound(txid, &ok), Ok(()));
        assert!(a.connection_bound([0; 12], &ok).is_err(), "another transaction");
        let bad = encode_response(txid, CONNECTION_BIND, Err((400, "Bad Request")), None, None).unwrap();
        assert!(matches!(
            a.connection_bound(txid, &bad),
            Err(TurnError::Refused { code: 400, .. })
        ));
        assert!(a.connection_bound(txid, b"garbage").is_err());
    }
}
