// graphql-http's GraphQL-over-HTTP server audit against a running gateway:
//
//   GRAPHQL_URL=http://…/graphql node audit.mjs
//
// Prints every audit; exits non-zero if any ended in an error or a warning.

import { auditServer } from "graphql-http";

const url = process.env.GRAPHQL_URL;
if (!url) {
  console.error("set GRAPHQL_URL");
  process.exit(2);
}
const results = await auditServer({ url });
let bad = 0;
for (const result of results) {
  const line = `${result.status.padEnd(7)} ${result.id} ${result.name}`;
  if (result.status === "ok") {
    console.log(line);
  } else {
    bad += 1;
    const detail = typeof result.response?.text === "function" ? await result.response.text() : "";
    console.log(`${line}: ${result.reason} ${detail}`);
  }
}
console.log(`${results.length} audits, ${bad} not ok`);
process.exit(bad > 0 ? 1 : 0);
