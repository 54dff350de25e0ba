//! Versioned sled databases: a format version in each database, step-by-step migration on
//! open, refusal of versions this build does not know, and a quarantine for values that do
//! not decode. Shared by the node's database (`kith_node::store`) and the store peer's
//! (`kith_bootstrap::mailboxes`); each declares its own [`Schema`] (current version and
//! migration steps) in its `format` module.
//!
//! Why: encodings on disk change (a field added to a stored struct); without a version, a
//! build cannot tell an old layout from a corrupt one, nor an old build a newer layout.
//!
//! On open ([`open`]):
//! - no version and no data: a new database, stamped with the current version;
//! - the current version: opened as it is;
//! - an older one (a database without a version key is [`LEGACY_VERSION`], the layouts
//!   before versions existed): migrated forward one version at a time. Each version's steps
//!   run in order, then the database is flushed, then the new version is written and
//!   flushed. A crash mid-way leaves the old version in place and reruns that version's
//!   steps on the next open, so every step must be idempotent (safe to run on data it already
//!   converted, or half converted);
//! - a newer version, or one that is not a version at all: refused with
//!   [`FormatError::Newer`] / [`FormatError::Unknown`] naming what was found and what this
//!   build supports. Nothing is read or changed, the database included.
//!
//! A value that does not decode is never dropped and never fails the whole operation: it is
//! logged (tree and key) and moved, as it was, to the [`QUARANTINE_TREE`] tree, keyed by
//! `len(tree name) ‖ tree name ‖ original key ‖ seq` (seq keeps two values set aside under
//! the same key apart). [`quarantined`] lists them.

use std::{fmt::Display, path::Path};

/// Key of the format version in the database's default tree (u32, big-endian).
pub const VERSION_KEY: &[u8] = b"kith_format_version";

/// The version of a database that has data but no version key: the layouts written before
/// format versions existed.
pub const LEGACY_VERSION: u32 = 1;

/// The tree undecodable values are moved to.
pub const QUARANTINE_TREE: &str = "quarantine";

/// One named migration step. `run` must be idempotent: it may be run again on data it has
/// already converted (after a crash before the version was written).
pub struct Step<E> {
    /// The version this step migrates to (it runs when the database is older).
    pub to: u32,
    /// A name for logs.
    pub name: &'static str,
    /// The step itself, given the database and its directory (whose parent is the data
    /// directory, for steps that move files beside the database).
    pub run: fn(&sled::Db, &Path) -> Result<(), E>,
}

/// What a kind of database looks like: its current version and how to get there.
pub struct Schema<E: 'static> {
    /// Which database, for messages ("node", "store peer").
    pub what: &'static str,
    /// The version this build writes and reads.
    pub current: u32,
    /// Every migration step, oldest version first; steps of one version run in this order.
    pub steps: &'static [Step<E>],
}

/// A database this build cannot open as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Written by a newer build.
    #[error(
        "the {what} database at {path} has format version {found}, but this build supports \
         versions up to {supported}: run a newer build (the database was not read or changed)"
    )]
    Newer {
        /// Which database.
        what: &'static str,
        /// Where.
        path: String,
        /// The version found.
        found: u32,
        /// The newest version this build supports.
        supported: u32,
    },
    /// The version key holds something that is not a version this build knows.
    #[error(
        "the {what} database at {path} has an unknown format version ({found}); this build \
         supports versions {LEGACY_VERSION} to {supported} (the database was not read or changed)"
    )]
    Unknown {
        /// Which database.
        what: &'static str,
        /// Where.
        path: String,
        /// What the version key holds (decimal, or hex bytes when not a u32).
        found: String,
        /// The newest version this build supports.
        supported: u32,
    },
}

/// The version stored in `db`, if any (an unreadable value is returned as its hex bytes).
fn stored_version(db: &sled::Db) -> Result<Option<Result<u32, String>>, sled::Error> {
    Ok(db.get(VERSION_KEY)?.map(|v| {
        <[u8; 4]>::try_from(v.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| hex::encode(&v))
    }))
}

/// Writes `version` and flushes: the version is only ever durable after what it describes.
fn write_version(db: &sled::Db, version: u32) -> Result<(), sled::Error> {
    db.insert(VERSION_KEY, &version.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// Whether no tree of `db` holds anything (a database created just now).
fn is_empty(db: &sled::Db) -> Result<bool, sled::Error> {
    if !db.is_empty() {
        return Ok(false);
    }
    for name in db.tree_names() {
        if !db.open_tree(&name)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks `db`'s format version against `schema`, migrating an older one forward (see the
/// module docs). `path` only names the database in errors. Returns the version found
/// (`schema.current` for a new database).
pub fn open<E>(db: &sled::Db, path: &Path, schema: &Schema<E>) -> Result<u32, E>
where
    E: From<FormatError> + From<sled::Error>,
{
    let unknown = |found: String| FormatError::Unknown {
        what: schema.what,
        path: path.display().to_string(),
        found,
        supported: schema.current,
    };
    let found = match stored_version(db)? {
        Some(Ok(v)) => v,
        Some(Err(hex)) => return Err(unknown(format!("bytes {hex}")).into()),
        None if is_empty(db)? => {
            write_version(db, schema.current)?;
            return Ok(schema.current);
        }
        None => LEGACY_VERSION,
    };
    if found > schema.current {
        return Err(FormatError::Newer {
            what: schema.what,
            path: path.display().to_string(),
            found,
            supported: schema.current,
        }
        .into());
    }
    if found < LEGACY_VERSION {
        return Err(unknown(found.to_string()).into());
    }
    for version in found + 1..=schema.current {
        for step in schema.steps.iter().filter(|s| s.to == version) {
            tracing::info!(db = schema.what, version, step = step.name, "migrating");
            (step.run)(db, path)?;
        }
        // The steps' writes are durable before the version that says they are done.
        db.flush()?;
        write_version(db, version)?;
        tracing::info!(db = schema.what, version, "database migrated");
    }
    Ok(found)
}

/// The key under which `key` of `tree` is set aside (see the module docs).
fn quarantine_key(tree: &[u8], key: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + tree.len() + key.len() + 8);
    // Tree names are ours and short; a longer one is cut (the key stays unique by seq).
    let name = &tree[..tree.len().min(u8::MAX as usize)];
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k.extend_from_slice(key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Moves `key` of `tree`, whose value `bytes` does not decode (`why`), to the quarantine
/// tree: logged, copied there first, then removed from `tree` only if it still holds the same
/// bytes (a crash in between leaves a copy in both places, never in neither).
pub fn quarantine(
    db: &sled::Db,
    tree: &sled::Tree,
    key: &[u8],
    bytes: &[u8],
    why: &dyn Display,
) -> Result<(), sled::Error> {
    let name = tree.name();
    tracing::warn!(
        tree = %String::from_utf8_lossy(&name),
        key = %hex::encode(key),
        len = bytes.len(),
        error = %why,
        "stored value does not decode; kept aside in the quarantine tree"
    );
    let q = db.open_tree(QUARANTINE_TREE)?;
    q.insert(quarantine_key(&name, key, db.generate_id()?), bytes)?;
    // Ok(Err(_)) means the value changed meanwhile: the new one is not ours to move.
    let _ = tree.compare_and_swap(key, Some(bytes), None::<&[u8]>)?;
    Ok(())
}

/// Decodes `bytes` (the value of `key` in `tree`), or quarantines it and returns `None`.
pub fn decode_or_quarantine<T: serde::de::DeserializeOwned>(
    db: &sled::Db,
    tree: &sled::Tree,
    key: &[u8],
    bytes: &[u8],
) -> Result<Option<T>, sled::Error> {
    match kith_protocol::codec::decode(bytes) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            quarantine(db, tree, key, bytes, &e)?;
            Ok(None)
        }
    }
}

/// A value set aside: the tree it was in, its key there, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The tree it was in.
    pub tree: String,
    /// Its key in that tree.
    pub key: Vec<u8>,
    /// Its bytes, as they were.
    pub bytes: Vec<u8>,
}

/// Every value set aside in `db`, in the order of their quarantine keys.
pub fn quarantined(db: &sled::Db) -> Result<Vec<Quarantined>, sled::Error> {
    let mut out = Vec::new();
    for item in db.open_tree(QUARANTINE_TREE)?.iter() {
        let (k, v) = item?;
        let Some((&len, rest)) = k.split_first() else {
            continue;
        };
        let len = len as usize;
        if rest.len() < len + 8 {
            continue;
        }
        out.push(Quarantined {
            tree: String::from_utf8_lossy(&rest[..len]).into_owned(),
            key: rest[len..rest.len() - 8].to_vec(),
            bytes: v.to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Format(#[from] FormatError),
        #[error(transparent)]
        Sled(#[from] sled::Error),
        #[error("crashed")]
        Crash,
    }

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        (dir, db)
    }

    /// Doubles every value of `data` that is one byte (so running it twice would show).
    fn widen(db: &sled::Db, _: &Path) -> Result<(), TestError> {
        let t = db.open_tree("data")?;
        for item in t.iter() {
            let (k, v) = item?;
            if v.len() == 1 {
                t.insert(k, vec![v[0], v[0]])?;
            }
        }
        Ok(())
    }

    /// Marks the data, then "crashes" once if the data holds a `crash` key.
    fn mark_then_maybe_crash(db: &sled::Db, _: &Path) -> Result<(), TestError> {
        let data = db.open_tree("data")?;
        data.insert("marked", "yes")?;
        if data.remove("crash")?.is_some() {
            return Err(TestError::Crash);
        }
        Ok(())
    }

    const SCHEMA: Schema<TestError> = Schema {
        what: "test",
        current: 3,
        steps: &[
            Step {
                to: 2,
                name: "widen",
                run: widen,
            },
            Step {
                to: 3,
                name: "mark",
                run: mark_then_maybe_crash,
            },
        ],
    };

    fn version(db: &sled::Db) -> Option<u32> {
        stored_version(db).unwrap().map(|v| v.unwrap())
    }

    #[test]
    fn a_new_database_is_stamped_with_the_current_version() {
        let (dir, db) = db();
        assert_eq!(open(&db, dir.path(), &SCHEMA).unwrap(), 3);
        assert_eq!(version(&db), Some(3));
        assert!(db.open_tree("data").unwrap().is_empty());
    }

    #[test]
    fn a_legacy_database_migrates_step_by_step() {
        let (dir, db) = db();
        db.open_tree("data").unwrap().insert("a", &[7u8]).unwrap();
        assert_eq!(open(&db, dir.path(), &SCHEMA).unwrap(), LEGACY_VERSION);
        assert_eq!(version(&db), Some(3));
        let data = db.open_tree("data").unwrap();
        assert_eq!(data.get("a").unwrap().unwrap().as_ref(), &[7, 7]);
        assert!(data.get("marked").unwrap().is_some());
        // Opening again runs nothing.
        data.insert("b", &[1u8]).unwrap();
        assert_eq!(open(&db, dir.path(), &SCHEMA).unwrap(), 3);
        assert_eq!(data.get("b").unwrap().unwrap().as_ref(), &[1]);
    }

    #[test]
    fn a_crash_mid_step_keeps_the_old_version_and_reruns_the_step() {
        let (dir, db) = db();
        db.insert(VERSION_KEY, &2u32.to_be_bytes()).unwrap();
        db.open_tree("data").unwrap().insert("a", &[7u8]).unwrap();
        db.open_tree("data")
            .unwrap()
            .insert("crash", "once")
            .unwrap();
        assert!(matches!(
            open(&db, dir.path(), &SCHEMA),
            Err(TestError::Crash)
        ));
        assert_eq!(version(&db), Some(2));
        assert_eq!(open(&db, dir.path(), &SCHEMA).unwrap(), 2);
        assert_eq!(version(&db), Some(3));
        // Version 2's step did not run again on a version-2 database.
        let data = db.open_tree("data").unwrap();
        assert_eq!(data.get("a").unwrap().unwrap().as_ref(), &[7]);
    }

    #[test]
    fn a_newer_version_is_refused_naming_both_versions_and_nothing_changes() {
        let (dir, db) = db();
        db.insert(VERSION_KEY, &9u32.to_be_bytes()).unwrap();
        db.open_tree("data").unwrap().insert("a", &[7u8]).unwrap();
        let err = open(&db, dir.path(), &SCHEMA).unwrap_err();
        assert!(matches!(
            err,
            TestError::Format(FormatError::Newer {
                found: 9,
                supported: 3,
                ..
            })
        ));
        let text = err.to_string();
        assert!(
            text.contains("version 9") && text.contains("up to 3"),
            "{text}"
        );
        assert_eq!(version(&db), Some(9));
        let data = db.open_tree("data").unwrap();
        assert_eq!(data.get("a").unwrap().unwrap().as_ref(), &[7]);
    }

    #[test]
    fn an_unreadable_or_zero_version_is_refused_as_unknown() {
        let (dir, db) = db();
        db.insert(VERSION_KEY, "x").unwrap();
        let err = open(&db, dir.path(), &SCHEMA).unwrap_err();
        assert!(matches!(
            err,
            TestError::Format(FormatError::Unknown { supported: 3, .. })
        ));
        assert!(err.to_string().contains("bytes 78"), "{err}");
        db.insert(VERSION_KEY, &0u32.to_be_bytes()).unwrap();
        let err = open(&db, dir.path(), &SCHEMA).unwrap_err();
        assert!(matches!(
            err,
            TestError::Format(FormatError::Unknown { .. })
        ));
    }

    #[test]
    fn quarantine_moves_the_value_aside_and_keeps_every_copy() {
        let (_dir, db) = db();
        let t = db.open_tree("things").unwrap();
        t.insert("k", "bad1").unwrap();
        t.insert("other", "fine").unwrap();
        quarantine(&db, &t, b"k", b"bad1", &"test").unwrap();
        t.insert("k", "bad2").unwrap();
        let got: Option<u64> = decode_or_quarantine(&db, &t, b"k", b"bad2").unwrap();
        assert_eq!(got, None);
        assert!(t.get("k").unwrap().is_none());
        assert!(t.get("other").unwrap().is_some());
        let q = quarantined(&db).unwrap();
        assert_eq!(q.len(), 2);
        for (entry, bytes) in q.iter().zip([&b"bad1"[..], b"bad2"]) {
            assert_eq!(entry.tree, "things");
            assert_eq!(entry.key, b"k");
            assert_eq!(entry.bytes, bytes);
        }
    }

    #[test]
    fn quarantine_leaves_a_value_that_changed_meanwhile() {
        let (_dir, db) = db();
        let t = db.open_tree("things").unwrap();
        t.insert("k", "new").unwrap();
        quarantine(&db, &t, b"k", b"old", &"test").unwrap();
        assert_eq!(t.get("k").unwrap().unwrap().as_ref(), b"new");
        assert_eq!(quarantined(&db).unwrap()[0].bytes, b"old");
    }
}
