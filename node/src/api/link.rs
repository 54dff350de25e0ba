//! Media links: capabilities derived from the API token that let a `<video>` or `<img>`
//! element fetch one media path without the token until they expire, and the constant-time
//! comparison they share with the token check.
//!
//! It must never call the node: it only derives and checks capabilities.

/// How long a media link works.
pub(crate) const LINK_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// The media-link key derived from the API token (a new token invalidates every link).
pub(crate) fn link_key(token: &str) -> [u8; 32] {
    use blake2::Digest;
    let mut h = blake2::Blake2s256::new();
    h.update(b"kith-media-link-v1\0");
    h.update(token.as_bytes());
    h.finalize().into()
}

/// The capability for `path` until `exp_ms`: keyed BLAKE2s of both.
pub(crate) fn link_cap(key: &[u8; 32], path: &str, exp_ms: u64) -> [u8; 32] {
    use blake2::digest::{KeyInit, Mac};
    let mut mac = match <blake2::Blake2sMac256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // A 32-byte key always fits; never reached.
        Err(_) => return [0; 32],
    };
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(&exp_ms.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// For a GET of a media path carrying `cap` and `exp`: whether the link is valid. `None` when
/// the request does not use a link.
pub(crate) fn check_link(
    key: &[u8; 32],
    method: &axum::http::Method,
    uri: &axum::http::Uri,
) -> Option<bool> {
    let path = uri.path();
    if !path.starts_with("/v1/media/") || path.ends_with("/link") {
        return None;
    }
    let query = uri.query()?;
    let mut cap = None;
    let mut exp = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("cap", v)) => cap = Some(v),
            Some(("exp", v)) => exp = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    let cap = cap?;
    let (Some(exp), Ok(given)) = (exp, hex::decode(cap)) else {
        return Some(false);
    };
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return Some(false);
    }
    if exp <= crate::time::now_ms() {
        return Some(false);
    }
    let want = link_cap(key, path, exp);
    Some(constant_time_eq(&given, &want))
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
