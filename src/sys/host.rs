//! Who and where we run: this machine's host name and the user we act for. The libc calls
//! for them live here, so that nothing above `sys` needs `unsafe`.

/// This machine's host name (gethostname(2), the kernel's nodename), `None` when it has
/// none we can print.
pub fn name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The effective user id: whose files are "ours".
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(name().as_deref(), Some(kernel.trim()));
    }

    #[test]
    fn the_effective_uid_owns_what_we_create() {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().uid(),
            effective_uid()
        );
    }
}
