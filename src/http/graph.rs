//! Microsoft Graph: `sendMail` with the message as MIME (base64, `text/plain`), as the
//! signed-in user (`/me`) or, app-only, as the account's mailbox (`/users/{id}`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::{Call, Payload, Upload};
use crate::config::{Account, Grant};
use crate::error::Result;

/// The largest request Graph takes: 4 MB, which base64 makes a message of 3 MB. (Upload
/// sessions exist for attachments of draft messages built in JSON, not for MIME.)
pub const LIMIT: usize = 4 * 1024 * 1024;

/// The mailbox in paths: the app's token is for no user, so it names one.
pub(super) fn mailbox(account: &Account) -> String {
    let app = account
        .oauth
        .as_ref()
        .is_some_and(|o| o.grant == Grant::ClientCredentials);
    match app {
        true => format!(
            "/users/{}",
            form_urlencoded::byte_serialize(account.user.as_bytes()).collect::<String>()
        ),
        false => "/me".to_string(),
    }
}

/// `sendMail` with `upload`, refused before it is read when base64 would make it too large.
pub(super) fn send_call<'m>(mailbox: &str, upload: Upload<'m>) -> Result<Call<'m>> {
    let size = upload.len() as usize;
    if size.div_ceil(3) * 4 > LIMIT {
        return Err(super::gmail::too_large(
            size,
            LIMIT / 4 * 3,
            "Microsoft Graph",
        ));
    }
    Ok(Call {
        method: "POST",
        path: format!("{mailbox}/sendMail"),
        content_type: Some("text/plain"),
        body: Payload::Bytes(B64.encode(upload.to_vec()?).into_bytes()),
    })
}

/// Graph answers 202 Accepted and nothing else.
pub(super) fn reply(status: u16) -> String {
    format!("HTTP {status}, accepted by Microsoft Graph")
}
