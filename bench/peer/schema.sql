-- The catalog as the PostGraphile peer stores it: the tables a PostgreSQL user would design for
-- the same data, loaded from `gateway export` (movie.tsv, person.tsv, credit.tsv).
-- Keys, indexes and foreign keys come after the load (indexes.sql): building them once over the
-- loaded rows is much faster than maintaining them row by row.
create table movie (
  id text not null,
  title text not null,
  original_title text,
  year int,
  release_date date,
  runtime_minutes int,
  genres text[] not null,
  overview text,
  original_language text,
  poster_path text,
  popularity real not null,
  rating_average real not null,
  rating_count int not null
);

create table person (
  id text not null,
  name text not null,
  birth_year int,
  death_year int,
  known_for_department text,
  popularity real not null
);

-- One row per credit; billing_order is the credit's position in the movie (cast in billing
-- order first, then crew), department 'Acting' marks the cast.
create table credit (
  movie_id text not null,
  billing_order int not null,
  person_id text not null,
  department text not null,
  role text not null
);
