//! One conditional GET of the pointer, with the validators of the last accepted answer, so an
//! unchanged pointer costs one `304` (which a CDN answers from its cache) and no git traffic.
//! Validators are kept per URL: a new `source.pointer` starts over with a plain GET.

use super::{PointerError, State, MAX_POINTER_BYTES};
use crate::net::quote::bounded;

/// What the server answered.
#[derive(Debug)]
pub enum Polled {
    /// `304 Not Modified`: the pointer accepted last is still the current one.
    Unchanged { date: Option<String> },
    /// A pointer file, with the validators to send next time.
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
        date: Option<String>,
    },
}

/// Validators are short; a longer one is not sent back.
const MAX_VALIDATOR: usize = 256;

/// GETs `url` through `client`, conditionally on what `state` kept from the last answer.
pub fn poll(client: &crate::net::Client, url: &str, state: &State) -> Result<Polled, PointerError> {
    let fail = |why: String| PointerError::Fetch {
        url: url.to_string(),
        why,
        unavailable: true,
    };
    let mut headers = Vec::new();
    if state.url.as_deref() == Some(url) && state.accepted.is_some() {
        if let Some(e) = &state.etag {
            headers.push(format!("If-None-Match: {e}"));
        }
        if let Some(m) = &state.last_modified {
            headers.push(format!("If-Modified-Since: {m}"));
        }
    }
    let response = client
        .send("GET", url, &headers, &[])
        .map_err(|e| fail(e.to_string()))?;
    let header = |name: &str| {
        response
            .header(name)
            .filter(|v| v.len() <= MAX_VALIDATOR && !v.contains(['\r', '\n']))
            .map(str::to_string)
    };
    let date = header("date");
    match response.status() {
        304 if !headers.is_empty() => Ok(Polled::Unchanged { date }),
        304 => Err(fail(
            "the server answered 304 Not Modified to a request that had no validators".into(),
        )),
        200 => {
            let etag = header("etag");
            let last_modified = header("last-modified");
            let bytes = response
                .bytes(MAX_POINTER_BYTES)
                .map_err(|e| fail(e.to_string()))?;
            Ok(Polled::Body {
                bytes,
                etag,
                last_modified,
                date,
            })
        }
        status => Err(PointerError::Fetch {
            url: url.to_string(),
            why: format!(
                "HTTP {status} {}; check source.pointer and that CI publishes the pointer there",
                bounded(response.head.reason.as_bytes(), 64)
            ),
            unavailable: status >= 500 || status == 429,
        }),
    }
}
