//! `cargo xtask partitions --movies N`: the size of every catalog table's partitions for a
//! generated catalog of N movies, as the ScyllaDB backend lays it out (the same
//! `marquee_store::plan::index_rows` its loader writes from), without a cluster: partitions,
//! and the largest in rows and in bytes of values (keys and bodies; each row's on-disk
//! overhead, some 10-20 bytes, comes on top). ARCHITECTURE.md quotes it at 5M movies against
//! ScyllaDB's large-partition warnings (100,000 rows, 1,000 MB).

use std::collections::HashMap;

use marquee_store::bulk::seed::{Generator, SeedOptions};
use marquee_store::{MovieSort, plan};

/// `sort_order` of the mirrored popularity partitions (`store/scylla/src/catalog.rs`).
const POPULARITY_MIRRORED: u8 = 3;

/// Rows and bytes of each partition of one table.
#[derive(Default)]
struct Table {
    partitions: HashMap<String, (u64, u64)>,
}

impl Table {
    fn add(&mut self, partition: String, bytes: usize) {
        let entry = self.partitions.entry(partition).or_default();
        entry.0 += 1;
        entry.1 += bytes as u64;
    }

    /// (partitions, largest in rows with its bytes, largest in bytes, rows in all).
    fn summary(&self) -> (usize, (u64, u64), u64, u64) {
        let most_rows = self.partitions.values().copied().max_by_key(|(rows, _)| *rows).unwrap_or_default();
        let most_bytes = self.partitions.values().map(|(_, bytes)| *bytes).max().unwrap_or_default();
        let rows = self.partitions.values().map(|(rows, _)| rows).sum();
        (self.partitions.len(), most_rows, most_bytes, rows)
    }
}

fn body<T: serde::Serialize>(value: &T) -> usize {
    postcard::to_allocvec(value).map_or(0, |bytes| bytes.len())
}

/// Prints the table of partition sizes for `movies` generated movies.
pub(crate) fn run(movies: u64, seed: u64) -> anyhow::Result<()> {
    let options = SeedOptions { movies, people: None, seed };
    let generator = Generator::new(&options);
    let mut tables: Vec<(&str, Table)> = [
        "movies_by_id",
        "people_by_id",
        "credits_by_movie",
        "credits_by_person",
        "movies_by_genre_year",
        "title_search",
    ]
    .into_iter()
    .map(|name| (name, Table::default()))
    .collect();
    for index in 0..options.people() {
        let person = generator.person(index);
        tables[1].1.add(person.id.0.to_string(), 8 + body(&person));
    }
    let popularity = MovieSort::Popularity.code();
    let mut orders: HashMap<(u8, u8), u64> = HashMap::new();
    for index in 0..movies {
        let record = generator.movie(index);
        let id = record.movie.id.0;
        tables[0].1.add(id.to_string(), 8 + body(&record.movie));
        tables[2].1.add(id.to_string(), 8 + body(&record.credits));
        let rows = plan::index_rows(&record);
        for (person, _, _, entry) in &rows.filmography {
            tables[3].1.add(person.to_string(), 16 + body(entry));
        }
        for (sort, genre, year, _) in &rows.browse {
            tables[4].1.add(format!("{sort}/{genre}/{year}"), 16);
            *orders.entry((*sort, *genre)).or_default() += 1;
            if *sort == popularity && *genre != plan::ANY_GENRE {
                tables[4].1.add(format!("{POPULARITY_MIRRORED}/{genre}/{year}"), 16);
            }
        }
        for prefix in &rows.prefixes {
            tables[5].1.add(format!("{prefix}/{}", rows.bucket), 16 + rows.title_words.len());
        }
        if index % 500_000 == 499_999 {
            eprintln!("{} movies", index + 1);
        }
    }
    // Each order's top partition (year -1): its first rows across all years.
    for ((sort, genre), rows) in orders {
        let rows = rows.min(plan::BROWSE_TOP_ROWS as u64);
        tables[4].1.partitions.insert(format!("{sort}/{genre}/top"), (rows, 16 * rows));
    }
    println!("| table | partitions | rows | largest partition (rows, bytes) | largest in bytes |");
    println!("|---|---:|---:|---:|---:|");
    for (name, table) in &tables {
        let (partitions, (rows, rows_bytes), bytes, all) = table.summary();
        println!("| `{name}` | {partitions} | {all} | {rows} rows, {} | {} |", size(rows_bytes), size(bytes));
    }
    Ok(())
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 10 << 20 => format!("{} MiB", b >> 20),
        b if b >= 10 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}
