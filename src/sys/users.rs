//! Unix users and groups: names and ids from the passwd and group databases, group
//! membership, and the one-way drop from root to the service's own user.

use std::ffi::{CStr, CString};

use crate::error::{Error, Kind, Result};

/// A passwd entry, what the service needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Calls a reentrant `get*_r` lookup with a growing buffer.
fn lookup_user(
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> i32,
) -> Option<User> {
    let mut size = 1024;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed passwd is a valid out-parameter; the buffer outlives its use.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut entry, buffer.as_mut_ptr(), size, &mut found);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 || found.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points into `buffer`, NUL-terminated.
        let name = unsafe { CStr::from_ptr(entry.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Some(User {
            name,
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        });
    }
}

/// The user with this id, if the passwd database knows it.
pub fn by_uid(uid: u32) -> Option<User> {
    lookup_user(|entry, buffer, size, found| {
        // SAFETY: the pointers are valid for the duration of the call (see lookup_user).
        unsafe { libc::getpwuid_r(uid, entry, buffer, size, found) }
    })
}

/// The user with this name.
pub fn by_name(name: &str) -> Option<User> {
    let name = CString::new(name).ok()?;
    lookup_user(|entry, buffer, size, found| {
        // SAFETY: as in by_uid; `name` is NUL-terminated and lives across the call.
        unsafe { libc::getpwnam_r(name.as_ptr(), entry, buffer, size, found) }
    })
}

/// The id of the group with this name.
pub fn group_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut size = 1024;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        // SAFETY: as for getpwnam_r.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                size,
                &mut found,
            )
        };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        return (rc == 0 && !found.is_null()).then_some(entry.gr_gid);
    }
}

/// Every group `user` is in: its primary group and the supplementary ones.
pub fn groups_of(user: &User) -> Vec<u32> {
    let Ok(name) = CString::new(user.name.as_str()) else {
        return vec![user.gid];
    };
    let mut count: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let capacity = count;
        // SAFETY: `groups` holds `count` entries; getgrouplist writes at most that many
        // and sets `count` to the number it needs.
        let rc =
            unsafe { libc::getgrouplist(name.as_ptr(), user.gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count as usize);
            return groups;
        }
        if count <= capacity {
            count = capacity * 2;
        }
        if count > 65536 {
            return vec![user.gid];
        }
    }
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Gives the file to `uid`:`gid`.
pub fn chown(path: &std::path::Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
        Error::new(
            Kind::CannotCreate,
            format!("cannot give {} to uid {uid}", path.display()),
            e,
        )
    })
}

/// Root becomes `user` for good: its groups (initgroups), its group, then its user id,
/// in that order (after setuid nothing else may be changed). Checked afterwards: a
/// process that could get root back must not go on.
pub fn become_user(user: &User) -> Result<()> {
    let failed = |what: &str| {
        Error::new(
            Kind::Config,
            format!("cannot drop privileges to user `{}`", user.name),
            format!("{what}: {}", std::io::Error::last_os_error()),
        )
    };
    let name = CString::new(user.name.as_str()).map_err(|_| failed("bad user name"))?;
    // SAFETY: plain system calls on values we own; each result is checked.
    unsafe {
        if libc::initgroups(name.as_ptr(), user.gid) != 0 {
            return Err(failed("initgroups"));
        }
        if libc::setgid(user.gid) != 0 {
            return Err(failed("setgid"));
        }
        if libc::setuid(user.uid) != 0 {
            return Err(failed("setuid"));
        }
        if user.uid != 0 && libc::setuid(0) == 0 {
            return Err(failed("root could be regained"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_id() {
        let root = by_uid(0).expect("uid 0 in passwd");
        assert_eq!(root.name, "root");
        assert_eq!(by_name("root"), Some(root.clone()));
        assert!(groups_of(&root).contains(&0));
        assert_eq!(group_id("root"), Some(0));
    }

    #[test]
    fn unknown_names_are_none_not_errors() {
        assert_eq!(by_name("no-such-user-oauth-sendmail"), None);
        assert_eq!(by_name("nul\0inside"), None);
        assert_eq!(group_id("no-such-group-oauth-sendmail"), None);
    }
}
