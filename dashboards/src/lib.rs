//! # vaka-dashboards
//!
//! The nurses' web app, served by the hub. Plain ES modules, CSS and one
//! vendored charting library (uPlot, see `assets/vendor/README.md`),
//! embedded in the binary at compile time, so the dashboard works without a
//! build step or network access on the target machine.
//!
//! ## Layout of `assets/`
//!
//! - `index.html`: the one page; everything else is loaded from it.
//! - `js/main.js`: boot, login, hash routing (`#/board`, `#/patient/ID`,
//!   `#/admin/…`, `#/handover`, `#/audit`); the other modules are views
//!   (`board`, `patient`, `ctg`, `admin`, `audit`, `handover`) and helpers
//!   (`api` HTTP with the CSRF token, `ws` the live connection, `i18n` every
//!   UI string in Swedish and English, `dom`, `charts`, `alerts`, `news2`).
//! - `css/`: the app's styles, including the print stylesheet of the
//!   handover.
//! - `vendor/`: uPlot, copied from its npm package.
//!
//! ## Headers
//!
//! Every file goes out with a strict Content-Security-Policy (scripts,
//! styles and connections only from this origin, so an injected `<script>`
//! or inline handler does not run), `nosniff`, no referrer, no framing.
//! The files are not fingerprinted, so the browser revalidates them on each
//! load (`no-cache`) and the `ETag` (a hash computed at compile time) turns
//! that into a cheap `304 Not Modified`.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    /// Path below `assets/`, as requested under `/assets/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Quoted strong ETag, computed at compile time.
    etag: &'static str,
}

/// FNV-1a: cheap, `const`, and good enough to tell two versions of a file
/// apart (it is a cache validator, not a security measure).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits + `"`, built in a `const` context.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

/// Embeds the files under `assets/`; each entry is `"path", "type"`.
macro_rules! assets {
    ($($path:literal => $ty:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $ty,
            body: include_bytes!(concat!("../assets/", $path)),
            etag: {
                const TAG: [u8; 18] = etag_bytes(include_bytes!(concat!("../assets/", $path)));
                match std::str::from_utf8(&TAG) {
                    Ok(s) => s,
                    Err(_) => panic!("an ETag is ASCII"),
                }
            },
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the app. A unit test checks that this list and the
/// directory agree, so a new file cannot be forgotten.
const ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "css/app.css" => CSS,
    "css/print.css" => CSS,
    "js/admin.js" => JS,
    "js/alerts.js" => JS,
    "js/api.js" => JS,
    "js/audit.js" => JS,
    "js/board.js" => JS,
    "js/charts.js" => JS,
    "js/ctg.js" => JS,
    "js/dom.js" => JS,
    "js/handover.js" => JS,
    "js/i18n.js" => JS,
    "js/main.js" => JS,
    "js/news2.js" => JS,
    "js/patient.js" => JS,
    "js/ws.js" => JS,
    "vendor/README.md" => "text/markdown; charset=utf-8",
    "vendor/uPlot.LICENSE" => "text/plain; charset=utf-8",
    "vendor/uPlot.esm.js" => JS,
    "vendor/uPlot.min.css" => CSS,
};

/// The policy of every response of the app. `connect-src 'self'` covers the
/// same-origin websocket (`ws:`/`wss:`) in CSP Level 3 browsers; uPlot sets
/// styles through the CSSOM, which `style-src 'self'` allows.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The file with its headers, or `304` when the browser's copy is current.
fn respond(asset: &'static Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn index() -> &'static Asset {
    asset("index.html").expect("BUG: index.html is in ASSETS")
}

/// Routes for the web app: `/` and `/assets/…`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { respond(index(), &h) }))
        .route(
            "/favicon.ico",
            get(|h: HeaderMap| async move {
                match asset("favicon.svg") {
                    Some(a) => respond(a, &h),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route(
            "/assets/{*path}",
            get(|Path(path): Path<String>, h: HeaderMap| async move {
                match asset(&path) {
                    Some(a) => respond(a, &h),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// Every file under `assets/` is embedded, and nothing embedded is
    /// missing from the directory.
    #[test]
    fn the_list_matches_the_directory() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("assets/ is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path.strip_prefix(base).expect("below assets/");
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        walk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn etags_differ_between_files_and_are_quoted_hex() {
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        for t in &tags {
            assert!(
                t.len() == 18 && t.starts_with('"') && t.ends_with('"'),
                "{t}"
            );
        }
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).expect("a request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn modules_are_served_as_javascript_with_a_strict_policy() {
        let res = get("/assets/js/main.js", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], JS);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ASCII");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
    }

    #[tokio::test]
    async fn the_page_is_swedish_and_loads_no_inline_script() {
        let res = get("/", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("a body");
        let html = std::str::from_utf8(&body).expect("UTF-8");
        assert!(html.contains("<html lang=\"sv\">"));
        // Every <script> has a src: the CSP would block an inline one.
        for tag in html.split("<script").skip(1) {
            assert!(tag.contains("src=\"/assets/"), "inline script: {tag}");
        }
    }

    #[tokio::test]
    async fn a_current_copy_gets_not_modified_and_unknown_files_404() {
        let tag = asset("css/app.css").expect("embedded").etag;
        let res = get("/assets/css/app.css", Some(tag)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        let res = get("/assets/css/app.css", Some("\"0000000000000000\"")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = get("/assets/../Cargo.toml", None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = get("/assets/js/nope.js", None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
