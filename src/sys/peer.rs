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

/// The listening socket systemd passed (socket activation: LISTEN_PID is us, LISTEN_FDS
/// at least 1, the socket is fd 3), if any. The variables are removed so that nothing we
/// start takes the socket as its own.
pub fn listener_from_systemd() -> Option<UnixListener> {
    let pid = std::env::var("LISTEN_PID").ok()?;
    let fds = std::env::var("LISTEN_FDS").ok()?;
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if pid.trim().parse::<u32>().ok()? != std::process::id() || fds.trim().parse::<u32>().ok()? < 1
    {
        return None;
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    // SAFETY: systemd handed fd 3 to this process for it to own; it is not used elsewhere.
    unsafe {
        libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(UnixListener::from_raw_fd(SD_LISTEN_FDS_START))
    }
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
