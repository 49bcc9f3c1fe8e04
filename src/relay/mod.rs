//! The LAN relay (issue 13): SMTP listeners of the service for printers, scanners and
//! appliances that cannot do OAuth2. A device that proves who it is (its password, or
//! its address in its network) hands over a message; it is spooled fsync'd in the
//! service's queue before the 250, sent as the one address the device was given, and
//! delivered, logged and bounced like local mail. Below the service, which starts it;
//! above delivery, whose queue, intake and log it uses.

pub mod certificate;
pub mod devices;
pub mod limits;
pub mod listener;

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use mail_builder::headers::date::Date;

use crate::config::relay::{Listener, ListenerTls};
use crate::config::Config;
use crate::delivery::log::{DeliveryLog, Outcome, Record, Status};
use crate::delivery::queue::{Queue, QueueEntry as Entry};
use crate::delivery::request::Invocation;
use crate::error::{Error, Kind, Result};
use crate::message::input::Raw;
use crate::smtp::server::{failure_reply, Stage};

use devices::{Devices, Known, RateLimiter};
use limits::Limits;

/// The listeners, bound while the service may still bind privileged ports.
pub struct Bound {
    listeners: Vec<(Listener, TcpListener)>,
}

/// Binds every `[[relay.listener]]`, or takes the socket systemd passed for its address
/// (`inherited`, socket activation); none configured, none bound.
pub fn bind(config: &Config, mut inherited: Vec<TcpListener>) -> Result<Bound> {
    let mut listeners = Vec::new();
    for listener in &config.relay.listener {
        let address = match listener.address.parse::<IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, listener.port),
            Err(_) => {
                return Err(Error::new(
                    Kind::Config,
                    format!("[[relay.listener]] address = \"{}\"", listener.address),
                    "it is not an IP address",
                ))
            }
        };
        let passed = inherited
            .iter()
            .position(|socket| socket.local_addr().ok() == Some(address));
        if let Some(at) = passed {
            listeners.push((listener.clone(), inherited.swap_remove(at)));
            continue;
        }
        let bound = TcpListener::bind(address).map_err(|e| {
            Error::new(
                Kind::Unavailable,
                format!("cannot listen on {address} for the relay"),
                e,
            )
            .hint("below port 1024 the service must start as root or have CAP_NET_BIND_SERVICE")
        })?;
        listeners.push((listener.clone(), bound));
    }
    for socket in inherited {
        let at = socket.local_addr().map_or("?".into(), |a| a.to_string());
        eprintln!(
            "oauth-sendmail: warning: systemd passed a socket on {at} that no [[relay.listener]] names; it is closed"
        );
    }
    Ok(Bound { listeners })
}

/// The signature of the service's From rewriting (`service::policy::enforce_from`).
pub type EnforceFrom = fn(&mut Vec<u8>, &dyn Fn(&str) -> bool, &str) -> bool;

/// What the service hands the relay.
pub struct Hooks {
    /// The service's configuration file, re-read when it changes (`device add`).
    pub config_file: PathBuf,
    pub queue_dir: PathBuf,
    /// The service's state directory (a generated certificate is kept there).
    pub state_dir: PathBuf,
    /// Wakes the delivery thread after a message is spooled.
    pub wake: Box<dyn Fn() + Send + Sync>,
    pub enforce_from: EnforceFrom,
}

/// The configuration and devices in force, and the file's time they came from.
struct Current {
    config: Arc<Config>,
    devices: Arc<Devices>,
    modified: Option<SystemTime>,
}

pub struct Relay {
    hooks: Hooks,
    host: String,
    queue: Queue,
    current: RwLock<Current>,
    limits: Limits,
    rates: Mutex<RateLimiter>,
}

/// One listener as its sessions see it.
pub struct Port {
    pub settings: Listener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Relay {
    fn load(hooks: &Hooks) -> Result<Current> {
        let modified = modified(&hooks.config_file);
        let mut config = Config::load(Some(&hooks.config_file))?;
        config.queue.dir = hooks.queue_dir.clone();
        let devices = Devices::from_settings(&config.relay)?;
        Ok(Current {
            config: Arc::new(config),
            devices: Arc::new(devices),
            modified,
        })
    }

    /// The configuration and devices now: re-read when the file changed, the old kept
    /// when the new one does not load.
    pub fn current(&self) -> (Arc<Config>, Arc<Devices>) {
        let now = modified(&self.hooks.config_file);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.modified == now {
                return (current.config.clone(), current.devices.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.modified != now {
            match Relay::load(&self.hooks) {
                Ok(new) => *current = new,
                Err(err) => {
                    eprintln!(
                        "oauth-sendmail: relay: the changed configuration is refused, the old one kept: {}",
                        err.summary()
                    );
                    current.modified = now;
                }
            }
        }
        (current.config.clone(), current.devices.clone())
    }
}

/// What `status` shows of the relay: each listener, and the certificate's fingerprint a
/// person compares with what a device shows when asked to trust it. Empty without one.
pub fn status(config: &Config, state_dir: &std::path::Path) -> String {
    let mut text = String::new();
    for listener in &config.relay.listener {
        let tls = match listener.tls {
            ListenerTls::Starttls => "STARTTLS",
            ListenerTls::Implicit => "implicit TLS",
            ListenerTls::None => "no TLS (passwords in the clear)",
        };
        text.push_str(&format!(
            "{:<18}{}:{} ({tls}), {} device(s)\n",
            "relay:",
            listener.address,
            listener.port,
            config.relay.devices.len()
        ));
        if listener.tls == ListenerTls::None {
            continue;
        }
        let cert = listener
            .cert_file
            .clone()
            .unwrap_or_else(|| certificate::generated_paths(state_dir).0);
        let print = certificate::fingerprint_of(&cert)
            .unwrap_or_else(|| format!("none yet ({} is made at start)", cert.display()));
        text.push_str(&format!("  {:<16}SHA-256 {print}\n", "certificate:"));
    }
    text
}

/// The relay once started: what the service's stop waits for.
pub struct Running(Option<Arc<Relay>>);

impl Running {
    /// Device connections still open (a stop lets the message in flight be spooled and
    /// answered before the process ends).
    pub fn in_flight(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |relay| relay.limits.open_connections())
    }
}

/// Starts a thread per listener; they stop accepting when the service is asked to stop.
pub fn start(bound: Bound, hooks: Hooks) -> Result<Running> {
    if bound.listeners.is_empty() {
        return Ok(Running(None));
    }
    let current = Relay::load(&hooks)?;
    let host = crate::smtp::client::default_hello_name();
    let mut ports = Vec::new();
    for (settings, socket) in bound.listeners {
        let address = socket
            .local_addr()
            .map_or_else(|_| settings.address.clone(), |a| a.to_string());
        let tls = match settings.tls {
            ListenerTls::None => {
                eprintln!(
                    "oauth-sendmail: warning: relay on {address} has tls = \"none\": device passwords and mail cross the network in the clear; keep it on a trusted LAN"
                );
                None
            }
            mode => {
                let (config, print) =
                    certificate::server_config(&settings, &hooks.state_dir, &host)?;
                eprintln!(
                    "oauth-sendmail: relay listening on {address} ({}), certificate SHA-256 {print}",
                    if mode == ListenerTls::Implicit { "implicit TLS" } else { "STARTTLS" }
                );
                Some(config)
            }
        };
        if tls.is_none() {
            eprintln!("oauth-sendmail: relay listening on {address} (no TLS)");
        }
        ports.push((Port { settings, tls }, socket));
    }
    let relay = Arc::new(Relay {
        queue: Queue::open(&hooks.queue_dir)?,
        hooks,
        host,
        current: RwLock::new(current),
        limits: Limits::default(),
        rates: Mutex::default(),
    });
    for (port, socket) in ports {
        let relay = relay.clone();
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || listener::accept_loop(&relay, &port, socket))
            .map_err(|e| Error::new(Kind::Internal, "cannot start the relay", e))?;
    }
    Ok(Running(Some(relay)))
}

/// A message a device handed over, as the session read it.
pub struct Handed<'a> {
    pub device: &'a Known,
    pub ip: IpAddr,
    pub helo: &'a str,
    /// "ESMTPSA" and the like, for the trace header.
    pub protocol: &'static str,
    /// What the device said in MAIL FROM (kept in the trace and the log only).
    pub claimed: &'a str,
    pub recipients: &'a [String],
    pub data: Raw<'a>,
    /// The listener's account, for a device that names none.
    pub account: Option<&'a str>,
}

/// A refusal: the reply code, enhanced status and text.
pub type Refusal = (u16, &'static str, String);

impl Relay {
    /// Checks the device's rate limit before it sends a message.
    pub fn admit(&self, device: &Known) -> std::result::Result<(), Refusal> {
        let now = crate::sys::clock::now();
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates
            .admit(&device.name, now, device.device.rate_limit)
            .map_err(|reset| {
                let text = format!(
                    "Rate limit of device {} reached; try again after {}",
                    device.name,
                    crate::sys::clock::readable(reset)
                );
                (451, "4.7.1", text)
            })
    }

    /// Intake as for local mail, the device's one sender enforced, the trace header, the
    /// spool (fsync'd), the log; the queue id once it is safe.
    pub fn spool(&self, config: &Config, handed: &Handed) -> std::result::Result<String, Refusal> {
        let started = Instant::now();
        let device = handed.device;
        let refuse = |err: Error| {
            let (code, status) = failure_reply(&err, Stage::Message);
            eprintln!(
                "oauth-sendmail: relay: refused a message of device {} ({}): {}",
                device.name,
                handed.ip,
                err.summary()
            );
            (code, status, err.to_string())
        };
        let chosen = device.device.account.as_deref().or(handed.account);
        let account = config.choose_account(chosen, None).map_err(refuse)?;
        let sender = devices::sender_for(&device.device, account.address());
        let invocation = Invocation {
            sender: Some(sender.clone()),
            recipients: handed.recipients.to_vec(),
            full_name: Some(device.name.clone()),
            account: Some(account.name.clone()),
            ignore_dots: true,
            alone: true,
            ..Invocation::default()
        };
        let (account, mut prepared) =
            crate::delivery::send::prepare(config, &invocation, handed.data).map_err(refuse)?;
        let allowed = |address: &str| address.eq_ignore_ascii_case(&sender);
        let replacement = format!("\"{}\" <{sender}>", device.name.replace(['"', '\\'], ""));
        (self.hooks.enforce_from)(&mut prepared.head, &allowed, &replacement);
        let recipients = prepared.envelope.recipients.clone();
        let mut entry = Entry::new(&account.name, &prepared, &recipients);
        entry.user = Some(format!("device {}", device.name));
        entry.notify = device.device.notify.clone();
        let claimed = handed
            .claimed
            .replace(|c: char| c.is_control() || c == ';', "");
        let helo = handed
            .helo
            .replace(|c: char| c.is_control() || c == ';', "");
        let trace = format!(
            "Received: from {helo} ([{}]) by {} (oauth-sendmail) with {} id {}\r\n\t(device {}, MAIL FROM <{claimed}>);\r\n\t{}\r\n",
            handed.ip,
            self.host,
            handed.protocol,
            entry.id,
            device.name,
            Date::now().to_rfc822()
        );
        prepared.head.splice(0..0, trace.into_bytes());
        entry.size = prepared.len() as u64;
        if let Err(err) = self.queue.add(&entry, &prepared) {
            eprintln!(
                "oauth-sendmail: relay: cannot spool a message of device {}: {}",
                device.name,
                err.summary()
            );
            return Err((
                452,
                "4.3.1",
                "Insufficient system storage: try again later".into(),
            ));
        }
        let outcomes = recipients
            .iter()
            .map(|address| Outcome {
                address: address.clone(),
                status: Status::Queued,
                reply: None,
            })
            .collect();
        let mut record = Record::new(
            Some(entry.id.clone()),
            prepared.message_id.clone(),
            &account.name,
            &prepared.envelope.sender,
            outcomes,
            entry.size,
            started,
        );
        record.note = Some(format!(
            "relayed for device {} from {} (MAIL FROM <{claimed}>)",
            device.name, handed.ip
        ));
        if let Err(err) = DeliveryLog::new(&config.queue.log_file).append(&record) {
            eprintln!("oauth-sendmail: warning: {}", err.summary());
        }
        eprintln!(
            "oauth-sendmail: relay: {} from device {} ({}) for {} recipient(s)",
            entry.id,
            device.name,
            handed.ip,
            recipients.len()
        );
        (self.hooks.wake)();
        Ok(entry.id)
    }
}
