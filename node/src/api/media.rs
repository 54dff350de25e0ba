//! The media endpoints: `POST /v1/media` streams a file to disk and sends it,
//! `GET /v1/media/{hash}` serves the decrypted file (with `Range`, so a browser can play a
//! video while it is still arriving), `GET /v1/media/{hash}/preview` the thumbnail.
//!
//! Several messages may name one hash (each has its own record): a hash alone means the
//! local user's own record, else a complete one, else one in progress; `?of={id}` (the `id` of
//! a message's media view) names exactly that message's record.
//!
//! Nothing here holds a whole file in memory: uploads are written to a temporary file as they
//! arrive and downloads are streamed from disk.

use std::collections::HashMap;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{
        header::{
            ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
        },
        HeaderMap, HeaderValue, StatusCode,
    },
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures::StreamExt;
use kith_protocol::blob::BlobHash;
use serde::Serialize;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use utoipa::ToSchema;

use super::{
    error::{node_error, ApiError, ErrorBody, ErrorCode, Input},
    extract::{parse_group_id, parse_user_id, Chat},
    link::{link_cap, LINK_LIFETIME},
    state::ApiState,
};
use crate::{
    handle::{FileToSend, SentFile},
    media::{carried_mime, sanitize_name, MediaId, MediaState, MediaView, INLINE_TYPES},
    view::StatusSchema,
};

/// How often a ranged read waiting for a download in progress looks at its progress again.
const RANGE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a ranged read waits for a download in progress to reach the asked bytes.
const RANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The media routes (guarded like the rest of the API by the caller).
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/media", post(upload))
        .route("/v1/media/{hash}", get(download))
        .route("/v1/media/{hash}/preview", get(preview))
        .route("/v1/media/{hash}/link", post(link))
        .route("/v1/media/{hash}/download", post(fetch))
}

/// `POST /v1/media/{hash}/download` (`?of={id}` for one message's): fetch media that waits
/// for the user (over the auto-download size) or failed (no holder served it in time).
/// Answers the media's view; one already complete or downloading is left as it is.
#[utoipa::path(post, path = "/v1/media/{hash}/download", operation_id = "fetch_media", tag = "media", params(("hash" = String, Path, description = "The media hash (64 hex digits)"), ("of" = Option<String>, Query, description = "One message's media record (its media view's `id`), when several messages named this hash")),
    responses(
        (status = 200, description = "The media, downloading (or as it was)", body = MediaView),
        (status = 400, description = "`invalid_path`: not a media hash; `invalid_query`: a bad `of`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such media on this node", body = ErrorBody),
        (status = 422, description = "`invalid_input`: media the local user sent, or from \
            someone who is not a contact", body = ErrorBody),
    ))]
pub(super) async fn fetch(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<MediaView>, ApiError> {
    let (_, rec) = lookup(&s, &raw, &q)?;
    s.node
        .fetch_media(&rec.id())
        .map(|rec| Json(rec.view()))
        .map_err(|e| node_error(e, Input::Query))
}

/// `POST /v1/media/{hash}/link`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct MediaLink {
    /// `GET` this for the file, without the token, until `expires_at_ms`.
    url: String,
    /// The same for its preview.
    preview_url: String,
    /// When both stop working, unix ms.
    expires_at_ms: u64,
}

/// `POST /v1/media/{hash}/link`: a URL for this media (and its preview) that works without
/// the token for [`LINK_LIFETIME`] — what a `<video>` element needs to stream with Range.
#[utoipa::path(post, path = "/v1/media/{hash}/link", operation_id = "media_link", tag = "media", params(("hash" = String, Path, description = "The media hash (64 hex digits)"), ("of" = Option<String>, Query, description = "One message's media record (its media view's `id`), when several messages named this hash")),
    responses((status = 200, description = "Links valid for an hour", body = MediaLink), (status = 400, description = "`invalid_path`: not a media hash; `invalid_query`: a bad `of`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such media on this node", body = ErrorBody)))]
pub(super) async fn link(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<MediaLink>, ApiError> {
    let (hash, rec) = lookup(&s, &raw, &q)?;
    let of = match q.contains_key("of") {
        true => format!("&of={}", rec.id().to_hex()),
        false => String::new(),
    };
    let exp = crate::time::now_ms() + LINK_LIFETIME.as_millis() as u64;
    let path = format!("/v1/media/{hash}");
    let preview = format!("/v1/media/{hash}/preview");
    let url = format!(
        "{path}?exp={exp}&cap={}{of}",
        hex::encode(link_cap(&s.link_key, &path, exp))
    );
    let preview_url = format!(
        "{preview}?exp={exp}&cap={}{of}",
        hex::encode(link_cap(&s.link_key, &preview, exp))
    );
    Ok(Json(MediaLink {
        url,
        preview_url,
        expires_at_ms: exp,
    }))
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        format!("media files may be at most {max} bytes"),
    )
}

fn io_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "media file I/O failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Storage,
        format!("media storage failed: {e}"),
    )
}

/// A file's raw bytes, as the API reference names them (`type: string, format: binary`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only named in the document: bodies are streamed, never held whole.
pub(super) struct FileBytes(Vec<u8>);

/// `POST /v1/media`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Uploaded {
    /// The new message's id.
    id: String,
    /// Its status (pending until a peer holds it).
    #[schema(value_type = StatusSchema)]
    status: kith_protocol::DeliveryStatus,
    /// The media hash: `GET /v1/media/{hash}`.
    hash: String,
}

/// `POST /v1/media?to=<user>&name=<file name>&caption=<text>`, body: the raw file.
#[utoipa::path(post, path = "/v1/media", operation_id = "upload_media", tag = "media",
    params(
        ("to" = Option<String>, Query, description = "A contact's user id (or `group`)"),
        ("group" = Option<String>, Query, description = "A group id (or `to`)"),
        ("name" = Option<String>, Query, description = "The file name shown (default `file`)"),
        ("caption" = Option<String>, Query, description = "A caption, the message's text"),
    ),
    request_body(content = FileBytes, content_type = "application/octet-stream",
        description = "The raw file; its `Content-Type` is carried (images and videos get a \
            preview)"),
    responses(
        (status = 201, description = "Stored and being sent", body = Uploaded),
        (status = 400, description = "`invalid_query`: neither or both of `to` and `group`, \
            or a bad id; `body_error`: the upload was cut", body = ErrorBody),
        (status = 403, description = "`not_member`: the local user is not in the group; \
            `forbidden_origin`", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: `to` is neither a contact nor a \
            request; `not_found`: no such group", body = ErrorBody),
        (status = 413, description = "`too_large`: over the node's media size limit", body = ErrorBody),
    ))]
pub(super) async fn upload(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let to =
        match (q.get("to"), q.get("group")) {
            (Some(to), None) => {
                let to = parse_user_id(to).map_err(|e| ApiError::query(e.message))?;
                s.node
                    .check_contact(&to)
                    .map_err(|e| node_error(e, Input::Query))?;
                Chat::User(to)
            }
            (None, Some(group)) => {
                let group = parse_group_id(group).map_err(|e| ApiError::query(e.message))?;
                s.node
                    .check_group_member(&group)
                    .map_err(|e| node_error(e, Input::Query))?;
                Chat::Group(group)
            }
            _ => return Err(ApiError::query(
                "give exactly one of `to` (a user id) or `group` (a group id) in the query string",
            )),
        };
    let max = s.node.max_media_bytes();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let mime = carried_mime(headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    let name = sanitize_name(q.get("name").map(String::as_str).unwrap_or("file"));
    let caption = q.get("caption").cloned().unwrap_or_default();
    let temp = s.node.media_files().temp_path();
    let written = write_body(&temp, body, max).await;
    let size = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    tracing::info!(size, %mime, "media received from the API; preparing");
    let file = FileToSend {
        name,
        mime,
        caption,
    };
    let sent = match to {
        Chat::User(to) => s.node.send_file(to, temp, file).await,
        Chat::Group(group) => s.node.send_group_file(group, temp, file).await,
    }
    .map_err(|e| node_error(e, Input::Query))?;
    let SentFile { sent, hash } = sent;
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            id: sent.id,
            status: sent.status,
            hash: hash.to_hex(),
        }),
    ))
}

/// Streams a request body into `path`, refusing past `max` bytes; syncs it. Returns its size.
async fn write_body(path: &std::path::Path, body: Body, max: u64) -> Result<u64, ApiError> {
    let mut file = tokio::fs::File::create(path).await.map_err(io_error)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BodyError,
                format!("the upload was cut: {e}"),
            )
        })?;
        total += chunk.len() as u64;
        if total > max {
            return Err(too_large(max));
        }
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    file.sync_all().await.map_err(io_error)?;
    Ok(total)
}

fn parse_hash(raw: &str) -> Result<BlobHash, ApiError> {
    BlobHash::from_hex(raw).map_err(|_| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPath,
            format!("`{shown}` is not a media hash (64 hex digits)"),
        )
    })
}

/// The media named by a path segment, or the error to answer: of the records of messages that
/// named this hash, the one the user means ([`crate::Node::media`]).
fn lookup(
    s: &ApiState,
    raw: &str,
    query: &HashMap<String, String>,
) -> Result<(BlobHash, crate::media::MediaRecord), ApiError> {
    let hash = parse_hash(raw)?;
    let rec = match query.get("of") {
        None => s.node.media(&hash),
        Some(of) => {
            let id = hex::decode(of)
                .ok()
                .and_then(|key| MediaId::from_key(&key))
                .ok_or_else(|| {
                    ApiError::query("`of` is not the id of a message's media (its `id`, in hex)")
                })?;
            // Only a record of this hash: the path names the blob, `of` which message's.
            s.node
                .media_record(&id)
                .map(|r| r.filter(|r| r.hash == hash))
        }
    }
    .map_err(|e| node_error(e, Input::Query))?
    .ok_or_else(|| not_found(&hash))?;
    Ok((hash, rec))
}

fn not_found(hash: &BlobHash) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no media {hash} on this node"),
    )
}

/// A `Range: bytes=…` header resolved against a file of `size` bytes: `Ok(None)` for no (or
/// an unsupported multi-part) range, `Err` for one that cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `GET /v1/media/{hash}`: the decrypted file.
#[utoipa::path(get, path = "/v1/media/{hash}", operation_id = "download_media", tag = "media",
    params(("hash" = String, Path, description = "The media hash (64 hex digits)"), ("of" = Option<String>, Query, description = "One message's media record (its media view's `id`), when several messages named this hash"), ("exp" = Option<u64>, Query, description = "A media link's expiry (unix ms), in place of the token"),
        ("cap" = Option<String>, Query, description = "A media link's capability (hex), in place of the token"),
        ("Range" = Option<String>, Header, description = "One `bytes=` range; a download in \
            progress serves what is verified"),
    ),
    responses(
        (status = 200, description = "The file, with its own `Content-Type`", body = FileBytes,
            content_type = "application/octet-stream"),
        (status = 206, description = "The asked range", body = FileBytes,
            content_type = "application/octet-stream"),
        (status = 400, description = "`invalid_path`: not a media hash; `invalid_query`: a bad `of`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such media on this node", body = ErrorBody),
        (status = 409, description = "`media_incomplete`: not on disk as far as asked yet", body = ErrorBody),
        (status = 410, description = "`media_failed`: the download failed; \
            `POST /v1/media/{hash}/download` tries again", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range is outside the file", body = ErrorBody),
    ))]
pub(super) async fn download(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (hash, rec) = lookup(&s, &raw, &q)?;
    let size = rec.size;
    let range = match headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => parse_range(v, size).map_err(|()| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
                format!("the file has {size} bytes"),
            )
        })?,
    };
    // Bytes on disk that are verified; a download in progress serves its verified prefix.
    let mut rec = rec;
    let deadline = tokio::time::Instant::now() + RANGE_WAIT;
    loop {
        let avail = rec.verified_bytes();
        let needed = match range {
            Some((start, _)) => start + 1,
            None => size,
        };
        // Nothing of a failed download is served: its bytes are not the blob it names (a
        // file the user sent stays theirs to read).
        let servable = rec.outgoing || rec.state != MediaState::Failed;
        if servable && (avail >= needed || size == 0) {
            break;
        }
        if rec.state != MediaState::Downloading || tokio::time::Instant::now() >= deadline {
            let (status, code) = if rec.state == MediaState::Failed {
                (StatusCode::GONE, ErrorCode::MediaFailed)
            } else {
                (StatusCode::CONFLICT, ErrorCode::MediaIncomplete)
            };
            return Err(ApiError::new(
                status,
                code,
                format!(
                    "media is {:?}, {:.0}% verified; ask again, or ask for a range",
                    rec.state,
                    rec.progress() * 100.0
                ),
            ));
        }
        tokio::time::sleep(RANGE_POLL).await;
        // The same record (the message's own), not whichever one the hash resolves to now.
        rec = match s.node.media_record(&rec.id()) {
            Ok(Some(r)) => r,
            _ => return Err(not_found(&hash)),
        };
    }
    let avail = rec.verified_bytes();
    let files = s.node.media_files();
    let path = files.current_path(&rec);
    let (status, start, len) = match range {
        Some((start, end)) => {
            let end = end.min(avail.saturating_sub(1));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        // A download that just completed was renamed between the two reads.
        Err(_) if !rec.outgoing => tokio::fs::File::open(files.path_of(&rec))
            .await
            .map_err(io_error)?,
        Err(e) => return Err(io_error(e)),
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(io_error)?;
    let reader = tokio::io::AsyncReadExt::take(file, len);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&rec.mime)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {start}-{}/{size}",
            start + len.saturating_sub(1)
        )) {
            h.insert(CONTENT_RANGE, v);
        }
    }
    // Received files are the sender's bytes: never let the browser sniff them into HTML or
    // run them on the API's origin.
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox; default-src 'none'; media-src 'self'; img-src 'self'"),
    );
    let inline = INLINE_TYPES.contains(&rec.mime.as_str()) && rec.mime != "text/plain";
    let ascii_name: String = rec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}; filename=\"{ascii_name}\"",
        if inline { "inline" } else { "attachment" }
    )) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `GET /v1/media/{hash}/preview`: the thumbnail (JPEG).
#[utoipa::path(get, path = "/v1/media/{hash}/preview", operation_id = "media_preview", tag = "media", params(("hash" = String, Path, description = "The media hash (64 hex digits)"), ("of" = Option<String>, Query, description = "One message's media record (its media view's `id`), when several messages named this hash"), ("exp" = Option<u64>, Query, description = "A media link's expiry (unix ms), in place of the token"),
        ("cap" = Option<String>, Query, description = "A media link's capability (hex), in place of the token")),
    responses(
        (status = 200, description = "The thumbnail", body = FileBytes, content_type = "image/jpeg"),
        (status = 400, description = "`invalid_path`: not a media hash; `invalid_query`: a bad `of`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such media; `no_preview`: it has no \
            preview", body = ErrorBody),
    ))]
pub(super) async fn preview(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (_, rec) = lookup(&s, &raw, &q)?;
    if rec.preview.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoPreview,
            "this media has no preview",
        ));
    }
    let mut resp = rec.preview.into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=2-4", 10), Ok(Some((2, 4))));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(Some((5, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(parse_range("items=0-1", 10), Ok(None));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=4-2", 10), Err(()));
        assert_eq!(parse_range("bytes=x-", 10), Err(()));
        assert_eq!(parse_range("bytes=-0", 10), Err(()));
    }
}
