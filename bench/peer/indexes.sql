-- Keys and indexes for the loaded catalog (after schema.sql and the COPY of each table).
alter table movie add primary key (id);
alter table person add primary key (id);
-- A movie's credits in billing order: the nested query's one index range per movie.
alter table credit add primary key (movie_id, billing_order);
-- A person's filmography (the reverse relation PostGraphile exposes as creditsByPersonId).
create index credit_person_id on credit (person_id);
alter table credit add constraint credit_movie_fk foreign key (movie_id) references movie (id);
alter table credit add constraint credit_person_fk foreign key (person_id) references person (id);
-- PostGraphile offers condition arguments on indexed columns only; the cast is a filter inside
-- one movie's credits, which the primary key range already serves.
comment on column credit.department is E'@behavior +filterBy';
vacuum analyze movie;
vacuum analyze person;
vacuum analyze credit;
