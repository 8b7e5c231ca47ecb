//! `--user` and `--group` (DESIGN.md §1): who the children run as, resolved
//! once at start from the user and group databases (NSS), as systemd's
//! `User=` and `Group=` do.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use thiserror::Error;

pub use super::raw::Identity;

/// A user or group that cannot be run as.
#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("--user {0}: no such user")]
    NoUser(String),
    #[error("--group {0}: no such group")]
    NoGroup(String),
    #[error("--user/--group: {0}")]
    Lookup(String),
    #[error(
        "{0}: hotswap runs as uid {1} and cannot give its children another user or group (run it as root)"
    )]
    NotRoot(String, u32),
}

/// What children run as, with the environment a login gives that user.
#[derive(Clone, Debug)]
pub struct RunAs {
    /// uid, gid and supplementary groups.
    pub identity: Identity,
    /// `USER`, `LOGNAME`, `HOME`, `SHELL` for `--user`, as systemd sets them for `User=`.
    pub env: Vec<(String, String)>,
}

/// Resolves `--user` (a name or a uid) and `--group` (a name or a gid).
/// With `--user` alone the children get the user's primary group and its
/// supplementary groups (`getgrouplist`); with `--group`, that group and
/// no other. None when neither is given: children keep hotswap's own.
///
/// # Errors
/// An unknown user or group, or a switch hotswap has no right to make.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, IdentityError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let lookup = |e: nix::Error| IdentityError::Lookup(e.to_string());
    let user = match user {
        Some(text) => {
            let found = match text.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)),
                Err(_) => User::from_name(text),
            };
            Some(found.map_err(lookup)?.ok_or_else(|| IdentityError::NoUser(text.to_string()))?)
        }
        None => None,
    };
    let group = match group {
        Some(text) => {
            let found = match text.parse::<u32>() {
                Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                Err(_) => Group::from_name(text),
            };
            Some(found.map_err(lookup)?.ok_or_else(|| IdentityError::NoGroup(text.to_string()))?)
        }
        None => None,
    };
    let uid = user.as_ref().map_or_else(Uid::effective, |u| u.uid);
    let gid = match (&group, &user) {
        (Some(g), _) => g.gid,
        (None, Some(u)) => u.gid,
        (None, None) => Gid::effective(),
    };
    let groups = match (&group, &user) {
        (None, Some(u)) => {
            let name =
                CString::new(u.name.as_str()).map_err(|e| IdentityError::Lookup(e.to_string()))?;
            getgrouplist(&name, u.gid).map_err(lookup)?
        }
        _ => vec![gid],
    };
    let me = Uid::effective();
    if !me.is_root() && (uid != me || gid != Gid::effective() || groups != [gid]) {
        let what = match (&user, &group) {
            (Some(u), _) => format!("--user {}", u.name),
            (None, Some(g)) => format!("--group {}", g.name),
            (None, None) => unreachable!("one of them is given"),
        };
        return Err(IdentityError::NotRoot(what, me.as_raw()));
    }
    let env = match &user {
        Some(u) => vec![
            ("USER".to_string(), u.name.clone()),
            ("LOGNAME".to_string(), u.name.clone()),
            ("HOME".to_string(), u.dir.display().to_string()),
            ("SHELL".to_string(), u.shell.display().to_string()),
        ],
        None => Vec::new(),
    };
    let identity = Identity {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    };
    Ok(Some(RunAs { identity, env }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_by_name_and_by_number_and_unknown_ones() {
        // Every Debian system has nobody (65534) and group nogroup; the test runs as root in CI.
        if !Uid::effective().is_root() {
            return;
        }
        let by_name = resolve(Some("nobody"), None).unwrap().unwrap();
        assert_eq!((by_name.identity.uid, by_name.identity.gid), (65534, 65534));
        assert!(by_name.env.contains(&("USER".into(), "nobody".into())));
        let by_number = resolve(Some("65534"), Some("0")).unwrap().unwrap();
        assert_eq!(by_number.identity.groups, vec![0], "--group: that group alone");
        assert!(matches!(resolve(Some("no-such-user-x"), None), Err(IdentityError::NoUser(_))));
        assert!(matches!(resolve(None, Some("no-such-group-x")), Err(IdentityError::NoGroup(_))));
        assert!(resolve(None, None).unwrap().is_none());
    }
}
