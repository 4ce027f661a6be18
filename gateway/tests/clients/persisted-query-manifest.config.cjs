// Apollo's `generate-persisted-query-manifest` reads this: the partner operations in
// operations/, written to $MANIFEST_OUT. With MANIFEST_IDS=custom each operation gets a custom
// id (`<name>@v1`) instead of the default sha256 of its body.
module.exports = {
  documents: ["operations/**/*.graphql"],
  output: process.env.MANIFEST_OUT || "persisted-query-manifest.json",
  ...(process.env.MANIFEST_IDS === "custom"
    ? { createOperationId: (_query, { operationName }) => `${operationName}@v1` }
    : {}),
};
