//! `GET /dashboard`: the operator's console, one self-contained page (its
//! HTML, CSS, script and hand-written SVG charts in
//! `assets/dashboard.html`, compiled into the binary, nothing loaded from
//! elsewhere). It polls the admin API every second — stats, routes (the
//! revision), rollouts, shadows, history — and shows per route the weights
//! bar, the rollout's step and last judgement, per-version figures, latency
//! and error charts with a marker at every change, and the shadows'
//! compare counts. Its controls (weights, promote, rollback, flip, rollout
//! start/pause/resume/abort) call the same admin API with the token the
//! operator typed and `If-Match` with the revision the page shows.

use http::header::{HeaderValue, CACHE_CONTROL};
use http::{Method, StatusCode};

use crate::admin::api::{sync_extension, text_response, AdminResponse, Extension};

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
    sync_extension(|method, path, _query| {
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
    fn the_token_stays_in_memory() {
        for store in [
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "location.hash",
        ] {
            assert!(!PAGE.contains(store), "{store}");
        }
        assert!(PAGE.contains("Authorization = `Bearer ${token}`"));
        assert!(PAGE.contains(r#"h["If-Match"]"#));
    }

    #[tokio::test]
    async fn served_at_dashboard_only() {
        let extension = extension();
        let response = extension(&Method::GET, "/dashboard", None)
            .expect("page")
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(extension(&Method::POST, "/dashboard", None).is_none());
        assert!(extension(&Method::GET, "/other", None).is_none());
    }
}
