//! Fake gateways for tests, on loopback only: a small IGD that keeps a table of mappings
//! (conflicts, error codes, IGD:1 or IGD:2, slow answers) and serves the description and
//! service description (SCPD, which natt does not read), hostile HTTP servers (silent,
//! dripping, huge, garbage), and an SSDP responder that answers searches (natt finds a
//! gateway given by URL that moved through one). Nothing here sends to anything but loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the server does with a request.
pub type Handler = dyn Fn(&FakeRequest, &mut TcpStream, &AtomicBool) + Send + Sync;

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    /// The SOAP action (after `#`), if any.
    pub action: Option<String>,
    pub body: String,
}

impl FakeRequest {
    /// The text of `<name>` in the body.
    pub fn arg(&self, name: &str) -> Option<String> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = self.body.find(&open)? + open.len();
        let end = self.body[start..].find(&close)? + start;
        Some(self.body[start..end].to_owned())
    }
}

/// An HTTP server on 127.0.0.1 running `handler` for each request, each on its own thread.
pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub requests: Arc<Mutex<Vec<FakeRequest>>>,
}

impl FakeServer {
    pub fn start(handler: Arc<Handler>) -> FakeServer {
        FakeServer::start_on(Ipv4Addr::LOCALHOST, handler)
    }

    /// The same on another loopback address (127.0.0.0/8 is all local on Linux).
    pub fn start_on(ip: Ipv4Addr, handler: Arc<Handler>) -> FakeServer {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&requests));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let (handler, s, r) = (Arc::clone(&handler), Arc::clone(&s), Arc::clone(&r));
                thread::spawn(move || {
                    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let Some(req) = read_request(&mut stream) else { return };
                    r.lock().unwrap().push(req.clone());
                    handler(&req, &mut stream, &s);
                });
            }
        });
        FakeServer { addr, stop, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The SOAP actions received so far.
    pub fn actions(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.action.clone())
            .collect()
    }

    pub fn count(&self, action: &str) -> usize {
        self.actions().iter().filter(|a| *a == action).count()
    }

    pub fn gets(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(stream: &mut TcpStream) -> Option<FakeRequest> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let mut length = 0;
    let mut action = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
            if k.eq_ignore_ascii_case("soapaction") {
                action = v.trim().trim_matches('"').rsplit('#').next().map(str::to_owned);
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(FakeRequest {
        method,
        path,
        action,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// A complete HTTP response.
pub fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn soap_ok(action: &str, inner: &str) -> Vec<u8> {
    response(
        "200 OK",
        &format!(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <u:{action}Response xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">{inner}</u:{action}Response>\
             </s:Body></s:Envelope>"
        ),
    )
}

pub fn soap_fault(code: u16, description: &str) -> Vec<u8> {
    response(
        "500 Internal Server Error",
        &format!(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault>\
             <faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError \
             xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode><errorDescription>{description}\
             </errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
        ),
    )
}

/// A root description with one WAN connection service of `service_version` at `control`,
/// its SCPD at `/scpd.xml`.
pub fn description(igd_version: u8, service: &str, control: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device><deviceType>\
         urn:schemas-upnp-org:device:InternetGatewayDevice:{igd_version}</deviceType><deviceList><device><deviceList>\
         <device><serviceList><service><serviceType>urn:schemas-upnp-org:service:{service}</serviceType>\
         <SCPDURL>/scpd.xml</SCPDURL><controlURL>{control}</controlURL></service></serviceList></device></deviceList>\
         </device></deviceList></device></root>"
    )
}

/// The service description (SCPD) of a WAN IP connection service: its actions and their
/// input arguments. IGD:2 has AddAnyPortMapping.
pub fn scpd(igd_version: u8) -> String {
    let mapping = [
        "NewRemoteHost",
        "NewExternalPort",
        "NewProtocol",
        "NewInternalPort",
        "NewInternalClient",
        "NewEnabled",
        "NewPortMappingDescription",
        "NewLeaseDuration",
    ];
    let action = |name: &str, args: &[&str]| {
        let args: String = args
            .iter()
            .map(|a| format!("<argument><name>{a}</name><direction>in</direction></argument>"))
            .collect();
        format!("<action><name>{name}</name><argumentList>{args}</argumentList></action>")
    };
    let mut actions = action("GetExternalIPAddress", &[]);
    actions += &action("AddPortMapping", &mapping);
    actions += &action(
        "DeletePortMapping",
        &["NewRemoteHost", "NewExternalPort", "NewProtocol"],
    );
    if igd_version == 2 {
        actions += &action("AddAnyPortMapping", &mapping);
    }
    format!(
        "<?xml version=\"1.0\"?><scpd xmlns=\"urn:schemas-upnp-org:service-1-0\"><actionList>{actions}\
         </actionList></scpd>"
    )
}

/// The answer to a GET of a fake IGD whose description is `description`: it, or the SCPD.
pub fn igd_get(req: &FakeRequest, description: &str, igd_version: u8) -> Vec<u8> {
    if req.path == "/scpd.xml" {
        response("200 OK", &scpd(igd_version))
    } else {
        response("200 OK", description)
    }
}

/// One mapping in the fake IGD's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub client: String,
    pub internal_port: u16,
    pub lease: u32,
}

/// How the fake IGD behaves.
#[derive(Debug, Clone)]
pub struct IgdOptions {
    /// 1 or 2 (2 has AddAnyPortMapping).
    pub version: u8,
    /// Answer 725 to any finite lease.
    pub only_permanent: bool,
    /// Answer 606 to mapping requests.
    pub unauthorized: bool,
    /// The external address it reports.
    pub external_ip: String,
    /// How long it takes to answer AddPortMapping and AddAnyPortMapping.
    pub delay: Duration,
}

impl Default for IgdOptions {
    fn default() -> Self {
        IgdOptions {
            version: 2,
            only_permanent: false,
            unauthorized: false,
            external_ip: "203.0.113.101".into(),
            delay: Duration::ZERO,
        }
    }
}

/// A fake IGD with a mapping table keyed by (protocol, external port).
pub struct FakeIgd {
    pub server: FakeServer,
    pub table: Arc<Mutex<BTreeMap<(String, u16), Entry>>>,
    /// When set, it accepts requests and never answers.
    pub mute: Arc<AtomicBool>,
    /// How long it takes to answer AddPortMapping and AddAnyPortMapping (from
    /// [`IgdOptions::delay`]; may be changed while it runs). The mapping is made after it.
    pub delay: Arc<Mutex<Duration>>,
    /// How long it takes to answer DeletePortMapping (the mapping is deleted after it).
    pub delete_delay: Arc<Mutex<Duration>>,
}

impl FakeIgd {
    pub fn start(options: IgdOptions) -> FakeIgd {
        FakeIgd::start_on(Ipv4Addr::LOCALHOST, options)
    }

    /// The same on another loopback address.
    pub fn start_on(ip: Ipv4Addr, options: IgdOptions) -> FakeIgd {
        let table: Arc<Mutex<BTreeMap<(String, u16), Entry>>> = Arc::default();
        let mute = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(Mutex::new(options.delay));
        let delete_delay = Arc::new(Mutex::new(Duration::ZERO));
        let (t, m, d, dd) = (
            Arc::clone(&table),
            Arc::clone(&mute),
            Arc::clone(&delay),
            Arc::clone(&delete_delay),
        );
        let handler = move |req: &FakeRequest, stream: &mut TcpStream, stop: &AtomicBool| {
            if m.load(Ordering::SeqCst) {
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            if req.action.as_deref().is_some_and(|a| a.starts_with("Add")) {
                let delay = *d.lock().unwrap();
                thread::sleep(delay);
            }
            if req.action.as_deref() == Some("DeletePortMapping") {
                let delay = *dd.lock().unwrap();
                thread::sleep(delay);
            }
            let reply = igd_reply(&options, &t, req);
            let _ = stream.write_all(&reply);
        };
        FakeIgd {
            server: FakeServer::start_on(ip, Arc::new(handler)),
            table,
            mute,
            delay,
            delete_delay,
        }
    }

    pub fn url(&self) -> String {
        self.server.url("/rootDesc.xml")
    }

    /// Puts a mapping of another host in the table.
    pub fn take(&self, proto: &str, port: u16) {
        self.table.lock().unwrap().insert(
            (proto.into(), port),
            Entry {
                client: "10.0.0.99".into(),
                internal_port: port,
                lease: 3600,
            },
        );
    }

    pub fn entries(&self) -> Vec<((String, u16), Entry)> {
        self.table.lock().unwrap().clone().into_iter().collect()
    }
}

fn igd_reply(o: &IgdOptions, table: &Mutex<BTreeMap<(String, u16), Entry>>, req: &FakeRequest) -> Vec<u8> {
    let service = if o.version == 2 {
        "WANIPConnection:2"
    } else {
        "WANIPConnection:1"
    };
    if req.method == "GET" && (req.path == "/rootDesc.xml" || req.path == "/scpd.xml") {
        return igd_get(req, &description(o.version, service, "/ctl/IPConn"), o.version);
    }
    if req.method != "POST" || req.path != "/ctl/IPConn" {
        return response("404 Not Found", "<html>not found</html>");
    }
    let action = req.action.clone().unwrap_or_default();
    let arg = |n: &str| req.arg(n).unwrap_or_default();
    let proto = arg("NewProtocol");
    let port: u16 = arg("NewExternalPort").parse().unwrap_or(0);
    let lease: u32 = arg("NewLeaseDuration").parse().unwrap_or(0);
    let entry = Entry {
        client: arg("NewInternalClient"),
        internal_port: arg("NewInternalPort").parse().unwrap_or(0),
        lease,
    };
    let mut table = table.lock().unwrap();
    match action.as_str() {
        "GetExternalIPAddress" => soap_ok(
            &action,
            &format!("<NewExternalIPAddress>{}</NewExternalIPAddress>", o.external_ip),
        ),
        "AddPortMapping" | "AddAnyPortMapping" => {
            if action == "AddAnyPortMapping" && o.version != 2 {
                return soap_fault(401, "Invalid Action");
            }
            if o.unauthorized {
                return soap_fault(606, "Action not authorized");
            }
            if o.only_permanent && lease != 0 {
                return soap_fault(725, "OnlyPermanentLeasesSupported");
            }
            let mut port = port;
            let ours = |e: &Entry| e.client == entry.client && e.internal_port == entry.internal_port;
            if let Some(existing) = table.get(&(proto.clone(), port))
                && !ours(existing)
            {
                if action == "AddPortMapping" {
                    return soap_fault(718, "ConflictInMappingEntry");
                }
                port = (port..=u16::MAX)
                    .chain(1024..port)
                    .find(|p| table.get(&(proto.clone(), *p)).is_none_or(ours))
                    .unwrap();
            }
            table.insert((proto, port), entry);
            if action == "AddAnyPortMapping" {
                soap_ok(&action, &format!("<NewReservedPort>{port}</NewReservedPort>"))
            } else {
                soap_ok(&action, "")
            }
        }
        "DeletePortMapping" => match table.remove(&(proto, port)) {
            Some(_) => soap_ok(&action, ""),
            None => soap_fault(714, "NoSuchEntryInArray"),
        },
        _ => soap_fault(401, "Invalid Action"),
    }
}

/// A server that answers every request with `bytes` (then closes).
pub fn fixed(bytes: Vec<u8>) -> FakeServer {
    FakeServer::start(Arc::new(move |_: &FakeRequest, s: &mut TcpStream, _: &AtomicBool| {
        let _ = s.write_all(&bytes);
    }))
}

/// A server that reads the request and never answers (until dropped).
pub fn silent() -> FakeServer {
    FakeServer::start(Arc::new(|_: &FakeRequest, _: &mut TcpStream, stop: &AtomicBool| {
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
    }))
}

/// A server that sends `head` and then one byte of `fill` every `every`, forever (until
/// dropped or the client goes away).
pub fn drip(head: &'static str, fill: u8, every: Duration) -> FakeServer {
    FakeServer::start(Arc::new(
        move |_: &FakeRequest, s: &mut TcpStream, stop: &AtomicBool| {
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            while !stop.load(Ordering::SeqCst) && s.write_all(&[fill]).is_ok() {
                thread::sleep(every);
            }
        },
    ))
}

/// A server that sends `head` and then as much of `fill` as the client takes, up to `total`.
pub fn flood(head: &'static str, fill: u8, total: usize) -> FakeServer {
    FakeServer::start(Arc::new(
        move |_: &FakeRequest, s: &mut TcpStream, stop: &AtomicBool| {
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            let block = vec![fill; 64 * 1024];
            let mut sent = 0;
            while sent < total && !stop.load(Ordering::SeqCst) && s.write_all(&block).is_ok() {
                sent += block.len();
            }
        },
    ))
}

/// An SSDP responder on 127.0.0.1 answering every datagram with one answer per location (none:
/// silent). Counts the searches it got.
pub struct FakeSsdp {
    pub addr: SocketAddr,
    pub searches: Arc<Mutex<usize>>,
    pub locations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeSsdp {
    pub fn start(locations: Vec<String>) -> FakeSsdp {
        FakeSsdp::start_on("127.0.0.1:0".parse().unwrap(), locations)
    }

    /// The same at `addr` (e.g. a loopback address's port 1900).
    pub fn start_on(addr: SocketAddr, locations: Vec<String>) -> FakeSsdp {
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let searches = Arc::new(Mutex::new(0));
        let locations = Arc::new(Mutex::new(locations));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, l, s) = (Arc::clone(&searches), Arc::clone(&locations), Arc::clone(&stop));
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                // natt's refusal check sends an empty datagram beside its unicast search.
                if len == 0 {
                    continue;
                }
                assert!(buf[..len].starts_with(b"M-SEARCH * HTTP/1.1\r\n"));
                *n.lock().unwrap() += 1;
                for loc in l.lock().unwrap().clone() {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: upnp:rootdevice\r\nUSN: uuid:fake\r\n\
                         EXT:\r\nLOCATION: {loc}\r\n\r\n"
                    );
                    let _ = socket.send_to(answer.as_bytes(), from);
                }
            }
        });
        FakeSsdp {
            addr,
            searches,
            locations,
            stop,
        }
    }

    pub fn searches(&self) -> usize {
        *self.searches.lock().unwrap()
    }
}

impl Drop for FakeSsdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Loopback as the only interface to search from.
pub fn loopback() -> Vec<Ipv4Addr> {
    vec![Ipv4Addr::LOCALHOST]
}

/// Runs `f` and returns its result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let r = f();
    (r, t0.elapsed())
}
