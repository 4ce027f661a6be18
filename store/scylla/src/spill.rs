//! A catalog load's filmography rows, grouped by person through disk.
//!
//! A load streams movies; each movie's credits land in the filmographies of a dozen or more
//! people, and one person's rows arrive scattered over the whole stream. Sent as they come,
//! they batch 1.15 rows a statement (500,000 movies: 7.9M of the load's 11M statements). Held
//! until the end they would not fit in memory at 5M movies (90M rows). So they are written to
//! [`BUCKETS`] files by a hash of the person, each a few tens of MB at 5M movies, and sent at
//! the end one file at a time, grouped by person: one unlogged batch per person and 64 rows.
//!
//! The files live in the system's temporary directory (`TMPDIR`) and are removed when the
//! load ends, whatever its outcome. At 5M movies they hold about 6 GB in all.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{BufReader, BufWriter, Read, Write};

use marquee_store::StoreError;

/// Files the rows are spread over: at 5M movies each holds about 1/256 of 6 GB, read into
/// memory one at a time.
pub(crate) const BUCKETS: usize = 256;

/// One person's rows: (position, body), in the order they were pushed.
pub(crate) type PersonRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Filmography rows waiting on disk for the end of the load.
pub(crate) struct Spill {
    dir: tempfile::TempDir,
    buckets: Vec<BufWriter<File>>,
    rows: u64,
}

impl Spill {
    /// Empty files in a new directory under the system's temporary directory.
    pub(crate) fn new() -> Result<Spill, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("marquee-load-")
            .tempdir()
            .map_err(|e| StoreError::io("creating the load's spill directory", e))?;
        let buckets = (0..BUCKETS)
            .map(|i| {
                let path = dir.path().join(format!("filmography-{i:03}"));
                File::create(&path)
                    .map(|file| BufWriter::with_capacity(64 * 1024, file))
                    .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Spill { dir, buckets, rows: 0 })
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
        let Spill { dir, buckets, .. } = self;
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
    loop {
        match input.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(people),
            Err(e) => return Err(e),
        }
        let person = u64::from_le_bytes(word);
        let mut field = || -> std::io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
            input.read_exact(&mut bytes)?;
            Ok(bytes)
        };
        let pos = field()?;
        let body = field()?;
        people.entry(person).or_default().push((pos, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_comes_back_once_grouped_by_person_in_push_order() {
        let mut spill = Spill::new().expect("spill");
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
        let mut spill = Spill::new().expect("spill");
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
}
