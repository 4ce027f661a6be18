//! External sort for bulk loads: rows are buffered, sorted and spilled to run files, then
//! merged back in key order. Inserting in key order keeps redb's writes appends, and memory
//! stays bounded by one run however large the catalog.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// Sorts rows of type `T` that may not fit in memory.
pub(crate) struct ExternalSorter<T> {
    dir: PathBuf,
    name: &'static str,
    run_rows: usize,
    buffer: Vec<T>,
    runs: Vec<PathBuf>,
}

impl<T: Ord + Serialize + DeserializeOwned> ExternalSorter<T> {
    /// Spills to files named after `name` in `dir`, `run_rows` rows at a time.
    pub(crate) fn new(dir: &Path, name: &'static str, run_rows: usize) -> Self {
        ExternalSorter { dir: dir.to_owned(), name, run_rows, buffer: Vec::new(), runs: Vec::new() }
    }

    pub(crate) fn push(&mut self, row: T) -> Result<(), StoreError> {
        self.buffer.push(row);
        if self.buffer.len() >= self.run_rows {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), StoreError> {
        self.buffer.sort_unstable();
        let path = self.dir.join(format!("{}-{}.run", self.name, self.runs.len()));
        let io = |e| StoreError::io(format!("writing sort run {}", path.display()), e);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(io)?);
        let mut scratch = Vec::new();
        for row in self.buffer.drain(..) {
            scratch.clear();
            scratch = postcard::to_extend(&row, scratch)
                .map_err(|e| StoreError::Corrupt { what: "sort row", detail: e.to_string() })?;
            out.write_all(&(scratch.len() as u32).to_le_bytes()).map_err(io)?;
            out.write_all(&scratch).map_err(io)?;
        }
        out.flush().map_err(io)?;
        self.runs.push(path);
        Ok(())
    }

    /// Every row pushed so far, in ascending order; the sorter is left empty.
    pub(crate) fn sorted(&mut self) -> Result<Sorted<T>, StoreError> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            return Ok(Sorted {
                memory: std::mem::take(&mut self.buffer).into_iter(),
                runs: Vec::new(),
                heap: BinaryHeap::new(),
            });
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        let mut runs = Vec::with_capacity(self.runs.len());
        for path in std::mem::take(&mut self.runs) {
            let file = File::open(&path)
                .map_err(|e| StoreError::io(format!("reading sort run {}", path.display()), e))?;
            runs.push(Run { reader: BufReader::with_capacity(1 << 20, file), path, scratch: Vec::new() });
        }
        let mut sorted = Sorted { memory: Vec::new().into_iter(), runs, heap: BinaryHeap::new() };
        for i in 0..sorted.runs.len() {
            if let Some(row) = sorted.runs[i].next_row()? {
                sorted.heap.push(Reverse((row, i)));
            }
        }
        Ok(sorted)
    }
}

struct Run {
    reader: BufReader<File>,
    path: PathBuf,
    scratch: Vec<u8>,
}

impl Run {
    fn next_row<T: DeserializeOwned>(&mut self) -> Result<Option<T>, StoreError> {
        let io = |e| StoreError::io(format!("reading sort run {}", self.path.display()), e);
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        self.scratch.resize(u32::from_le_bytes(len) as usize, 0);
        self.reader.read_exact(&mut self.scratch).map_err(io)?;
        postcard::from_bytes(&self.scratch)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: "sort row", detail: e.to_string() })
    }
}

/// The merged, ascending rows of an [`ExternalSorter`].
pub(crate) struct Sorted<T> {
    memory: std::vec::IntoIter<T>,
    runs: Vec<Run>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
}

impl<T: Ord + DeserializeOwned> Iterator for Sorted<T> {
    type Item = Result<T, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.runs.is_empty() {
            return self.memory.next().map(Ok);
        }
        let Reverse((row, i)) = self.heap.pop()?;
        match self.runs[i].next_row() {
            Ok(Some(next)) => self.heap.push(Reverse((next, i))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_runs_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sorter: ExternalSorter<(u64, String)> = ExternalSorter::new(dir.path(), "t", 7);
        let rows: Vec<(u64, String)> = (0..100u64).map(|i| ((i * 37) % 101, format!("v{i}"))).collect();
        for row in rows.iter().cloned() {
            sorter.push(row).expect("push");
        }
        let out: Vec<(u64, String)> =
            sorter.sorted().expect("sorted").collect::<Result<_, _>>().expect("rows");
        let mut expected = rows;
        expected.sort();
        assert_eq!(out, expected);
    }
}
