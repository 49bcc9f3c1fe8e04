//! Gmail's API: `users.messages.send` as a media upload (the message as it is,
//! `message/rfc822`, at most 35 MB), and its answer.

use serde_json::{Map, Value};

use super::{Call, Payload, Upload};
use crate::error::{Error, Kind, Result};

/// The largest message `users.messages.send` takes by media upload: 35 MB.
pub const LIMIT: usize = 35 * 1024 * 1024;

/// The upload of `upload` as the message `mailbox` (`/users/me`) sends.
pub(super) fn send_call<'m>(mailbox: &str, upload: Upload<'m>) -> Result<Call<'m>> {
    let size = upload.len() as usize;
    if size > LIMIT {
        return Err(too_large(size, LIMIT, "the Gmail API"));
    }
    Ok(Call {
        method: "POST",
        path: format!("/upload/gmail/v1{mailbox}/messages/send?uploadType=media"),
        content_type: Some("message/rfc822"),
        body: Payload::Message(upload),
    })
}

/// "HTTP 200, Gmail id 18c2f...": the id finds the message in the Sent folder.
pub(super) fn reply(status: u16, json: &Map<String, Value>) -> String {
    match json.get("id").and_then(Value::as_str) {
        Some(id) => format!("HTTP {status}, Gmail id {}", super::clean(id)),
        None => format!("HTTP {status}"),
    }
}

/// A message over an API's limit: refused for good before anything is sent.
pub(super) fn too_large(size: usize, limit: usize, api: &str) -> Error {
    Error::new(
        Kind::Unavailable,
        format!("the message is too large for {api}"),
        format!("it is {size} bytes as uploaded, and {api} takes at most {limit} bytes (5.3.4)"),
    )
    .hint("send large files as links, or send this one through an SMTP account")
}
