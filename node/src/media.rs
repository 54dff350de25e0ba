//! Media on a user's node: where blob files live, what the node remembers about each blob,
//! and the one pass that turns an uploaded file into a sendable [`MediaRef`].
//!
//! Files, not sled: a 100 MiB video must never sit in the database or in memory. Plaintext
//! blobs the local user sent live in `<data dir>/media/<hash>`; a received blob lives in
//! `<data dir>/media/<media id>` once every chunk is verified and its hash checked; a download
//! in progress writes `<media id>.part` at each chunk's offset and is renamed when complete;
//! an upload through the API streams into `tmp/` first. The ciphertext is never stored here:
//! it is made chunk by chunk when a peer asks for it, so Range requests are served straight
//! from the plaintext file.
//!
//! The bookkeeping ([`MediaRecord`]: key, layout, state, verified-chunk count, holders) lives
//! in sled next to the message it belongs to, so a restart resumes where it stopped.
//!
//! Code map: this file holds the records and views; [`MediaFiles`] (in `files`) names and
//! moves the files; `sealing` seals, hashes and previews them.
//!
//! A record belongs to the message that carried it ([`MediaId`]: direction, other user,
//! message id), not to its blob hash: anyone can name any hash in a message of their own, so a
//! second message naming an existing hash gets a record, a file and a transfer of its own, and
//! can never replace, reset or take over the first one. A received record only completes when
//! its chunks open under its own key and the whole ciphertext has its own hash.

use std::path::{Path, PathBuf};

use kith_protocol::{
    blob::{self, BlobHash, BlobKey, BlobLayout},
    payload::MediaRef,
    MessageId, UserId,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

mod files;
mod sealing;

pub use files::{sync_dir, MediaFiles};
pub use sealing::{
    blob_hash_of, make_preview, prepare, prepare_upload, read_sealed_chunk, write_chunk, Prepared,
};

/// Name of the media directory in the data directory.
pub const MEDIA_DIR: &str = "media";

/// Longest side of a preview thumbnail, in pixels.
pub const PREVIEW_SIDE: u32 = 160;

/// Largest image the node decodes to make a preview (bigger images are sent without one).
pub const MAX_PREVIEW_SOURCE: u64 = 32 * 1024 * 1024;

/// MIME types the API serves inline; any other type is carried and served as
/// `application/octet-stream`, so a received file can never become a script on the API's
/// origin (SVG and HTML are deliberately absent).
pub const INLINE_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/mp4",
    "audio/webm",
    "application/pdf",
    "text/plain",
];

/// The MIME type for anything else.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The type carried for a declared `Content-Type`: its essence (no parameters) when it is one
/// of [`INLINE_TYPES`], else [`OCTET_STREAM`].
pub fn carried_mime(declared: Option<&str>) -> String {
    let essence = declared
        .and_then(|d| d.split(';').next())
        .map(|d| d.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if INLINE_TYPES.contains(&essence.as_str()) {
        essence
    } else {
        OCTET_STREAM.to_string()
    }
}

/// Where a blob is in its life on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaState {
    /// Ours, being uploaded to the recipient's store peers.
    Uploading,
    /// Ours, ready for the recipient (from this node or from store peers).
    Available,
    /// Theirs, being fetched and verified.
    Downloading,
    /// Theirs, every chunk verified and on disk.
    Complete,
    /// Gave up (the blob expired before it could be fetched or uploaded, or no holder served
    /// it in time); a download may be retried by the user.
    Failed,
    /// Theirs, not fetched until the user asks (`POST /v1/media/{hash}/download`): it is
    /// larger than the auto-download limit, or its sender is not a contact yet. (Last, so
    /// records written before it existed still decode.)
    Waiting,
}

/// Which media record: the message that carried it. Two messages naming the same blob hash
/// (a forwarded file, or someone front-running another sender's hash) are two records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId {
    /// Sent by the local user (else received from `peer`).
    pub outgoing: bool,
    /// The other user of the conversation.
    pub peer: UserId,
    /// The message that carried the media reference.
    pub message: MessageId,
}

impl MediaId {
    /// The sled key: `direction (1 out, 0 in) ‖ len(peer) ‖ peer ‖ message id`, so every
    /// record of a conversation is adjacent.
    pub fn to_key(&self) -> Vec<u8> {
        let peer = self.peer.to_bytes();
        let mut key = Vec::with_capacity(2 + peer.len() + 16);
        key.push(u8::from(self.outgoing));
        key.push(peer.len() as u8);
        key.extend_from_slice(&peer);
        key.extend_from_slice(self.message.as_bytes());
        key
    }

    /// Parses [`MediaId::to_key`]; `None` for anything else.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let (&dir, rest) = key.split_first()?;
        let outgoing = match dir {
            0 => false,
            1 => true,
            _ => return None,
        };
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if rest.len() != len + 16 {
            return None;
        }
        let peer = UserId::from_bytes(&rest[..len]).ok()?;
        let message = MessageId(rest[len..].try_into().ok()?);
        Some(MediaId {
            outgoing,
            peer,
            message,
        })
    }

    /// The key as lowercase hex: the name of a received blob's file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_key())
    }
}

impl std::fmt::Display for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.outgoing { "to" } else { "from" };
        write!(f, "{} {dir} {}", self.message, self.peer)
    }
}

/// What the node remembers about one blob carried by one message (sled tree `media_records`,
/// keyed by [`MediaId`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The blob's name.
    pub hash: BlobHash,
    /// Its key.
    pub key: [u8; 32],
    /// Plaintext size.
    pub size: u64,
    /// Chunk size it is encrypted in.
    pub chunk_size: u32,
    /// Carried MIME type.
    pub mime: String,
    /// File name as the sender had it.
    pub name: String,
    /// Thumbnail (JPEG), possibly empty.
    #[serde(with = "serde_bytes")]
    pub preview: Vec<u8>,
    /// The message that carries it.
    pub message: MessageId,
    /// The other user of the conversation.
    pub peer: UserId,
    /// Whether we sent it.
    pub outgoing: bool,
    /// Where it is.
    pub state: MediaState,
    /// Chunks done: verified and durable (downloads) or held by enough store peers (uploads).
    pub done_chunks: u64,
    /// Peers to fetch from (downloads) or upload to (uploads), as peer id bytes.
    pub holders: Vec<Vec<u8>>,
    /// When the blob may be dropped by store peers, unix ms.
    pub expires_at_ms: u64,
}

impl MediaRecord {
    /// The message this record belongs to.
    pub fn id(&self) -> MediaId {
        MediaId {
            outgoing: self.outgoing,
            peer: self.peer,
            message: self.message,
        }
    }

    /// Whether the whole plaintext is on disk (ours, or received and verified).
    pub fn is_whole(&self) -> bool {
        self.outgoing || self.state == MediaState::Complete
    }

    /// The chunk layout.
    pub fn layout(&self) -> Result<BlobLayout, blob::BlobError> {
        BlobLayout::new(self.size, self.chunk_size)
    }

    /// The key.
    pub fn blob_key(&self) -> BlobKey {
        BlobKey(self.key)
    }

    /// Holders, parsed.
    pub fn holder_peers(&self) -> Vec<PeerId> {
        self.holders
            .iter()
            .filter_map(|b| PeerId::from_bytes(b).ok())
            .collect()
    }

    /// Fraction done, 0.0..=1.0.
    pub fn progress(&self) -> f64 {
        match self.state {
            MediaState::Available | MediaState::Complete => 1.0,
            _ => {
                let count = self.layout().map(|l| l.chunk_count()).unwrap_or(1).max(1);
                (self.done_chunks as f64 / count as f64).min(1.0)
            }
        }
    }

    /// Plaintext bytes on disk that are verified, from offset 0 (none once failed: every
    /// chunk may have opened and the whole still not be the blob its hash names).
    pub fn verified_bytes(&self) -> u64 {
        if self.is_whole() {
            return self.size;
        }
        if self.state == MediaState::Failed {
            return 0;
        }
        self.layout()
            .map(|l| l.plain_offset(self.done_chunks).min(self.size))
            .unwrap_or(0)
    }

    /// The API view.
    pub fn view(&self) -> MediaView {
        MediaView {
            name: self.name.clone(),
            mime: self.mime.clone(),
            size: self.size,
            hash: self.hash.to_hex(),
            id: self.id().to_hex(),
            state: self.state,
            progress: (self.progress() * 1000.0).round() / 1000.0,
            has_preview: !self.preview.is_empty(),
        }
    }

    /// Builds the record for a received media reference.
    pub fn incoming(
        m: &MediaRef,
        message: MessageId,
        from: UserId,
        holders: &[PeerId],
        expires_at_ms: u64,
    ) -> Self {
        MediaRecord {
            hash: BlobHash(m.hash),
            key: m.key,
            size: m.size,
            chunk_size: m.chunk_size,
            mime: carried_mime(Some(&m.mime)),
            name: sanitize_name(&m.name),
            preview: m.preview.clone(),
            message,
            peer: from,
            outgoing: false,
            state: MediaState::Downloading,
            done_chunks: 0,
            holders: holders.iter().map(|p| p.to_bytes()).collect(),
            expires_at_ms,
        }
    }
}

/// A blob as the API shows it inside a conversation entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaView {
    /// File name.
    pub name: String,
    /// MIME type.
    pub mime: String,
    /// Size in bytes.
    pub size: u64,
    /// Blob hash (hex): `GET /v1/media/{hash}`.
    pub hash: String,
    /// This message's own record (hex): `GET /v1/media/{hash}?of={id}` serves exactly it, even
    /// when other messages named the same hash.
    pub id: String,
    /// uploading | available | downloading | complete | failed | waiting.
    pub state: MediaState,
    /// Fraction done, 0..1.
    pub progress: f64,
    /// Whether `GET /v1/media/{hash}/preview` has a thumbnail.
    pub has_preview: bool,
}

/// A file name safe to show and to offer as a download name: no path, no control characters,
/// at most 255 bytes.
pub fn sanitize_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = base.chars().filter(|c| !c.is_control()).collect();
    while clean.len() > 255 {
        clean.pop();
    }
    if clean.is_empty() || clean == "." || clean == ".." {
        "file".to_string()
    } else {
        clean
    }
}

/// Why a media file operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Reading or writing a blob file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The blob's layout or a chunk is invalid.
    #[error("blob: {0}")]
    Blob(#[from] blob::BlobError),
    /// The blocking task doing the file work ended without an answer.
    #[error("media task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MediaError + '_ {
    move |source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_dangerous_types_become_octet_stream() {
        assert_eq!(carried_mime(Some("image/png")), "image/png");
        assert_eq!(carried_mime(Some("Video/MP4; codecs=avc1")), "video/mp4");
        assert_eq!(carried_mime(Some("image/svg+xml")), OCTET_STREAM);
        assert_eq!(carried_mime(Some("text/html")), OCTET_STREAM);
        assert_eq!(carried_mime(Some("application/x-whatever")), OCTET_STREAM);
        assert_eq!(carried_mime(None), OCTET_STREAM);
    }

    #[test]
    fn names_lose_paths_and_control_characters() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\x\\a.png"), "a.png");
        assert_eq!(sanitize_name("a\u{0}b\nc.jpg"), "abc.jpg");
        assert_eq!(sanitize_name(""), "file");
        assert_eq!(sanitize_name(".."), "file");
        assert!(sanitize_name(&"x".repeat(1000)).len() <= 255);
    }
}
