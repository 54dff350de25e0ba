//! Backup and restore: the whole node — identity, contacts, sessions, history, groups,
//! settings (every sled tree) and, on request, the media files — in one archive sealed under
//! the user's passphrase ([`kith_protocol::backup`]), so losing the data directory no longer
//! loses the identity and every conversation.
//!
//! A running node is dumped through its API (`GET /v1/backup`, token-guarded: sled allows one
//! process per database); a stopped one straight from its data directory. Either way the
//! plaintext never touches the disk: it is sealed in memory and written to a temporary file
//! renamed into place. A restore decrypts and decodes everything before it writes anything,
//! so a wrong passphrase or a damaged archive leaves the target directory as it was.
//!
//! Limits: the dump is held in memory (history plus media, if asked), and a running node's
//! trees are read one after the other, not as one snapshot (a message arriving meanwhile may
//! be in one tree and not yet in another; the message's sender delivers it again).

use std::path::{Component, Path, PathBuf};

use kith_protocol::backup::{self as sealed, KdfCost};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{media::MEDIA_DIR, store::DB_DIR};

/// The format of [`BackupContents`].
pub const FORMAT: u32 = 1;

/// What an archive holds once opened.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupContents {
    /// [`FORMAT`].
    pub format: u32,
    /// The user it belongs to.
    pub user: String,
    /// When it was made, unix ms.
    pub created_at_ms: u64,
    /// Every sled tree, by name, with its entries.
    pub trees: Vec<TreeDump>,
    /// Media files (relative paths under `media/`), if asked for.
    pub media: Vec<FileDump>,
}

/// One sled tree.
#[derive(Debug, Serialize, Deserialize)]
pub struct TreeDump {
    /// Its name.
    pub name: ByteBuf,
    /// Its entries, in key order.
    pub entries: Vec<(ByteBuf, ByteBuf)>,
}

/// One media file.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileDump {
    /// Its path under `media/`, `/`-separated.
    pub path: String,
    /// Its bytes (as stored: media files are kept encrypted at rest where the node does).
    pub bytes: ByteBuf,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Sealing or opening the archive failed (wrong passphrase, damage, not a backup).
    #[error(transparent)]
    Archive(#[from] sealed::BackupError),
    /// The database could not be read or written.
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node is running (its database is locked): back it up through its API.
    #[error("the node is running")]
    NodeRunning,
    /// The data directory already holds a node.
    #[error("{0} already holds a node; restore into an empty data directory")]
    NotEmpty(PathBuf),
    /// The archive opened but its contents do not decode (or are of a newer format).
    #[error("the backup's contents do not decode: {0}")]
    Contents(String),
    /// A media path in the archive would leave the media directory.
    #[error("unsafe media path in the backup: {0}")]
    UnsafePath(String),
    /// The database holds no identity.
    #[error("no identity in {0}: nothing to back up")]
    NoIdentity(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every tree of `db` with its entries.
pub fn dump_trees(db: &sled::Db) -> Result<Vec<TreeDump>, sled::Error> {
    let mut trees = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let mut entries = Vec::with_capacity(tree.len());
        for item in tree.iter() {
            let (k, v) = item?;
            entries.push((ByteBuf::from(k.to_vec()), ByteBuf::from(v.to_vec())));
        }
        trees.push(TreeDump {
            name: ByteBuf::from(name.to_vec()),
            entries,
        });
    }
    Ok(trees)
}

/// Every file under `dir` (recursively), with paths relative to it.
pub fn dump_media(dir: &Path) -> Result<Vec<FileDump>, BackupError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io(&d))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                out.push(FileDump {
                    path: rel.join("/"),
                    bytes: ByteBuf::from(bytes),
                });
            }
        }
    }
    Ok(out)
}

/// The user id stored in a database's identity, if any.
fn user_of(db: &sled::Db) -> Result<Option<String>, BackupError> {
    let Some(bytes) = db.open_tree("meta")?.get("identity")? else {
        return Ok(None);
    };
    kith_protocol::LocalIdentity::from_bytes(&bytes)
        .map(|id| Some(id.user_id().to_string()))
        .map_err(|e| BackupError::Contents(e.to_string()))
}

/// The contents of a stopped node's data directory. [`BackupError::NodeRunning`] when its
/// database is locked by a running node.
pub fn contents_of_data_dir(
    data_dir: &Path,
    media: bool,
    now_ms: u64,
) -> Result<BackupContents, BackupError> {
    let db_dir = data_dir.join(DB_DIR);
    if !db_dir.exists() {
        return Err(BackupError::NoIdentity(data_dir.to_path_buf()));
    }
    let db = match sled::Config::new().path(&db_dir).open() {
        Ok(db) => db,
        Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(BackupError::NodeRunning)
        }
        Err(e) => return Err(e.into()),
    };
    let user = user_of(&db)?.ok_or_else(|| BackupError::NoIdentity(data_dir.to_path_buf()))?;
    contents(&db, user, data_dir, media, now_ms)
}

/// The contents of an open database (a running node's, through its store).
pub fn contents(
    db: &sled::Db,
    user: String,
    data_dir: &Path,
    media: bool,
    now_ms: u64,
) -> Result<BackupContents, BackupError> {
    Ok(BackupContents {
        format: FORMAT,
        user,
        created_at_ms: now_ms,
        trees: dump_trees(db)?,
        media: if media {
            dump_media(&data_dir.join(MEDIA_DIR))?
        } else {
            Vec::new()
        },
    })
}

/// The contents as bytes (what `GET /v1/backup` answers and what is sealed).
pub fn encode(contents: &BackupContents) -> Result<Vec<u8>, BackupError> {
    bincode::serde::encode_to_vec(contents, bincode::config::standard())
        .map_err(|e| BackupError::Contents(e.to_string()))
}

/// Bytes made by [`encode`], checked.
pub fn decode(bytes: &[u8]) -> Result<BackupContents, BackupError> {
    let (contents, _): (BackupContents, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| BackupError::Contents(e.to_string()))?;
    if contents.format != FORMAT {
        return Err(BackupError::Contents(format!(
            "format {} (this build reads {FORMAT})",
            contents.format
        )));
    }
    Ok(contents)
}

/// Seals encoded contents under `passphrase` (fresh salt and nonce prefix).
pub fn seal(encoded: &[u8], passphrase: &str, cost: KdfCost) -> Result<Vec<u8>, BackupError> {
    let mut salt = [0u8; 16];
    let mut prefix = [0u8; 7];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut prefix);
    Ok(sealed::seal(
        encoded,
        passphrase.as_bytes(),
        cost,
        salt,
        prefix,
    )?)
}

/// Writes `bytes` to `file` through a temporary file in the same directory, refusing to
/// replace an existing file.
pub fn write_new(file: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    if file.exists() {
        return Err(io(file)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "already exists; choose another name",
        )));
    }
    let tmp = file.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, file).map_err(io(file))
}

/// Brings a node back into `data_dir` (which must hold none) from `archive`. Returns the
/// restored user id. Nothing is written unless the archive opens and decodes.
pub fn restore(data_dir: &Path, archive: &[u8], passphrase: &str) -> Result<String, BackupError> {
    let db_dir = data_dir.join(DB_DIR);
    if db_dir.exists() {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    let contents = decode(&sealed::open(archive, passphrase.as_bytes())?)?;
    let mut files = Vec::with_capacity(contents.media.len());
    for f in &contents.media {
        let rel = Path::new(&f.path);
        if f.path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(BackupError::UnsafePath(f.path.clone()));
        }
        files.push((data_dir.join(MEDIA_DIR).join(rel), &f.bytes));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let db = sled::Config::new().path(&db_dir).open()?;
    for t in &contents.trees {
        let tree = db.open_tree(&t.name[..])?;
        for (k, v) in &t.entries {
            tree.insert(&k[..], &v[..])?;
        }
    }
    db.flush()?;
    drop(db);
    for (path, bytes) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, &bytes[..]).map_err(io(&path))?;
    }
    Ok(contents.user)
}
