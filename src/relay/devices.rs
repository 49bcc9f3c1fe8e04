//! The devices that may relay: their password verifiers, the networks they may send
//! from, the one address each may send as, and their rate limits.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::relay::{Device, RelaySettings};
use crate::config::service::RateLimit;
use crate::config::Config;
use crate::error::{Error, Kind, Result};

/// The scheme of the verifiers `device add` writes. A generated password has 128 bits of
/// entropy, so a salted HMAC is as strong as a slow KDF against guessing, and a check
/// costs microseconds instead of the 70-340 ms a KDF takes on every AUTH.
const SCHEME: &str = "hmac-sha256";

/// A new password (128 random bits, 32 hex digits: any device's form takes them) and
/// the verifier to store for it.
pub fn generate() -> Result<(String, String)> {
    let rng = SystemRandom::new();
    let mut secret = [0u8; 16];
    let mut salt = [0u8; 16];
    rng.fill(&mut secret)
        .and_then(|()| rng.fill(&mut salt))
        .map_err(|_| Error::new(Kind::Internal, "cannot make a password", "no randomness"))?;
    let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    Ok((password.clone(), verifier(&salt, &password)))
}

fn verifier(salt: &[u8], password: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let tag = hmac::sign(&key, password.as_bytes());
    format!(
        "{SCHEME}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(tag.as_ref())
    )
}

/// Whether `password` matches `stored`, in constant time: our HMAC verifier, or an
/// Argon2id PHC string (`$argon2id$v=19$m=...`) for a password a person chose, where a
/// slow KDF is what stands between a stolen file and the password. A verifier of any
/// other scheme matches nothing.
pub fn verify(stored: &str, password: &str) -> bool {
    if stored.starts_with("$argon2id$") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        return PasswordHash::new(stored).is_ok_and(|hash| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
    }
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(salt), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(salt), Ok(tag)) = (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(tag)) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salt);
    hmac::verify(&key, password.as_bytes(), &tag).is_ok()
}

/// An address block, `192.168.1.0/24` or `fd00::/8`; a bare address is a block of one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    base: IpAddr,
    bits: u8,
}

impl Network {
    pub fn parse(text: &str) -> Option<Network> {
        let (address, bits) = match text.trim().split_once('/') {
            Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let base: IpAddr = address.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Network { base, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (base, ip, width) = match (self.base, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        base >> shift == ip >> shift
    }
}

/// One device as the listener uses it.
#[derive(Clone, Debug)]
pub struct Known {
    pub name: String,
    pub device: Device,
    pub networks: Vec<Network>,
}

/// Every configured device, checked.
#[derive(Clone, Debug, Default)]
pub struct Devices {
    known: Vec<Known>,
}

impl Devices {
    /// Refuses a device whose network does not parse or that has neither a password nor
    /// a network (it could never be used, or worse, be taken for "anyone").
    pub fn from_settings(settings: &RelaySettings) -> Result<Devices> {
        let mut known = Vec::new();
        for (name, device) in &settings.devices {
            let bad = |why: String| {
                Error::new(
                    Kind::Config,
                    format!("device `{name}` in [relay.devices]"),
                    why,
                )
            };
            // They go into header fields (From, Received): nothing a header could be
            // broken with.
            check_name(name).map_err(|err| bad(err.to_string()))?;
            for address in device.sender.iter().chain(&device.notify) {
                crate::message::address::check_syntax(address)
                    .map_err(|err| bad(format!("`{address}`: {err}")))?;
            }
            let mut networks = Vec::new();
            for text in &device.network {
                networks.push(
                    Network::parse(text)
                        .ok_or_else(|| bad(format!("network = \"{text}\" is not a CIDR block")))?,
                );
            }
            if device.password_hash.is_none() && networks.is_empty() {
                return Err(bad("it has neither a password_hash nor a network".into()));
            }
            known.push(Known {
                name: name.clone(),
                device: device.clone(),
                networks,
            });
        }
        Ok(Devices { known })
    }

    /// The device let in by its address alone: one without a password whose network
    /// holds `ip`.
    pub fn by_address(&self, ip: IpAddr) -> Option<&Known> {
        self.known
            .iter()
            .find(|k| k.device.password_hash.is_none() && k.networks.iter().any(|n| n.contains(ip)))
    }

    /// The device `user` whose password is `password`, when `ip` is in its networks (if
    /// it has any). An unknown name costs a check too, so the time taken tells little.
    pub fn authenticate(&self, user: &str, password: &str, ip: IpAddr) -> Option<&Known> {
        const NOBODY: &str =
            "hmac-sha256$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let known = self.known.iter().find(|k| k.name == user);
        let stored = known.and_then(|k| k.device.password_hash.as_deref());
        let matches = verify(stored.unwrap_or(NOBODY), password);
        known
            .filter(|_| matches && stored.is_some())
            .filter(|k| k.networks.is_empty() || k.networks.iter().any(|n| n.contains(ip)))
    }
}

/// The address a device's mail goes out as: its own `sender`, else the account's. The
/// device's own claim (MAIL FROM, From:) never decides it.
pub fn sender_for(device: &Device, account_address: &str) -> String {
    device
        .sender
        .clone()
        .unwrap_or_else(|| account_address.to_string())
}

/// What the rate limit says about one more message from a device.
#[derive(Default)]
pub struct RateLimiter {
    accepted: HashMap<String, VecDeque<u64>>,
}

impl RateLimiter {
    /// `Ok` and counted, or `Err(reset)`: the Unix time the window has room again.
    pub fn admit(
        &mut self,
        device: &str,
        now: u64,
        limit: Option<RateLimit>,
    ) -> std::result::Result<(), u64> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let window = limit.window.as_secs();
        let times = self.accepted.entry(device.to_string()).or_default();
        while times.front().is_some_and(|t| t + window <= now) {
            times.pop_front();
        }
        if times.len() >= limit.count as usize {
            return Err(times.front().map_or(now, |t| t + window));
        }
        times.push_back(now);
        Ok(())
    }
}

/// `device add|list|remove`.
#[derive(Debug, PartialEq)]
pub enum DeviceCommand {
    Add {
        name: String,
        network: Option<String>,
        sender: Option<String>,
        /// `--no-password`: the device logs in by its network alone (one that cannot do
        /// AUTH: an old printer).
        no_password: bool,
    },
    List,
    Remove(String),
}

/// `device add|list|remove` on the service's configuration file (`path`): what each
/// prints on stdout.
pub fn command(path: &Path, command: DeviceCommand, out: &mut impl Write) -> Result<()> {
    let written = |e: std::io::Error| Error::new(Kind::Io, "cannot write the output", e);
    match command {
        DeviceCommand::Add {
            name,
            network,
            sender,
            no_password,
        } => {
            let network = network.as_deref();
            match add(path, &name, network, sender.as_deref(), !no_password)? {
                Some(password) => writeln!(
                    out,
                    "Device `{name}` added. In its SMTP settings: user name {name}, password\n\n    {password}\n\n\
                     The password is shown only this once; `device remove {name}` and add it again for a new one."
                ),
                None => writeln!(
                    out,
                    "Device `{name}` added: it sends from {} without logging in (no AUTH in its SMTP settings).",
                    network.unwrap_or_default()
                ),
            }
            .map_err(written)
        }
        DeviceCommand::Remove(name) => {
            remove(path, &name)?;
            writeln!(out, "Device `{name}` removed: it can no longer send.").map_err(written)
        }
        DeviceCommand::List => {
            let config = Config::load(Some(path))?;
            let devices = &config.relay.devices;
            if devices.is_empty() {
                return writeln!(
                    out,
                    "No devices (add one with `oauth-sendmail device add NAME`)."
                )
                .map_err(written);
            }
            for (name, device) in devices {
                let login = match (&device.password_hash, device.network.is_empty()) {
                    (Some(_), true) => "password".to_string(),
                    (Some(_), false) => format!("password, from {}", device.network.join(", ")),
                    (None, _) => format!("address only, from {}", device.network.join(", ")),
                };
                let or_default = |value: &Option<String>, default: &str| {
                    value.clone().unwrap_or_else(|| default.to_string())
                };
                writeln!(
                    out,
                    "{name}: {login}; sends as {}; account {}; bounces to {}",
                    or_default(&device.sender, "the account's address"),
                    or_default(&device.account, "the listener's"),
                    or_default(&device.notify, "nobody (the log only)"),
                )
                .map_err(written)?;
            }
            Ok(())
        }
    }
}

/// A device name: its AUTH user name and the key of its table.
fn check_name(name: &str) -> Result<()> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    match fine {
        true => Ok(()),
        false => Err(Error::new(
            Kind::Usage,
            format!("`{name}` cannot be a device name"),
            "use letters, digits, '.', '_' and '-' (at most 64)",
        )),
    }
}

fn header(name: &str) -> String {
    format!("[relay.devices.{name}]")
}

/// Adds `[relay.devices.NAME]` with a new password's verifier; returns the password.
/// Adds a device's table; its generated password (`None` for one known by its network
/// alone, `with_password` false).
pub fn add(
    path: &Path,
    name: &str,
    network: Option<&str>,
    sender: Option<&str>,
    with_password: bool,
) -> Result<Option<String>> {
    check_name(name)?;
    if !with_password && network.is_none() {
        return Err(Error::new(
            Kind::Usage,
            format!("device `{name}` without a password"),
            "it needs --network: without a password, its address is all that lets it in",
        ));
    }
    if let Some(network) = network {
        if Network::parse(network).is_none() {
            return Err(Error::new(
                Kind::Usage,
                format!("--network {network}"),
                "it is not an address block like 192.168.1.0/24",
            ));
        }
    }
    if let Some(sender) = sender {
        crate::message::address::check_syntax(sender)?;
    }
    let config = Config::load(Some(path))?;
    if config.relay.devices.contains_key(name) {
        return Err(Error::new(
            Kind::Usage,
            format!("there is a device `{name}` already"),
            "a name is used once",
        )
        .hint(format!(
            "oauth-sendmail device remove {name}, then add it again"
        )));
    }
    let password = match with_password {
        true => Some(generate()?),
        false => None,
    };
    let mut text = read(path)?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("\n{}\n", header(name)));
    if let Some((_, verifier)) = &password {
        text.push_str(&format!("password_hash = \"{verifier}\"\n"));
    }
    if let Some(network) = network {
        text.push_str(&format!("network = \"{network}\"\n"));
    }
    if let Some(sender) = sender {
        text.push_str(&format!("sender = \"{sender}\"\n"));
    }
    replace(path, &text)?;
    Ok(password.map(|(password, _)| password))
}

/// Removes the device's table (its lines up to the next table).
pub fn remove(path: &Path, name: &str) -> Result<()> {
    check_name(name)?;
    let text = read(path)?;
    let wanted = [header(name), format!("[relay.devices.\"{name}\"]")];
    let mut kept = Vec::new();
    let mut skipping = false;
    let mut found = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping = wanted.iter().any(|w| w == trimmed);
            found |= skipping;
            if skipping && kept.last().is_some_and(|l: &&str| l.trim().is_empty()) {
                kept.pop();
            }
        }
        if !skipping {
            kept.push(line);
        }
    }
    if !found {
        return Err(Error::new(
            Kind::Usage,
            format!("there is no device `{name}`"),
            format!("{} has no {}", path.display(), header(name)),
        )
        .hint("oauth-sendmail device list"));
    }
    let mut text = kept.join("\n");
    text.push('\n');
    replace(path, &text)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(Kind::Config, format!("cannot read {}", path.display()), e)
            .hint("the devices are kept in the service's configuration; give another with -C FILE")
    })
}

/// Writes the new text beside the file with its owner and mode, checks that it still
/// loads, then renames it over the old one: the service never reads half a file.
fn replace(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let cannot = |e: std::io::Error| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot update {}", path.display()),
            e,
        )
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.device-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o7777)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))
    })();
    let checked = written
        .map_err(cannot)
        .and_then(|()| Config::load(Some(&temporary)).map(drop));
    if let Err(err) = checked.and_then(|()| std::fs::rename(&temporary, path).map_err(cannot)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    if let Some(dir) = path.parent() {
        let _ = crate::sys::files::sync_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_generated_password_verifies_and_nothing_else_does() {
        let (password, stored) = generate().unwrap();
        assert_eq!(password.len(), 32);
        assert!(stored.starts_with("hmac-sha256$"));
        assert!(!stored.contains(&password));
        assert!(verify(&stored, &password));
        assert!(!verify(&stored, &password[..31]));
        assert!(!verify(&stored, ""));
        let (other, _) = generate().unwrap();
        assert_ne!(password, other);
        for bad in [
            "",
            "hmac-sha256",
            "md5$x$y",
            &format!("{stored}$more"),
            "hmac-sha256$!!$!!",
        ] {
            assert!(!verify(bad, &password), "{bad}");
        }
    }

    #[test]
    fn a_chosen_password_verifies_against_its_argon2id_hash() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(b"Printer-2026!", &salt)
            .unwrap()
            .to_string();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify(&hash, "Printer-2026!"));
        assert!(!verify(&hash, "printer-2026!"));
        let argon2i = hash.replace("$argon2id$", "$argon2i$");
        assert!(!verify(&argon2i, "Printer-2026!"), "only argon2id");
        assert!(!verify("$argon2id$garbage", "Printer-2026!"));
    }

    #[test]
    fn networks_hold_what_they_should() {
        let lan = Network::parse("192.168.1.0/24").unwrap();
        assert!(lan.contains("192.168.1.77".parse().unwrap()));
        assert!(lan.contains("::ffff:192.168.1.77".parse().unwrap()));
        assert!(!lan.contains("192.168.2.1".parse().unwrap()));
        assert!(!lan.contains("fd00::1".parse().unwrap()));
        let one = Network::parse("10.0.0.5").unwrap();
        assert!(one.contains("10.0.0.5".parse().unwrap()));
        assert!(!one.contains("10.0.0.6".parse().unwrap()));
        assert!(Network::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "192.168.1.0/33", "printer", "10.0.0.0/x", "::/129"] {
            assert_eq!(Network::parse(bad), None, "{bad}");
        }
    }

    fn settings(toml_text: &str) -> RelaySettings {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn devices_are_found_by_address_or_password_never_by_a_name_alone() {
        let (password, stored) = generate().unwrap();
        let devices = Devices::from_settings(&settings(&format!(
            "[devices.scanner]\nnetwork = \"10.1.0.0/16\"\n\
             [devices.printer]\npassword_hash = \"{stored}\"\nnetwork = [\"192.168.1.0/24\"]\n\
             [devices.nas]\npassword_hash = \"{stored}\"\n"
        )))
        .unwrap();
        let lan = "192.168.1.9".parse().unwrap();
        let away = "172.16.0.1".parse().unwrap();
        assert_eq!(
            devices
                .by_address("10.1.2.3".parse().unwrap())
                .unwrap()
                .name,
            "scanner"
        );
        assert!(
            devices.by_address(lan).is_none(),
            "a password device needs its password"
        );
        assert_eq!(
            devices
                .authenticate("printer", &password, lan)
                .unwrap()
                .name,
            "printer"
        );
        assert!(devices.authenticate("printer", &password, away).is_none());
        assert!(devices.authenticate("printer", "wrong", lan).is_none());
        assert!(devices
            .authenticate("scanner", "", "10.1.2.3".parse().unwrap())
            .is_none());
        assert_eq!(
            devices.authenticate("nas", &password, away).unwrap().name,
            "nas"
        );
        assert!(devices.authenticate("nobody", &password, lan).is_none());
    }

    #[test]
    fn a_device_that_anyone_could_be_is_refused() {
        assert!(Devices::from_settings(&settings("[devices.x]\nsender = \"a@b.c\"\n")).is_err());
        for bad in [
            "[devices.\"a\\r\\nBcc: x@y.z\"]\nnetwork = \"10.0.0.1\"\n",
            "[devices.x]\nnetwork = \"10.0.0.1\"\nsender = \"a@b.c\\r\\nBcc: x@y.z\"\n",
            "[devices.x]\nnetwork = \"10.0.0.1\"\nnotify = \"not an address\"\n",
        ] {
            assert!(Devices::from_settings(&settings(bad)).is_err(), "{bad}");
        }
        assert!(Devices::from_settings(&settings("[devices.x]\nnetwork = \"lan\"\n")).is_err());
    }

    #[test]
    fn the_sender_is_the_devices_or_the_accounts_never_its_claim() {
        let mut device = Device::default();
        assert_eq!(
            sender_for(&device, "office@example.com"),
            "office@example.com"
        );
        device.sender = Some("scans@example.com".into());
        assert_eq!(
            sender_for(&device, "office@example.com"),
            "scans@example.com"
        );
    }

    #[test]
    fn the_rate_limit_counts_per_device_and_window() {
        let limit = Some(RateLimit {
            count: 2,
            window: Duration::from_secs(60),
        });
        let mut limiter = RateLimiter::default();
        assert_eq!(limiter.admit("a", 100, limit), Ok(()));
        assert_eq!(limiter.admit("a", 110, limit), Ok(()));
        assert_eq!(limiter.admit("a", 120, limit), Err(160));
        assert_eq!(limiter.admit("b", 120, limit), Ok(()));
        assert_eq!(limiter.admit("a", 161, limit), Ok(()));
        assert_eq!(limiter.admit("a", 0, None), Ok(()));
    }

    fn config_file(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        path
    }

    #[test]
    fn device_add_stores_only_a_verifier_and_remove_takes_the_table_away() {
        let dir = tempfile::tempdir().unwrap();
        let start = "domain = \"example.com\"\n# a comment kept\n[relay]\n";
        let path = config_file(dir.path(), start);
        let mut out = Vec::new();
        let add = DeviceCommand::Add {
            name: "printer".into(),
            network: Some("192.168.1.0/24".into()),
            sender: Some("scans@example.com".into()),
            no_password: false,
        };
        command(&path, add, &mut out).unwrap();
        let shown = String::from_utf8(out).unwrap();
        let password = shown.lines().nth(2).unwrap().trim().to_string();
        assert_eq!(password.len(), 32, "{shown}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&password),
            "the password itself is never stored"
        );
        assert!(
            text.starts_with(start),
            "the rest of the file is kept: {text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let config = Config::load(Some(&path)).unwrap();
        let devices = Devices::from_settings(&config.relay).unwrap();
        let lan = "192.168.1.20".parse().unwrap();
        assert_eq!(
            devices
                .authenticate("printer", &password, lan)
                .unwrap()
                .name,
            "printer"
        );
        assert_eq!(
            config.relay.devices["printer"].sender.as_deref(),
            Some("scans@example.com")
        );
        let again = DeviceCommand::Add {
            name: "printer".into(),
            network: None,
            sender: None,
            no_password: false,
        };
        assert!(
            command(&path, again, &mut Vec::new()).is_err(),
            "one name once"
        );
        let other = DeviceCommand::Add {
            name: "nas".into(),
            network: None,
            sender: None,
            no_password: false,
        };
        command(&path, other, &mut Vec::new()).unwrap();
        let mut listed = Vec::new();
        command(&path, DeviceCommand::List, &mut listed).unwrap();
        let listed = String::from_utf8(listed).unwrap();
        assert!(
            listed.contains("printer: password, from 192.168.1.0/24; sends as scans@example.com"),
            "{listed}"
        );
        assert!(listed.contains("nas: password;"), "{listed}");
        assert!(!listed.contains("hmac"), "{listed}");
        command(
            &path,
            DeviceCommand::Remove("printer".into()),
            &mut Vec::new(),
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert!(!config.relay.devices.contains_key("printer"));
        assert!(config.relay.devices.contains_key("nas"));
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("# a comment kept"));
        assert!(command(
            &path,
            DeviceCommand::Remove("printer".into()),
            &mut Vec::new()
        )
        .is_err());
        for bad in ["", "a b", "x]\n[y", "über"] {
            let add = DeviceCommand::Add {
                name: bad.into(),
                network: None,
                sender: None,
                no_password: false,
            };
            assert!(command(&path, add, &mut Vec::new()).is_err(), "{bad:?}");
        }
        // Known by its address alone: no password made, none stored.
        let mut out = Vec::new();
        let old = DeviceCommand::Add {
            name: "old-printer".into(),
            network: Some("192.168.1.7/32".into()),
            sender: None,
            no_password: true,
        };
        command(&path, old, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("without logging in"));
        let config = Config::load(Some(&path)).unwrap();
        let device = &config.relay.devices["old-printer"];
        assert!(device.password_hash.is_none());
        assert_eq!(device.network, ["192.168.1.7/32"]);
        let no_network = DeviceCommand::Add {
            name: "nowhere".into(),
            network: None,
            sender: None,
            no_password: true,
        };
        let err = command(&path, no_network, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), Kind::Usage);
        let add = DeviceCommand::Add {
            name: "p".into(),
            network: Some("lan".into()),
            sender: None,
            no_password: false,
        };
        assert!(command(&path, add, &mut Vec::new()).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
