//! Credentials: OAuth2 login, the send path's access tokens (cache, refresh, lock), the token endpoint, where refresh tokens are stored, and secrets from files or commands.

pub mod credential;
pub mod endpoint;
pub mod login;
pub mod store;
pub mod token;

/// The command that logs `account` in (again): the way out of every missing, revoked or
/// unreadable login, so it is worded once.
pub fn login_command(account: &str) -> String {
    format!("oauth-sendmail login --account {account}")
}

/// "run `oauth-sendmail login --account NAME`".
pub fn login_hint(account: &str) -> String {
    format!("run `{}`", login_command(account))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_login_hint_names_the_account() {
        assert_eq!(
            super::login_hint("work"),
            "run `oauth-sendmail login --account work`"
        );
    }
}
