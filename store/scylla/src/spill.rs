//! A catalog load's filmography rows, grouped by person through disk.
//!
//! A load streams movies; each movie's credits land in the filmographies of a dozen or more
//! people, and one person's rows arrive scattered over the whole stream. Sent as they come,
//! they batch 1.15 rows a statement (500,000 movies: 7.9M of the load's 11M statements). Held
//! until the end they would not fit in memory at 5M movies (90M rows). So they are written to
//! [`BUCKETS`] files by a hash of the person, each a few tens of MB at 5M movies, and sent at
//! the end one file at a time, grouped by person: one unlogged batch per person and 64 rows.
//!
//! The files live in `[store] load_spill_dir` (the system's temporary directory by default),
//! in a directory of their own per run of a load (`marquee-load-<keyspace>-<generation>-…`),
//! which the load removes when it ends, whatever its outcome. A running load holds a lock on
//! a file in its directory; a load starting removes every spill directory whose lock nobody
//! holds, so what a killed load left goes with the next load on the machine. At 5M seeded
//! movies the files hold about 5 GB in all.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use marquee_store::StoreError;

use crate::options::ScyllaOptions;

/// Files the rows are spread over: at 5M movies each holds about 20 MB, read into memory one
/// at a time.
pub(crate) const BUCKETS: usize = 256;

/// One person's rows: (position, body), in the order they were pushed.
pub(crate) type PersonRows = Vec<(Vec<u8>, Vec<u8>)>;

/// The longest field a spill file may hold: a corrupt length fails instead of allocating.
const MAX_FIELD: usize = 1 << 20;

/// Filmography rows waiting on disk for the end of the load.
pub(crate) struct Spill {
    dir: Directory,
    /// Held while the load runs (an advisory lock): the directory is in use.
    _lock: File,
    buckets: Vec<BufWriter<File>>,
    rows: u64,
}

/// How spill directories' names begin.
const PREFIX: &str = "marquee-load-";

/// The file a running load holds locked in its spill directory.
const LOCK: &str = "lock";

/// The spill directory, removed when dropped.
struct Directory(PathBuf);

impl Directory {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %self.0.display(), "removing the load's spill directory");
        }
    }
}

impl Spill {
    /// Empty files for the load of `generation` into `options.keyspace`, in a new directory
    /// under `options.load_spill_dir`; spill directories no running load holds are removed
    /// first.
    pub(crate) fn new(options: &ScyllaOptions, generation: i64) -> Result<Spill, StoreError> {
        let root = options.load_spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        Spill::in_root(&root, &format!("{}-{generation}", options.keyspace))
    }

    fn in_root(root: &Path, name: &str) -> Result<Spill, StoreError> {
        let context = |path: &Path| format!("creating the load's spill directory in {}", path.display());
        std::fs::create_dir_all(root).map_err(|e| StoreError::io(context(root), e))?;
        sweep(root);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = root.join(format!("{PREFIX}{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| StoreError::io(context(&path), e))?;
        let dir = Directory(path);
        // Locked before it takes its name, so a sweep never finds it unlocked.
        let pending = dir.path().join("lock.new");
        let lock = File::create(&pending).map_err(|e| StoreError::io(context(dir.path()), e))?;
        lock.try_lock()
            .map_err(|e| StoreError::io(context(dir.path()), std::io::Error::other(e.to_string())))?;
        std::fs::rename(&pending, dir.path().join(LOCK))
            .map_err(|e| StoreError::io(context(dir.path()), e))?;
        let buckets = (0..BUCKETS)
            .map(|i| {
                let path = dir.path().join(format!("filmography-{i:03}"));
                File::create(&path)
                    .map(|file| BufWriter::with_capacity(64 * 1024, file))
                    .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Spill { dir, _lock: lock, buckets, rows: 0 })
    }

    /// Rows pushed so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Keeps one row of `person`'s filmography.
    pub(crate) fn push(&mut self, person: u64, pos: &[u8], body: &[u8]) -> Result<(), StoreError> {
        let bucket = bucket(person);
        let out = &mut self.buckets[bucket];
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&person.to_le_bytes())?;
            for field in [pos, body] {
                if field.len() > MAX_FIELD {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a filmography row over 1 MiB",
                    ));
                }
                let len = u32::try_from(field.len()).map_err(std::io::Error::other)?;
                out.write_all(&len.to_le_bytes())?;
                out.write_all(field)?;
            }
            Ok(())
        };
        write(out).map_err(|e| StoreError::io(format!("writing the load's spill file {bucket}"), e))?;
        self.rows += 1;
        Ok(())
    }

    /// Hands every person's rows to `each`, one file at a time, people in id order within a
    /// file. Each file is removed once read; the directory when this returns or fails.
    pub(crate) fn drain(
        self,
        mut each: impl FnMut(u64, PersonRows) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Spill { dir, buckets, _lock, .. } = self;
        for (i, out) in buckets.into_iter().enumerate() {
            let path = dir.path().join(format!("filmography-{i:03}"));
            let context = || format!("reading the load's spill file {}", path.display());
            out.into_inner().map_err(|e| StoreError::io(context(), e.into_error()))?;
            let people = read_bucket(&path).map_err(|e| StoreError::io(context(), e))?;
            std::fs::remove_file(&path).map_err(|e| StoreError::io(context(), e))?;
            for (person, rows) in people {
                each(person, rows)?;
            }
        }
        Ok(())
    }
}

/// Removes the spill directories under `root` whose lock nobody holds: their loads were
/// killed. Best effort: what cannot be read or removed is left.
fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        // No lock file yet: a load is making the directory right now.
        let Ok(lock) = File::open(entry.path().join(LOCK)) else { continue };
        if lock.try_lock().is_ok() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed the spill files of a load that no longer runs")
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %entry.path().display(), "removing a killed load's spill files")
                }
            }
        }
    }
}

/// Which file a person's rows go to.
fn bucket(person: u64) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(person);
    (hash % BUCKETS as u64) as usize
}

/// One file's rows, grouped by person.
fn read_bucket(path: &std::path::Path) -> std::io::Result<BTreeMap<u64, PersonRows>> {
    let mut input = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut people: BTreeMap<u64, PersonRows> = BTreeMap::new();
    let mut word = [0u8; 8];
    // A file ends between records; one cut inside a record fails (`UnexpectedEof`).
    while !input.fill_buf()?.is_empty() {
        input.read_exact(&mut word)?;
        let person = u64::from_le_bytes(word);
        let mut field = || -> std::io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_FIELD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a field of {len} bytes"),
                ));
            }
            let mut bytes = vec![0; len];
            input.read_exact(&mut bytes)?;
            Ok(bytes)
        };
        let pos = field()?;
        let body = field()?;
        people.entry(person).or_default().push((pos, body));
    }
    Ok(people)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill(root: &tempfile::TempDir) -> Spill {
        Spill::in_root(root.path(), "marquee-1").expect("spill")
    }

    #[test]
    fn every_row_comes_back_once_grouped_by_person_in_push_order() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut spill = spill(&root);
        let dir = spill.dir.path().to_owned();
        let mut expected: BTreeMap<u64, PersonRows> = BTreeMap::new();
        for i in 0..5_000u64 {
            let person = (i * 7_919) % 613;
            let (pos, body) =
                (i.to_be_bytes().to_vec(), vec![u8::try_from(i % 251).expect("byte"); (i % 40) as usize]);
            spill.push(person, &pos, &body).expect("push");
            expected.entry(person).or_default().push((pos, body));
        }
        assert_eq!(spill.rows(), 5_000);
        let mut got: BTreeMap<u64, PersonRows> = BTreeMap::new();
        spill
            .drain(|person, rows| {
                assert!(got.insert(person, rows).is_none(), "person {person} handed over twice");
                Ok(())
            })
            .expect("drain");
        assert_eq!(got, expected);
        assert!(!dir.exists(), "the spill directory is removed");
    }

    #[test]
    fn a_failing_consumer_ends_the_drain_and_the_files_go() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut spill = spill(&root);
        let dir = spill.dir.path().to_owned();
        for person in 0..1_000u64 {
            spill.push(person, b"p", b"b").expect("push");
        }
        let mut seen = 0;
        let outcome = spill.drain(|_, _| {
            seen += 1;
            if seen == 10 { Err(StoreError::Closed) } else { Ok(()) }
        });
        assert!(matches!(outcome, Err(StoreError::Closed)));
        assert_eq!(seen, 10);
        assert!(!dir.exists(), "the spill directory is removed after a failure too");
    }

    #[test]
    fn a_killed_loads_files_go_with_the_next_load_and_running_loads_keep_theirs() {
        let root = tempfile::tempdir().expect("tempdir");
        let killed = spill(&root);
        let killed_dir = killed.dir.path().to_owned();
        // As a kill leaves it: the files on disk, the lock released with the process.
        let Spill { dir, _lock, .. } = killed;
        drop(_lock);
        std::mem::forget(dir);
        // Two loads of the same keyspace and generation at once (two clusters, two test
        // processes) each get a directory of their own.
        let running = spill(&root);
        assert!(!killed_dir.exists(), "the killed load's files were removed");
        let other = spill(&root);
        assert!(running.dir.path().exists(), "a running load's files are kept");
        assert_ne!(running.dir.path(), other.dir.path());
        let dirs = std::fs::read_dir(root.path()).expect("ls").count();
        assert_eq!(dirs, 2);
    }

    #[test]
    fn a_cut_file_fails() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut spill = spill(&root);
        spill.push(7, b"p", b"b").expect("push");
        for out in &mut spill.buckets {
            out.flush().expect("flush");
        }
        let file = spill.dir.path().join(format!("filmography-{:03}", bucket(7)));
        let bytes = std::fs::read(&file).expect("read");
        assert_eq!(read_bucket(&file).expect("whole")[&7], vec![(b"p".to_vec(), b"b".to_vec())]);
        for cut in [3, 8, 12, bytes.len() - 1] {
            std::fs::write(&file, &bytes[..cut]).expect("write");
            assert!(read_bucket(&file).is_err(), "a file cut at {cut} of {} bytes is refused", bytes.len());
        }
    }
}
