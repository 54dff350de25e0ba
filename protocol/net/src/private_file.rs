//! Secrets on disk: identity keys and the API token, and the path-naming I/O error both node
//! kinds report for their data directory.
//!
//! Such a file must never exist, even for an instant, with permissions that let another local
//! user read it, and must never be seen half-written after a crash. So it is created with mode
//! 0600 from the first byte (not chmod'ed afterwards), written under a temporary name,
//! `fsync`ed, renamed over its final name, and the directory is `fsync`ed so the rename itself
//! survives a power loss. Its directory is created with mode 0700.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

/// Permissions of a secret file: readable and writable by its owner only.
pub const FILE_MODE: u32 = 0o600;

/// Permissions of a directory holding secrets: its owner only.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and its parents) if missing, the last component with [`DIR_MODE`] from the
/// start; an existing directory is restricted to [`DIR_MODE`] too.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` atomically and durably, readable by the owner only from the
/// moment the file exists. Replaces an existing file of that name.
pub fn write_private_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    // A temporary file left by a crash may have any content: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // Not every platform can open a directory for syncing; where it cannot, there is nothing
    // more to do.
    match fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(_) if !cfg!(unix) => Ok(()),
        Err(e) => Err(e),
    }
}

/// An I/O error on a file or directory, naming it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PathError {
    /// Which file or directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Turns an I/O error on `path` into a [`PathError`] (for `map_err`).
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> PathError + '_ {
    move |source| PathError {
        path: path.to_path_buf(),
        source,
    }
}

/// The secret `name` in `dir`, made by `create` and written as a private file on first use.
/// `dir` is created (or restricted) as a private directory either way.
pub fn load_or_create_secret<E: From<PathError>>(
    dir: &Path,
    name: &str,
    create: impl FnOnce() -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    create_private_dir(dir).map_err(at(dir))?;
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bytes = create()?;
            write_private_file(dir, name, &bytes).map_err(at(&path))?;
            Ok(bytes)
        }
        Err(e) => Err(at(&path)(e).into()),
    }
}

/// Why a libp2p identity key file could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing it failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The file is not a valid key.
    #[error("identity key in {0} is invalid")]
    BadKey(PathBuf),
}

/// Loads the libp2p identity key (protobuf encoding) `name` in `dir`, creating a fresh
/// Ed25519 key on first use.
pub fn load_or_create_keypair(
    dir: &Path,
    name: &str,
) -> Result<libp2p::identity::Keypair, KeyFileError> {
    let path = dir.join(name);
    let bad = || KeyFileError::BadKey(path.clone());
    let bytes = load_or_create_secret(dir, name, || {
        libp2p::identity::Keypair::generate_ed25519()
            .to_protobuf_encoding()
            .map_err(|_| bad())
    })?;
    libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(|_| bad())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_secret_file_is_owner_only_and_complete() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        write_private_file(&dir, "key", b"secret").unwrap();
        assert_eq!(fs::read(dir.join("key")).unwrap(), b"secret");
        assert!(!dir.join("key.tmp").exists());
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), DIR_MODE);
            assert_eq!(mode(&dir.join("key")), FILE_MODE);
        }
    }

    #[test]
    fn a_leftover_temporary_file_is_replaced_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        // What a crash between create and rename leaves behind, world-readable and longer.
        fs::write(dir.path().join("token.tmp"), b"stale stale stale").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                dir.path().join("token.tmp"),
                fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        write_private_file(dir.path(), "token", b"fresh").unwrap();
        assert_eq!(fs::read(dir.path().join("token")).unwrap(), b"fresh");
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join("token")), FILE_MODE);
    }

    #[test]
    fn an_existing_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_private_file(dir.path(), "token", b"first, longer value").unwrap();
        write_private_file(dir.path(), "token", b"second").unwrap();
        assert_eq!(fs::read(dir.path().join("token")).unwrap(), b"second");
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_directory_is_restricted() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
    }

    #[test]
    fn a_key_file_is_created_once_then_loaded() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let first = load_or_create_keypair(&dir, "identity.key").unwrap();
        let again = load_or_create_keypair(&dir, "identity.key").unwrap();
        assert_eq!(first.public(), again.public());
        fs::write(dir.join("identity.key"), b"not a key").unwrap();
        assert!(matches!(
            load_or_create_keypair(&dir, "identity.key"),
            Err(KeyFileError::BadKey(_))
        ));
    }
}
