//! One keyspace served to two data centers, as the local rig serves it to its regions: each
//! region's store connects to a contact point of its own data center (the driver keeps to its
//! local data center and would find no node in a foreign one), and what one writes the other
//! reads. Runs on the in-process CQL stand-in, which serves the same data on both listeners.

use std::sync::Arc;

use marquee_cql_standin::StandIn;
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{SeedOptions, seed};
use marquee_store::{CatalogReads, Lifecycle, MovieId, UserData, UserId};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, migrate};
use tokio::net::TcpListener;

async fn contact_point(node: StandIn) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(node.serve(listener));
    addr.to_string()
}

fn options(contact_point: String, local_dc: &str) -> ScyllaOptions {
    ScyllaOptions {
        contact_points: vec![contact_point],
        local_dc: local_dc.into(),
        replication: [("us-east".to_owned(), 1), ("eu-west".to_owned(), 1)].into(),
        await_schema_agreement: false,
        ..ScyllaOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_reads_the_shared_keyspace_through_its_own_data_center() {
    let node = StandIn::new("us-east").expect("stand-in");
    let us_east = options(contact_point(node.clone()).await, "us-east");
    let eu_west = options(contact_point(node.in_data_center("eu-west")).await, "eu-west");

    migrate(&us_east).await.expect("migrate");
    let bulk = ScyllaBulk::new(us_east.clone(), tokio::runtime::Handle::current());
    let catalog = SeedOptions { movies: 20, people: Some(10), seed: 3 };
    tokio::task::spawn_blocking(move || {
        seed(&catalog, bulk.sink("two data centers").expect("sink"), &mut |_| {}).expect("seed")
    })
    .await
    .expect("seeding");

    let east = Arc::new(ScyllaStore::open(&us_east).await.expect("us-east opens in its own data center"));
    let west = Arc::new(ScyllaStore::open(&eu_west).await.expect("eu-west opens in its own data center"));
    west.ping().await.expect("eu-west answers");
    let from_east = east.movies(&[MovieId(7)]).await.expect("read in us-east");
    let from_west = west.movies(&[MovieId(7)]).await.expect("read in eu-west");
    assert!(from_east[0].is_some());
    assert_eq!(from_east, from_west, "both data centers read the same keyspace");

    let user = UserId::new("traveller").expect("user id");
    west.rate(&user, MovieId(7), 9).await.expect("rated in eu-west");
    let read_back = east.user_ratings(&user, &[MovieId(7)]).await.expect("read in us-east");
    assert_eq!(read_back[0].as_ref().map(|r| r.score), Some(9), "a write in eu-west reads back in us-east");

    // A store whose local data center no listener reports finds no node to ask.
    let nowhere = options(us_east.contact_points[0].clone(), "ap-south");
    if let Ok(store) = ScyllaStore::open(&nowhere).await {
        store.movies(&[MovieId(7)]).await.expect_err("no node in ap-south");
    }
}
