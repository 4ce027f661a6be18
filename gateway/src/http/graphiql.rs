//! GraphiQL, the in-browser IDE served at `GET /graphql` to browsers. Its page is Marquee's
//! own, rendered once at startup.
//!
//! Its scripts and stylesheet are the npm packages' files at pinned versions, vendored in
//! `gateway/assets/graphiql/` (with their licences and where each came from) and compiled into
//! the binary: the gateway serves them itself under [`ASSETS_ROUTE`], so GraphiQL works on a
//! machine without internet access or behind a proxy that blocks CDNs. Every tag carries the
//! file's Subresource Integrity hash, so a browser runs only those exact bytes, also when
//! `graphql.graphiql_assets_url` points the page at a CDN laid out like unpkg instead.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

/// Where the gateway serves the assets: `{ASSETS_ROUTE}/{package}@{version}/{file}`.
pub const ASSETS_ROUTE: &str = "/graphiql/assets";

/// One file the page loads.
pub struct Asset {
    /// The npm package.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// The file in the package.
    pub file: &'static str,
    /// Subresource Integrity of the file (`sha384-…`, base64).
    pub integrity: &'static str,
    /// The file, as vendored.
    pub bytes: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files, in the order the page loads them: React, ReactDOM, GraphiQL's script, its
/// stylesheet.
pub const ASSETS: [Asset; 4] = [
    Asset {
        package: "react",
        version: "18.3.1",
        file: "umd/react.production.min.js",
        integrity: "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
        bytes: include_bytes!("../../assets/graphiql/react.production.min.js"),
        content_type: JS,
    },
    Asset {
        package: "react-dom",
        version: "18.3.1",
        file: "umd/react-dom.production.min.js",
        integrity: "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
        bytes: include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
        content_type: JS,
    },
    Asset {
        package: "graphiql",
        version: "4.1.2",
        file: "graphiql.min.js",
        integrity: "sha384-9XdHu7ajgGJziD4J1zNBKQ842Q/+zZfDv+ib1eMhZWBH6hPAs806x+Jbcf0yNO6B",
        bytes: include_bytes!("../../assets/graphiql/graphiql.min.js"),
        content_type: JS,
    },
    Asset {
        package: "graphiql",
        version: "4.1.2",
        file: "graphiql.min.css",
        integrity: "sha384-1el1QShFBnnXTx9x/Cprg82hZWKt0ry29OAYIXt05swbi0KcZDFoj0CWguMpopJr",
        bytes: include_bytes!("../../assets/graphiql/graphiql.min.css"),
        content_type: CSS,
    },
];

impl Asset {
    /// Where the gateway serves it.
    pub fn route(&self) -> String {
        format!("{ASSETS_ROUTE}/{}@{}/{}", self.package, self.version, self.file)
    }

    /// Where the page loads it from: the gateway, or `cdn` (unpkg's layout).
    fn url(&self, cdn: Option<&str>) -> String {
        match cdn {
            Some(base) => {
                format!("{}/{}@{}/{}", base.trim_end_matches('/'), self.package, self.version, self.file)
            }
            None => self.route(),
        }
    }
}

/// The assets' routes. The paths name the versions, so browsers may keep them for good.
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (bytes, content_type) = (asset.bytes, asset.content_type);
        router.route(
            &asset.route(),
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                    ],
                    bytes,
                )
            }),
        )
    })
}

/// The page, for GraphQL at `endpoint`, loading its assets from the gateway or from `cdn`.
pub fn page(cdn: Option<&str>, endpoint: &str) -> Arc<str> {
    let [react, react_dom, script, style] = ASSETS.each_ref().map(|asset| (asset.url(cdn), asset.integrity));
    let (style, style_integrity) = style;
    let (react, react_integrity) = react;
    let (react_dom, react_dom_integrity) = react_dom;
    let (script, script_integrity) = script;
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="robots" content="noindex">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Marquee · GraphiQL</title>
    <style>body {{ margin: 0; overflow: hidden; }} #graphiql {{ height: 100vh; }}</style>
    <link rel="stylesheet" href="{style}" integrity="{style_integrity}" crossorigin="anonymous">
    <script src="{react}" integrity="{react_integrity}" crossorigin="anonymous"></script>
    <script src="{react_dom}" integrity="{react_dom_integrity}" crossorigin="anonymous"></script>
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL… If this stays, its scripts did not load: see the browser's console.</div>
    <script src="{script}" integrity="{script_integrity}" crossorigin="anonymous"></script>
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

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::{Digest, Sha384};

    use super::*;

    #[test]
    fn every_vendored_file_has_the_integrity_the_page_pins() {
        for asset in &ASSETS {
            let actual = format!(
                "sha384-{}",
                base64::engine::general_purpose::STANDARD.encode(Sha384::digest(asset.bytes))
            );
            assert_eq!(actual, asset.integrity, "{}@{}/{}", asset.package, asset.version, asset.file);
        }
        let page = page(None, "/graphql");
        assert!(!page.contains("https://"), "{page}");
        assert!(ASSETS.iter().all(|a| page.contains(&format!(
            "src=\"{}\" integrity=\"{}\"",
            a.route(),
            a.integrity
        )) || page.contains(&format!(
            "href=\"{}\" integrity=\"{}\"",
            a.route(),
            a.integrity
        ))));
        let cdn = super::page(Some("https://unpkg.com/"), "/graphql");
        assert!(cdn.contains("src=\"https://unpkg.com/graphiql@4.1.2/graphiql.min.js\" integrity=\"sha384-"));
    }
}
