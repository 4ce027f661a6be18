//! GraphiQL, the in-browser IDE served at `GET /graphql` to browsers. Its page is Marquee's
//! own, rendered once at startup, so where its scripts come from is a setting: a CDN by
//! default (`graphql.graphiql_assets_url`), or a directory of the npm packages served by the
//! gateway itself (`graphql.graphiql_assets_dir`), so GraphiQL works without internet access.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

/// Where the gateway serves the assets directory.
pub const ASSETS_ROUTE: &str = "/graphiql/assets";

/// The npm packages the page loads: (package, version, file in the package).
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("react", "18.3.1", "umd/react.production.min.js"),
    ("react-dom", "18.3.1", "umd/react-dom.production.min.js"),
    ("graphiql", "4.1.2", "graphiql.min.js"),
    ("graphiql", "4.1.2", "graphiql.min.css"),
];

/// Where the page's assets come from.
#[derive(Clone, Debug)]
pub enum AssetSource {
    /// A CDN laid out like unpkg (`{url}/{package}@{version}/{file}`).
    Cdn(String),
    /// A `node_modules` directory holding the packages, served under [`ASSETS_ROUTE`].
    Dir(PathBuf),
}

/// Why the assets directory cannot serve GraphiQL.
#[derive(Debug, thiserror::Error)]
#[error(
    "graphql.graphiql_assets_dir {dir} lacks {file}; install the packages there with: npm install --prefix <parent> {packages}"
)]
pub struct MissingAsset {
    dir: String,
    file: String,
    packages: String,
}

impl AssetSource {
    /// Checks that a directory holds every asset.
    pub fn check(&self) -> Result<(), MissingAsset> {
        let AssetSource::Dir(dir) = self else { return Ok(()) };
        for (package, _, file) in ASSETS {
            let path = Path::new(package).join(file);
            if !dir.join(&path).is_file() {
                return Err(MissingAsset {
                    dir: dir.display().to_string(),
                    file: path.display().to_string(),
                    packages: packages(),
                });
            }
        }
        Ok(())
    }

    fn url(&self, package: &str, version: &str, file: &str) -> String {
        match self {
            AssetSource::Cdn(base) => format!("{}/{package}@{version}/{file}", base.trim_end_matches('/')),
            AssetSource::Dir(_) => format!("{ASSETS_ROUTE}/{package}/{file}"),
        }
    }
}

/// The pinned packages as `npm install` arguments.
pub fn packages() -> String {
    let mut seen: Vec<String> = Vec::new();
    for (package, version, _) in ASSETS {
        let spec = format!("{package}@{version}");
        if !seen.contains(&spec) {
            seen.push(spec);
        }
    }
    seen.join(" ")
}

/// The page, for GraphQL at `endpoint`.
pub fn page(source: &AssetSource, endpoint: &str) -> Arc<str> {
    let [react, react_dom, script, style] =
        [0, 1, 2, 3].map(|i| source.url(ASSETS[i].0, ASSETS[i].1, ASSETS[i].2));
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="robots" content="noindex">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Marquee · GraphiQL</title>
    <style>body {{ margin: 0; overflow: hidden; }} #graphiql {{ height: 100vh; }}</style>
    <link rel="stylesheet" href="{style}">
    <script crossorigin src="{react}"></script>
    <script crossorigin src="{react_dom}"></script>
  </head>
  <body>
    <div id="graphiql">Loading…</div>
    <script src="{script}"></script>
    <script>
      const fetcher = GraphiQL.createFetcher({{ url: new URL({endpoint:?}, window.location.origin).toString() }});
      ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(GraphiQL, {{ fetcher }}));
    </script>
  </body>
</html>
"#
    )
    .into()
}

/// The page as a response. It names no data, but browsers revalidate it so a new version is
/// seen.
pub(crate) fn respond(page: &str) -> Response {
    let mut response = Html(page.to_owned()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
