//! `GET /dashboard`: one self-contained page (its HTML, CSS and hand-written
//! SVG charts in `assets/dashboard.html`, compiled into the binary) that
//! polls `GET /api/v1/stats` every second: per route the current weights,
//! per version p50/p99 and error rate over the last minutes, and shadow
//! match rates.

use http::header::{HeaderValue, CACHE_CONTROL};
use http::{Method, StatusCode};

use crate::admin::api::{text_response, AdminResponse, Extension};

const PAGE: &str = include_str!("../assets/dashboard.html");

/// The page.
pub fn page() -> AdminResponse {
    let mut response = text_response(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Serves the page at `/dashboard` on the admin listener.
pub fn extension() -> Extension {
    Box::new(|method, path, _query| {
        (method == Method::GET && matches!(path, "/dashboard" | "/dashboard/")).then(page)
    })
}

/// The URL a person opens, for an admin listener at `admin`.
pub fn url(admin: std::net::SocketAddr) -> String {
    format!("http://{admin}/dashboard")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        assert!(PAGE.contains("/api/v1/stats"));
        for external in ["http://", "https://", "//cdn", "<link", "src="] {
            let hits: Vec<&str> = PAGE
                .lines()
                .filter(|l| l.contains(external) && !l.contains("www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{external}: {hits:?}");
        }
    }

    #[test]
    fn served_at_dashboard_only() {
        let extension = extension();
        let response = extension(&Method::GET, "/dashboard", None).expect("page");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(extension(&Method::POST, "/dashboard", None).is_none());
        assert!(extension(&Method::GET, "/other", None).is_none());
    }
}
