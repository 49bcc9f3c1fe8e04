//! Credentials: OAuth2 login, the send path's access tokens (cache, refresh, lock), the token endpoint, where refresh tokens are stored, and secrets from files or commands.

pub mod credential;
pub mod endpoint;
pub mod login;
pub mod store;
pub mod token;
