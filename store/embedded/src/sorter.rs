//! External sort for bulk loads: rows are buffered, sorted and spilled to run files, then
//! merged back in key order. Inserting in key order keeps redb's writes appends, and memory
//! stays bounded by three runs (one filling, one queued, one being written) however large
//! the catalog. Sorting and writing a full run happens on a background thread while the
//! loader keeps filling the next one, so both cores work.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use serde::Serialize;
use serde::de::DeserializeOwned;

use marquee_store::StoreError;

/// The spill thread: where full buffers go, and the run files it wrote.
type SpillWorker<T> = (SyncSender<(Vec<T>, PathBuf)>, JoinHandle<Result<Vec<PathBuf>, StoreError>>);

/// Sorts rows of type `T` that may not fit in memory.
pub(crate) struct ExternalSorter<T> {
    dir: PathBuf,
    name: &'static str,
    run_rows: usize,
    buffer: Vec<T>,
    runs: usize,
    /// Full buffers go to the spill thread; `None` once `sorted` has been called.
    spill: Option<SpillWorker<T>>,
}

impl<T: Ord + Serialize + DeserializeOwned + Send + 'static> ExternalSorter<T> {
    /// Spills to files named after `name` in `dir`, `run_rows` rows at a time.
    pub(crate) fn new(dir: &Path, name: &'static str, run_rows: usize) -> Result<Self, StoreError> {
        // One buffer may wait while the thread writes another: at most three in memory.
        let (tx, rx) = sync_channel::<(Vec<T>, PathBuf)>(1);
        let spill = move || {
            let mut written = Vec::new();
            for (mut rows, path) in rx {
                rows.sort_unstable();
                write_run(&rows, &path)?;
                written.push(path);
            }
            Ok(written)
        };
        let worker = std::thread::Builder::new()
            .name(format!("sort-{name}"))
            .spawn(spill)
            .map_err(|e| StoreError::io("starting a sort thread", e))?;
        Ok(ExternalSorter {
            dir: dir.to_owned(),
            name,
            run_rows,
            buffer: Vec::with_capacity(run_rows),
            runs: 0,
            spill: Some((tx, worker)),
        })
    }

    pub(crate) fn push(&mut self, row: T) -> Result<(), StoreError> {
        self.buffer.push(row);
        if self.buffer.len() >= self.run_rows {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), StoreError> {
        let rows = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.run_rows));
        let path = self.dir.join(format!("{}-{}.run", self.name, self.runs));
        self.runs += 1;
        let sent = self.spill.as_ref().map(|(tx, _)| tx.send((rows, path)));
        if !matches!(sent, Some(Ok(()))) {
            // The worker stopped early: its error says why.
            return Err(self.join_worker().err().unwrap_or(StoreError::Closed));
        }
        Ok(())
    }

    fn join_worker(&mut self) -> Result<Vec<PathBuf>, StoreError> {
        let Some((tx, worker)) = self.spill.take() else { return Ok(Vec::new()) };
        drop(tx);
        worker.join().map_err(|_| StoreError::Backend("the sort thread panicked".into()))?
    }

    /// Every row pushed so far, in ascending order; the sorter cannot be used afterwards.
    pub(crate) fn sorted(&mut self) -> Result<Sorted<T>, StoreError> {
        if self.runs == 0 {
            self.join_worker()?;
            self.buffer.sort_unstable();
            let memory = std::mem::take(&mut self.buffer).into_iter();
            return Ok(Sorted { memory, runs: Vec::new(), heap: BinaryHeap::new() });
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        let paths = self.join_worker()?;
        let mut runs = Vec::with_capacity(paths.len());
        for path in paths {
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

impl<T> Drop for ExternalSorter<T> {
    fn drop(&mut self) {
        if let Some((tx, worker)) = self.spill.take() {
            drop(tx);
            let _ = worker.join();
        }
    }
}

fn write_run<T: Serialize>(rows: &[T], path: &Path) -> Result<(), StoreError> {
    let io = |e| StoreError::io(format!("writing sort run {}", path.display()), e);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
    let mut scratch = Vec::new();
    for row in rows {
        scratch.clear();
        scratch = postcard::to_extend(row, scratch)
            .map_err(|e| StoreError::Corrupt { what: "sort row", detail: e.to_string() })?;
        out.write_all(&(scratch.len() as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&scratch).map_err(io)?;
    }
    out.flush().map_err(io)
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
        for run_rows in [7, 1000] {
            let mut sorter: ExternalSorter<(u64, String)> =
                ExternalSorter::new(dir.path(), "t", run_rows).expect("sorter");
            let rows: Vec<(u64, String)> = (0..100u64).map(|i| ((i * 37) % 101, format!("v{i}"))).collect();
            for row in rows.iter().cloned() {
                sorter.push(row).expect("push");
            }
            let out: Vec<(u64, String)> =
                sorter.sorted().expect("sorted").collect::<Result<_, _>>().expect("rows");
            let mut expected = rows;
            expected.sort();
            assert_eq!(out, expected, "run size {run_rows}");
        }
    }
}
