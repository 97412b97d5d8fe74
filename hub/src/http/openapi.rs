//! `GET /api/v1/openapi.json`: the API described for clients and for
//! tools that test it (schemathesis). Written by hand, next to the code;
//! the test below keeps the two in step.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const DOCUMENT: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the modules register, as (method, path), read from
    /// their source: `.route("/path", get(a).post(b))`.
    fn registered() -> Vec<(String, String)> {
        let sources = [
            include_str!("admin.rs"),
            include_str!("alerts.rs"),
            include_str!("audit.rs"),
            include_str!("board.rs"),
            include_str!("devices.rs"),
            include_str!("handover.rs"),
            include_str!("health.rs"),
            include_str!("login.rs"),
            include_str!("openapi.rs"),
            include_str!("patients.rs"),
            include_str!("plans.rs"),
            include_str!("ws.rs"),
        ];
        let mut out = Vec::new();
        for src in sources {
            let flat: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
            for piece in flat.split(".route(").skip(1) {
                let Some(path) = piece.split('"').nth(1) else {
                    continue;
                };
                if !path.starts_with('/') {
                    continue;
                }
                let handlers = piece.split_once(',').map_or("", |(_, h)| h);
                let handlers = handlers.split(".route(").next().unwrap_or("");
                for method in ["get", "post", "put", "delete", "patch"] {
                    let called = handlers.contains(&format!(" {method}(|"))
                        || handlers.contains(&format!(" {method}("))
                        || handlers.contains(&format!(".{method}("));
                    if called {
                        out.push((method.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_document_describes_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let routes = registered();
        assert!(routes.len() > 40, "found only {routes:?}");
        for (method, path) in &routes {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is served but not in openapi.json"
            );
        }
        let paths = doc["paths"].as_object().expect("paths");
        for (path, ops) in paths {
            for method in ops.as_object().expect("operations").keys() {
                assert!(
                    routes.iter().any(|(m, p)| m == method && p == path),
                    "{method} {path} is in openapi.json but not served"
                );
            }
        }
    }
}
