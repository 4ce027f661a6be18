//! The checked-in SDL must match what the code generates, so schema changes are reviewed as
//! diffs of `schema/schema.graphql` (regenerate with `cargo xtask schema`).

#[test]
fn checked_in_sdl_matches_the_code() {
    let checked_in = include_str!("../schema.graphql");
    let generated = marquee_schema::sdl();
    assert!(
        checked_in == generated,
        "schema/schema.graphql is out of date: run `cargo xtask schema` and commit the result"
    );
}
