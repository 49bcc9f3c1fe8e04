//! In-process fakes of the Gmail API and Microsoft Graph on 127.0.0.1 over HTTPS (the
//! test CA), as strict as the real ones about what a send must be: the method, the path
//! and query, the content type, the bearer token, the body (a message for Gmail's media
//! upload; base64 of one for Graph's MIME sendMail), the size limit. Each message is
//! "delivered" as the real service does it: to the addresses of its To, Cc and Bcc
//! fields, the Bcc field taken out of every copy. HTTP/1.1 keep-alive; it counts the
//! connections and the requests, answers scripted failures first, and checks in `Drop`
//! that it was used.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::smtp_server::{TEST_TOKEN, TEST_USER};

/// Which API the fake is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Api {
    Gmail,
    Graph,
}

impl Api {
    /// As `transport =` names it.
    pub fn transport(self) -> &'static str {
        match self {
            Api::Gmail => "gmail-api",
            Api::Graph => "graph",
        }
    }

    /// The largest request body the real API takes: Gmail's 35 MB media upload, Graph's
    /// 4 MB request.
    pub fn limit(self) -> usize {
        match self {
            Api::Gmail => 35 * 1024 * 1024,
            Api::Graph => 4 * 1024 * 1024,
        }
    }
}

/// One answer to a send, instead of the normal one.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    /// An error answer in the API's own JSON shape.
    pub fn error(api: Api, status: u16, message: &str) -> Scripted {
        let body = match api {
            Api::Gmail => {
                serde_json::json!({"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}})
            }
            Api::Graph => {
                serde_json::json!({"error": {"code": "ErrorInvalidRecipients", "message": message}})
            }
        };
        Scripted {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A message as one recipient got it.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub recipient: String,
    pub message: String,
}

#[derive(Default)]
struct State {
    log: String,
    sends: usize,
    checks: usize,
    delivered: Vec<Delivered>,
    script: VecDeque<Scripted>,
    /// The bearer tokens of every request, in order.
    tokens: Vec<String>,
}

struct Shared {
    api: Api,
    /// Tokens the API takes.
    good_tokens: Vec<String>,
    state: Mutex<State>,
    connections: AtomicUsize,
    stop: AtomicBool,
}

pub struct MailApi {
    pub api: Api,
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    unused_ok: bool,
}

impl MailApi {
    /// A fake that takes TEST_TOKEN only.
    pub fn start(api: Api) -> MailApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            api,
            good_tokens: vec![TEST_TOKEN.to_string()],
            state: Mutex::new(State::default()),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = shared.clone();
                    thread::spawn(move || serve(stream, &shared));
                }
            })
        };
        MailApi {
            api,
            port,
            shared,
            acceptor: Some(acceptor),
            unused_ok: false,
        }
    }

    /// What `api_uri` is set to: the API's base address, as the presets have it.
    pub fn base(&self) -> String {
        match self.api {
            Api::Gmail => format!("https://127.0.0.1:{}", self.port),
            Api::Graph => format!("https://127.0.0.1:{}/v1.0", self.port),
        }
    }

    /// The next sends get these answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state().script.extend(answers);
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Send requests, answered however.
    pub fn sends(&self) -> usize {
        self.state().sends
    }

    /// Profile requests (`status --check`).
    pub fn checks(&self) -> usize {
        self.state().checks
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.state().delivered.clone()
    }

    /// The recipients that got a message, in order.
    pub fn recipients(&self) -> Vec<String> {
        self.delivered().into_iter().map(|d| d.recipient).collect()
    }

    pub fn tokens(&self) -> Vec<String> {
        self.state().tokens.clone()
    }

    /// One line per request and answer, for failure messages.
    pub fn log(&self) -> String {
        self.state().log.clone()
    }

    pub fn expect_unused(&mut self) {
        self.unused_ok = true;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for MailApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let used = {
            let state = self.state();
            state.sends + state.checks > 0
        };
        if !thread::panicking() && !self.unused_ok && !used {
            panic!(
                "fake {:?} API on port {} got no request: the test did not exercise what it meant to",
                self.api, self.port
            );
        }
    }
}

/// A request as read off the wire.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }
}

fn serve(tcp: TcpStream, shared: &Shared) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(super::tls::server_config()) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Keep-alive: requests one after the other on this connection until the client leaves.
    while let Some(request) = read_request(&mut tls) {
        let answer = answer(shared, &request);
        {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let shown: String = answer.body.chars().take(200).collect();
            state.log.push_str(&format!(
                "{} {}?{} ({} bytes) -> {} {shown}\n",
                request.method,
                request.path,
                request.query,
                request.body.len(),
                answer.status
            ));
        }
        let mut head = format!("HTTP/1.1 {} X\r\n", answer.status);
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", answer.body.len()));
        if tls.write_all(head.as_bytes()).is_err()
            || tls.write_all(answer.body.as_bytes()).is_err()
            || tls.flush().is_err()
        {
            return;
        }
    }
}

fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn answer(shared: &Shared, request: &Request) -> Answer {
    let api = shared.api;
    let bad = |status: u16, message: &str| {
        let s = Scripted::error(api, status, message);
        Answer {
            status: s.status,
            headers: s.headers,
            body: s.body,
        }
    };
    // Both APIs: a bearer token, and only one they issued.
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    shared
        .state
        .lock()
        .unwrap()
        .tokens
        .push(token.clone().unwrap_or_default());
    let send_path = match api {
        Api::Gmail => "/upload/gmail/v1/users/me/messages/send".to_string(),
        Api::Graph if request.path.starts_with("/v1.0/users/") => {
            let id = request.path["/v1.0/users/".len()..].trim_end_matches("/sendMail");
            format!("/v1.0/users/{id}/sendMail")
        }
        Api::Graph => "/v1.0/me/sendMail".to_string(),
    };
    let profile_paths: &[&str] = match api {
        Api::Gmail => &["/gmail/v1/users/me/profile"],
        Api::Graph => &["/v1.0/me", "/v1.0/users/sender%40example.com"],
    };
    let is_send = request.method == "POST" && request.path == send_path;
    let is_profile = request.method == "GET" && profile_paths.contains(&request.path.as_str());
    if !is_send && !is_profile {
        return bad(404, &format!("no {} {}", request.method, request.path));
    }
    if is_profile {
        shared.state.lock().unwrap().checks += 1;
    } else {
        shared.state.lock().unwrap().sends += 1;
    }
    match &token {
        None => {
            return bad(
                401,
                "Request is missing required authentication credential.",
            )
        }
        Some(token) if !shared.good_tokens.contains(token) => {
            return bad(401, "Request had invalid authentication credentials.")
        }
        Some(_) => {}
    }
    if is_profile {
        return Answer::json(
            200,
            match api {
                Api::Gmail => serde_json::json!({"emailAddress": TEST_USER, "messagesTotal": 1}),
                Api::Graph => serde_json::json!({"userPrincipalName": TEST_USER}),
            },
        );
    }
    if let Some(scripted) = shared.state.lock().unwrap().script.pop_front() {
        return Answer {
            status: scripted.status,
            headers: scripted.headers,
            body: scripted.body,
        };
    }
    if request.body.len() > api.limit() {
        return bad(413, "Request payload size exceeds the limit");
    }
    let (wanted_type, message) = match api {
        Api::Gmail => {
            if request.query != "uploadType=media" {
                return bad(400, "uploadType=media is required for this upload");
            }
            ("message/rfc822", request.body.clone())
        }
        Api::Graph => match B64.decode(&request.body) {
            Ok(mime) => ("text/plain", mime),
            Err(_) => return bad(400, "Invalid base64 string for MIME content."),
        },
    };
    let content_type = request.header("content-type").unwrap_or("");
    if !content_type.eq_ignore_ascii_case(wanted_type) {
        return bad(
            400,
            &format!("Content-Type must be {wanted_type}, not {content_type}"),
        );
    }
    let Some(end) = message.windows(4).position(|w| w == b"\r\n\r\n") else {
        return bad(400, "Invalid MIME content: no header");
    };
    let head = String::from_utf8_lossy(&message[..end + 2]).into_owned();
    let fields = unfold(&head);
    let recipients: Vec<String> = fields
        .iter()
        .filter(|(name, _)| ["to", "cc", "bcc"].contains(&name.to_ascii_lowercase().as_str()))
        .flat_map(|(_, value)| addresses(value))
        .collect();
    if recipients.is_empty() {
        return bad(400, "Recipient address required");
    }
    // What every recipient gets: the message without its Bcc field.
    let mut visible = String::new();
    for (name, value) in &fields {
        if !name.eq_ignore_ascii_case("bcc") {
            visible.push_str(&format!("{name}:{value}\r\n"));
        }
    }
    visible.push_str(&String::from_utf8_lossy(&message[end + 2..]));
    let mut state = shared.state.lock().unwrap();
    for recipient in recipients {
        state.delivered.push(Delivered {
            recipient,
            message: visible.clone(),
        });
    }
    match api {
        Api::Gmail => Answer::json(
            200,
            serde_json::json!({"id": format!("18c{:05}", state.sends), "threadId": "t1", "labelIds": ["SENT"]}),
        ),
        Api::Graph => Answer {
            status: 202,
            headers: Vec::new(),
            body: String::new(),
        },
    }
}

/// The fields of a header block, continuation lines joined.
fn unfold(head: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_string(), value.to_string()));
        }
    }
    fields
}

/// The addresses of an address list: `<a@b>` or bare `a@b`, lower case.
fn addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            let address = match (part.find('<'), part.find('>')) {
                (Some(start), Some(end)) if start < end => &part[start + 1..end],
                _ => part,
            };
            address.contains('@').then(|| address.to_ascii_lowercase())
        })
        .collect()
}
