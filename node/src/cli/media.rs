//! `kith send --file` and `kith media get`: files streamed to and from the API with a
//! progress bar, never held whole in memory.

use std::path::Path;

use anyhow::{Context, Result};
use kith_node::client::ApiClient;

use super::{out::outln, progress::progress_bar};

/// The MIME type of a file by its extension (the node carries anything else as
/// `application/octet-stream`).
fn mime_of(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// `kith send <user|group> --file <path>`: streams the file to the API with a progress bar.
pub async fn send_file(
    client: &ApiClient,
    user: &str,
    path: &Path,
    caption: Option<&str>,
) -> Result<kith_node::client::MediaSent> {
    use futures::StreamExt;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_string();
    let bar = progress_bar(len, &format!("sending {name}"));
    let counted = bar.clone();
    let stream = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
        if let Ok(c) = chunk {
            counted.inc(c.len() as u64);
        }
    });
    let body = reqwest::Body::wrap_stream(stream);
    let sent = if kith_node::client::is_group_id(user) {
        client
            .send_group_media(user, &name, mime_of(path), caption, body)
            .await
    } else {
        client
            .send_media(user, &name, mime_of(path), caption, body)
            .await
    };
    bar.finish_and_clear();
    Ok(sent?)
}

/// `kith media fetch <hash>`.
pub async fn fetch_media(client: &ApiClient, hash: &str) -> Result<()> {
    let view = client.fetch_media(hash).await?;
    outln!(
        "{} ({} bytes): {:?}, {:.0}%",
        view.name,
        view.size,
        view.state,
        view.progress * 100.0
    )
}

/// `kith media get <hash> -o <path>`: streams the decrypted file to `output` (through a
/// temporary name, so a cut download never looks complete).
pub async fn get_media(client: &ApiClient, hash: &str, output: &Path) -> Result<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let res = client.media(hash).await?;
    let len = res.content_length().unwrap_or(0);
    let bar = progress_bar(len, "receiving");
    let tmp = output.with_extension("kith-part");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut")?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await?;
    tokio::fs::rename(&tmp, output)
        .await
        .with_context(|| format!("renaming to {}", output.display()))?;
    bar.finish_and_clear();
    outln!("{}", output.display())
}
