//! Where a node's blob files live and how they move: sent files by hash, received ones by
//! media id, downloads in progress as `.part`, uploads through `tmp/`. Every rename is made
//! durable. It must never hold a file's content in memory.

use std::path::{Path, PathBuf};

use kith_protocol::blob::BlobHash;

use super::{io, MediaError, MediaId, MediaRecord};

/// The blob files of one node.
#[derive(Clone, Debug)]
pub struct MediaFiles {
    dir: PathBuf,
}

impl MediaFiles {
    /// Media files under `dir` (created if missing, with its `tmp/`; leftovers in `tmp/` from
    /// an interrupted upload are removed).
    pub fn open(dir: &Path) -> Result<Self, MediaError> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(MediaFiles {
            dir: dir.to_path_buf(),
        })
    }

    /// The media files under `dir` as they are (nothing created or removed).
    pub fn at(dir: &Path) -> Self {
        MediaFiles {
            dir: dir.to_path_buf(),
        }
    }

    /// The plaintext file of a blob the local user sent (named by its hash: it is written by
    /// `POST /v1/media` before its message exists, and only ever by the local user).
    pub fn sent_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// The complete plaintext file of a received blob (named by the message that carried it:
    /// another message naming the same hash never touches it).
    pub fn received_path(&self, id: &MediaId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    /// The file a download writes into.
    pub fn part_path(&self, id: &MediaId) -> PathBuf {
        self.dir.join(format!("{}.part", id.to_hex()))
    }

    /// The whole plaintext file of a record (sent, or received and complete).
    pub fn path_of(&self, rec: &MediaRecord) -> PathBuf {
        if rec.outgoing {
            self.sent_path(&rec.hash)
        } else {
            self.received_path(&rec.id())
        }
    }

    /// The file holding a record's verified bytes now: the whole file, or the download's.
    pub fn current_path(&self, rec: &MediaRecord) -> PathBuf {
        if rec.is_whole() {
            self.path_of(rec)
        } else {
            self.part_path(&rec.id())
        }
    }

    /// A fresh temporary path for an upload.
    pub fn temp_path(&self) -> PathBuf {
        self.dir
            .join("tmp")
            .join(format!("{:032x}.upload", rand::random::<u128>()))
    }

    /// Moves a prepared temporary file to its blob name, durably.
    pub fn commit_temp(&self, temp: &Path, hash: &BlobHash) -> Result<PathBuf, MediaError> {
        let to = self.sent_path(hash);
        std::fs::rename(temp, &to).map_err(io(&to))?;
        sync_dir(&self.dir);
        Ok(to)
    }

    /// Moves a finished download to its received name, durably.
    pub fn commit_part(&self, id: &MediaId) -> Result<PathBuf, MediaError> {
        let from = self.part_path(id);
        let to = self.received_path(id);
        std::fs::rename(&from, &to).map_err(io(&to))?;
        sync_dir(&self.dir);
        Ok(to)
    }

    /// Removes a download's file (it cannot complete); a missing file is fine.
    pub fn remove_part(&self, id: &MediaId) -> Result<(), MediaError> {
        let path = self.part_path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// Makes a rename durable (best effort: not every platform can open a directory).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
