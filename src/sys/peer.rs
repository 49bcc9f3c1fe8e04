//! Local sockets as the service needs them: who is at the other end (SO_PEERCRED, set
//! by the kernel at connect, so the client cannot forge it), waiting for a connection
//! with a timeout, sockets handed over by systemd, and readiness notification.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::time::Duration;

/// The process at the other end of a Unix socket, as the kernel saw it at connect time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The peer's credentials (`UnixStream::peer_cred` is not stable yet).
pub fn credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    // SAFETY: a zeroed ucred is valid; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Waits until `fd` can be read (a listener: a connection is waiting), at most `timeout`.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut poll, 1, millis) };
    rc > 0 && poll.revents & libc::POLLIN != 0
}

/// The listening sockets systemd passed (socket activation: LISTEN_PID is us, the
/// sockets are fds 3 to 3 + LISTEN_FDS - 1): the submission socket, and TCP ones for
/// the relay's listeners. The variables are removed so that nothing we start takes the
/// sockets as its own.
#[derive(Default)]
pub struct Inherited {
    pub unix: Option<UnixListener>,
    pub tcp: Vec<std::net::TcpListener>,
}

pub fn listeners_from_systemd() -> Inherited {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let ours = pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
    let count = fds
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .unwrap_or(0);
    let mut inherited = Inherited::default();
    if !ours {
        return inherited;
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(count.clamp(0, 64)) {
        // SAFETY: systemd handed these fds to this process for it to own; they are
        // used nowhere else. getsockname only reads into the storage given.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            let mut address: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getsockname(fd, (&raw mut address).cast(), &mut len) != 0 {
                continue;
            }
            match address.ss_family as libc::c_int {
                libc::AF_UNIX if inherited.unix.is_none() => {
                    inherited.unix = Some(UnixListener::from_raw_fd(fd));
                }
                libc::AF_INET | libc::AF_INET6 => {
                    inherited.tcp.push(std::net::TcpListener::from_raw_fd(fd));
                }
                _ => {}
            }
        }
    }
    inherited
}

/// Tells the service manager something (`READY=1`, `RELOADING=1`, `STOPPING=1`), when it
/// asked to be told ($NOTIFY_SOCKET); a failure is not ours to handle.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|address| socket.send_to_addr(state.as_bytes(), &address))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        eprintln!("oauth-sendmail: warning: cannot notify the service manager: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = credentials(&a).unwrap();
        assert_eq!(peer.pid as u32, std::process::id());
        assert_eq!(peer.uid, crate::sys::users::effective_uid());
    }

    #[test]
    fn readiness_reaches_a_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
    }

    #[test]
    fn a_waiting_connection_makes_the_listener_readable() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(!wait_readable(
            listener.as_raw_fd(),
            Duration::from_millis(10)
        ));
        let _client = UnixStream::connect(dir.path().join("s")).unwrap();
        assert!(wait_readable(listener.as_raw_fd(), Duration::from_secs(5)));
    }
}
