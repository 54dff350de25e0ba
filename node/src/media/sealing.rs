//! Blobs from files: sealing chunk by chunk to name a blob by its ciphertext's hash, sealed
//! chunks read for peers, verified chunks written, previews. Blocking functions, one chunk in
//! memory at a time.

use std::{
    io::{Read, Write},
    path::Path,
};

use kith_protocol::blob::{self, BlobHash, BlobHasher, BlobKey, BlobLayout};

use super::{io, MediaError, MediaFiles, MAX_PREVIEW_SOURCE, PREVIEW_SIDE};

/// What [`prepare`] learned about a file.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The blob's name (hash of its ciphertext under the fresh key).
    pub hash: BlobHash,
    /// Plaintext size.
    pub size: u64,
    /// Thumbnail, empty when none could be made.
    pub preview: Vec<u8>,
}

/// Encrypts `path` chunk by chunk under `key` to name it (the ciphertext is hashed and thrown
/// away: it is made again whenever a peer asks), and makes a preview for images. Blocking:
/// run it on a blocking thread. Memory: one chunk, plus the decoded image for previews.
pub fn prepare(
    path: &Path,
    key: &BlobKey,
    chunk_size: u32,
    mime: &str,
) -> Result<Prepared, MediaError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let size = file.metadata().map_err(io(path))?.len();
    let layout = BlobLayout::new(size, chunk_size)?;
    let hash = hash_sealed(file, path, key, &layout)?;
    let preview = if mime.starts_with("image/") && size <= MAX_PREVIEW_SOURCE {
        make_preview(path).unwrap_or_else(|e| {
            tracing::info!(error = %e, "no preview for this image");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    Ok(Prepared {
        hash,
        size,
        preview,
    })
}

/// Makes the file at `temp` (written by the caller under [`MediaFiles::temp_path`]) a blob
/// the local user sends: a fresh key, the blob's hash and preview ([`prepare`]), and the file
/// moved to [`MediaFiles::sent_path`] of that hash. Blocking. On error `temp` is left for the
/// caller to remove.
pub fn prepare_upload(
    files: &MediaFiles,
    temp: &Path,
    mime: &str,
) -> Result<(Prepared, BlobKey), MediaError> {
    let key = BlobKey::generate(&mut rand::rngs::OsRng);
    let prepared = prepare(temp, &key, blob::DEFAULT_CHUNK_SIZE, mime)?;
    files.commit_temp(temp, &prepared.hash)?;
    Ok((prepared, key))
}

/// The blob hash of the plaintext at `path` sealed under `key` in `layout`: what a received
/// file must hash to before it counts as the sender's blob. Blocking; memory: one chunk.
pub fn blob_hash_of(
    path: &Path,
    key: &BlobKey,
    layout: &BlobLayout,
) -> Result<BlobHash, MediaError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    hash_sealed(file, path, key, layout)
}

/// Seals `file` chunk by chunk and hashes the ciphertext (sealing is deterministic, so the
/// sender and every recipient get the same hash from the same plaintext and key).
fn hash_sealed(
    mut file: std::fs::File,
    path: &Path,
    key: &BlobKey,
    layout: &BlobLayout,
) -> Result<BlobHash, MediaError> {
    let mut hasher = BlobHasher::new();
    let mut buf = vec![0u8; layout.plain_len(0)?];
    for index in 0..layout.chunk_count() {
        let len = layout.plain_len(index)?;
        file.read_exact(&mut buf[..len]).map_err(io(path))?;
        hasher.update(&blob::seal_chunk(key, layout, index, &buf[..len])?);
    }
    Ok(hasher.finish())
}

/// Most memory the image decoder may allocate for a preview.
const PREVIEW_MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Widest and tallest image a preview is made of, in pixels.
const PREVIEW_MAX_SIDE: u32 = 16_384;

/// A JPEG thumbnail of the image at `path`, at most [`PREVIEW_SIDE`] pixels on its longest
/// side; the decoder's allocations are capped.
pub fn make_preview(path: &Path) -> Result<Vec<u8>, image::ImageError> {
    let mut reader = image::ImageReader::open(path)?.with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(PREVIEW_MAX_ALLOC);
    limits.max_image_width = Some(PREVIEW_MAX_SIDE);
    limits.max_image_height = Some(PREVIEW_MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode()?;
    let thumb = img.thumbnail(PREVIEW_SIDE, PREVIEW_SIDE).into_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 70);
    enc.encode_image(&thumb)?;
    Ok(out.into_inner())
}

/// Reads plaintext chunk `index` of a blob file and seals it (what a peer is sent).
pub fn read_sealed_chunk(
    file: &mut std::fs::File,
    path: &Path,
    key: &BlobKey,
    layout: &BlobLayout,
    index: u64,
) -> Result<Vec<u8>, MediaError> {
    use std::io::{Seek, SeekFrom};
    let len = layout.plain_len(index)?;
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(layout.plain_offset(index)))
        .map_err(io(path))?;
    file.read_exact(&mut buf).map_err(io(path))?;
    Ok(blob::seal_chunk(key, layout, index, &buf)?)
}

/// Writes a verified plaintext chunk at its offset in a `.part` file.
pub fn write_chunk(
    file: &mut std::fs::File,
    path: &Path,
    layout: &BlobLayout,
    index: u64,
    plain: &[u8],
) -> Result<(), MediaError> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(layout.plain_offset(index)))
        .map_err(io(path))?;
    file.write_all(plain).map_err(io(path))
}
