// Drives real gateways with stock Apollo Client 4, the way a partner app would, and checks what
// the app sees. Run by gateway/tests/api/clients.rs:
//
//   OPEN_URL=http://…/graphql SAFELIST_URL=http://…/graphql CUSTOM_MANIFEST=… node apollo.mjs
//
// OPEN_URL serves the partner manifest with APQ on; SAFELIST_URL serves the same manifest in
// safelist mode; CUSTOM_MANIFEST is the manifest generated with custom ids. Prints one line per
// check and exits non-zero if any failed.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { CombinedGraphQLErrors } from "@apollo/client/errors";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { generatePersistedQueryIdsFromManifest } from "@apollo/persisted-query-lists";

const { OPEN_URL, SAFELIST_URL, CUSTOM_MANIFEST } = process.env;
if (!OPEN_URL || !SAFELIST_URL || !CUSTOM_MANIFEST) {
  console.error("set OPEN_URL, SAFELIST_URL and CUSTOM_MANIFEST");
  process.exit(2);
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");
// The partner's operations, from the files the manifests were generated from.
const operation = (name) => gql(readFileSync(new URL(`operations/${name}.graphql`, import.meta.url), "utf8"));
const MovieCard = operation("MovieCard");
const GenreList = operation("GenreList");
// Not in the manifest: registered on the fly by APQ, refused in safelist mode.
const Search = gql`
  query Search($q: String!) {
    search(query: $q, first: 2) {
      edges {
        node {
          id
          title
        }
      }
    }
  }
`;
const Broken = gql`
  query Broken {
    a: movie(id: "bogus") {
      title
    }
    b: movie(id: "tt0000001") {
      title
    }
  }
`;

/// A client on `uri` whose requests (method, status, content type, persisted-query key) are
/// recorded in `log`; `persisted` configures the persisted-queries link (none: plain HTTP).
function client(uri, log, persisted) {
  const fetchAndLog = async (url, init) => {
    const response = await fetch(url, init);
    const sent = new URL(url);
    let key = sent.searchParams.get("extensions");
    if (init.body) key = JSON.stringify(JSON.parse(init.body).extensions ?? null);
    const extensions = key ? JSON.parse(key) : null;
    log.push({
      method: init.method ?? "GET",
      status: response.status,
      type: response.headers.get("content-type"),
      key: extensions?.persistedQuery?.sha256Hash ?? null,
      sentText: Boolean(init.body && JSON.parse(init.body).query) || sent.searchParams.has("query"),
    });
    return response;
  };
  const http = new HttpLink({ uri, fetch: fetchAndLog });
  const link = persisted ? new PersistedQueryLink(persisted).concat(http) : http;
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

let failures = 0;
function check(name, ok, detail) {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${ok ? "" : `: ${JSON.stringify(detail)}`}`);
  if (!ok) failures += 1;
}

const run = (c, query, variables) =>
  c.query({ query, variables, fetchPolicy: "no-cache", errorPolicy: "all" });

// 1. Automatic persisted queries over GET: the hash alone first (a miss, read by the link as
//    PERSISTED_QUERY_NOT_FOUND), then the text, then the hash alone again (a hit).
{
  const log = [];
  const c = client(OPEN_URL, log, { sha256, useGETForHashedQueries: true });
  const first = await run(c, Search, { q: "star" });
  check("APQ: the first request answers", !first.error && first.data?.search?.edges?.length > 0, first);
  check(
    "APQ: hash-only GET missed, the text was sent, and it registered",
    log.length === 2 && log[0].method === "GET" && !log[0].sentText && log[1].sentText && log[1].status === 200,
    log,
  );
  log.length = 0;
  const again = await run(c, Search, { q: "star" });
  check("APQ: the second request is one GET by hash", !again.error && log.length === 1 && log[0].method === "GET" && !log[0].sentText && log[0].status === 200, log);
}

// 2. Manifest operations by their sha256 ids (what the default manifest generator writes): one
//    GET each, no text, no retry.
{
  const log = [];
  const c = client(OPEN_URL, log, { sha256, useGETForHashedQueries: true });
  const card = await run(c, MovieCard, { id: "tt0000001" });
  const genres = await run(c, GenreList, {});
  check("sha256 manifest ids: both operations answer", !card.error && card.data?.movie?.id === "tt0000001" && genres.data?.genres?.length > 0, { card, genres });
  check("sha256 manifest ids: one hash-only GET each", log.length === 2 && log.every((r) => r.method === "GET" && r.status === 200 && !r.sentText), log);
}

// 3. Manifest operations by custom ids, with Apollo's documented setup for such manifests.
{
  const log = [];
  const manifest = JSON.parse(readFileSync(CUSTOM_MANIFEST, "utf8"));
  const c = client(OPEN_URL, log, {
    ...generatePersistedQueryIdsFromManifest({ loadManifest: () => manifest }),
    useGETForHashedQueries: true,
  });
  const card = await run(c, MovieCard, { id: "tt0000002" });
  check("custom manifest ids: the operation answers", !card.error && card.data?.movie?.id === "tt0000002", card);
  check("custom manifest ids: one GET by the custom id", log.length === 1 && log[0].method === "GET" && log[0].key === "MovieCard@v1" && log[0].status === 200, log);
}

// 4. Safelist mode: manifest operations run; anything else is refused, and the app reads the
//    refusal as a GraphQL error with its code (not just "status code 400").
{
  const log = [];
  const c = client(SAFELIST_URL, log, { sha256, useGETForHashedQueries: true });
  const card = await run(c, MovieCard, { id: "tt0000003" });
  check("safelist: a manifest operation answers", !card.error && card.data?.movie?.id === "tt0000003", card);
  const refused = await run(c, Search, { q: "star" });
  const codes = CombinedGraphQLErrors.is(refused.error) ? refused.error.errors.map((e) => e.extensions?.code) : [];
  check("safelist: an unlisted operation is a GraphQL error with its code", codes.includes("PERSISTED_QUERY_NOT_IN_LIST"), { error: String(refused.error), log });
  const plainLog = [];
  const plain = await run(client(SAFELIST_URL, plainLog, null), Search, { q: "star" });
  const plainCodes = CombinedGraphQLErrors.is(plain.error) ? plain.error.errors.map((e) => e.extensions?.code) : [];
  check("safelist: without the link too", plainCodes.includes("PERSISTED_QUERY_NOT_IN_LIST"), { error: String(plain.error), plainLog });
  check(
    "safelist: refusals are labelled application/graphql-response+json",
    [...log, ...plainLog].filter((r) => r.status !== 200).every((r) => r.type?.startsWith("application/graphql-response+json")),
    [...log, ...plainLog],
  );
}

// 5. A field error: the app gets the partial data with a null where the error is.
{
  const log = [];
  const result = await run(client(OPEN_URL, log, null), Broken, {});
  const paths = CombinedGraphQLErrors.is(result.error) ? result.error.errors.map((e) => e.path) : [];
  check(
    "field errors: a is null, b is there, the error is at [a]",
    result.data?.a === null && typeof result.data?.b?.title === "string" && JSON.stringify(paths) === '[["a"]]',
    { data: result.data, error: String(result.error), log },
  );
}

if (failures > 0) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log("all Apollo Client checks passed");
