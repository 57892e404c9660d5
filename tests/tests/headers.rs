//! Header rewriting: hop-by-hop headers removed in both directions (the
//! fixed list and whatever Connection names), end-to-end headers kept, and
//! the X-Forwarded-For/Proto/Host values the backend sees.

use http::{Request, StatusCode};
use switchyard_tests::*;

/// Every hop-by-hop header the proxy must drop, with a value a client or
/// backend might plausibly send.
const HOP_BY_HOP: [(&str, &str); 6] = [
    ("keep-alive", "timeout=5"),
    ("proxy-connection", "keep-alive"),
    ("te", "trailers"),
    ("trailer", "x-checksum"),
    ("upgrade", "websocket"),
    ("x-private", "listed in Connection"),
];

async fn proxy_to(stable: &Backend) -> TestProxy {
    start_proxy(&config(&route("web").backend("stable", 1, stable).build())).await
}

fn seen_header(seen: &serde_json::Value, name: &str) -> Option<String> {
    seen["headers"][name].as_array().map(|values| {
        values
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_hop_by_hop_headers_are_removed_and_forwarded_headers_added() {
    let stable = backend("stable").start().await;
    let proxy = proxy_to(&stable).await;
    let request = |url: String| {
        let mut req = Request::get(url)
            .header("host", "app.example.com:8080")
            .header("connection", "keep-alive, x-private")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-end-to-end", "kept");
        for (name, value) in HOP_BY_HOP {
            req = req.header(name, value);
        }
        req.body(empty()).expect("request")
    };

    // Control: sent straight to the backend, every header arrives, so their
    // absence below is the proxy's doing.
    let direct = send(
        &proxy.client,
        request(format!("http://{}/headers", stable.addr)),
    )
    .await
    .expect("GET /headers directly");
    for (name, value) in HOP_BY_HOP {
        assert_eq!(seen_header(&direct.json(), name).as_deref(), Some(value));
    }

    let reply = send(&proxy.client, request(proxy.url("/headers")))
        .await
        .expect("GET /headers");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();

    for (name, _) in HOP_BY_HOP {
        assert_eq!(seen_header(&seen, name), None, "{name} reached the backend");
    }
    assert_eq!(seen_header(&seen, "connection"), None);
    assert_eq!(seen_header(&seen, "x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(
        seen_header(&seen, "host").as_deref(),
        Some("app.example.com:8080")
    );
    assert_eq!(
        seen_header(&seen, "x-forwarded-for").as_deref(),
        Some("10.0.0.1, 127.0.0.1"),
        "the client address is appended to an existing X-Forwarded-For"
    );
    assert_eq!(
        seen_header(&seen, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        seen_header(&seen, "x-forwarded-host").as_deref(),
        Some("app.example.com:8080")
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_starts_with_the_client_address() {
    let stable = backend("stable").start().await;
    let proxy = proxy_to(&stable).await;
    let reply = proxy.get("/headers").await;
    let seen = reply.json();
    assert_eq!(
        seen_header(&seen, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    // The client's Host (hyper's client sets it to the proxy's address) is
    // kept, and X-Forwarded-Host repeats it.
    let authority = proxy.running.data_addr.to_string();
    assert_eq!(
        seen_header(&seen, "host").as_deref(),
        Some(authority.as_str())
    );
    assert_eq!(
        seen_header(&seen, "x-forwarded-host").as_deref(),
        Some(authority.as_str())
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hop_by_hop_headers_are_removed() {
    let stable = backend("stable").start().await;
    let proxy = proxy_to(&stable).await;
    let hop_by_hop = [
        "connection",
        "x-private-response",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ];
    // Control: the backend really sends them.
    let direct = get(&proxy.client, &format!("http://{}/hop", stable.addr)).await;
    for name in hop_by_hop {
        assert!(direct.header(name).is_some(), "backend did not send {name}");
    }

    let reply = proxy.get("/hop").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "stable");
    for name in hop_by_hop {
        assert_eq!(
            reply.header(name),
            None,
            "{name} reached the client: {:?}",
            reply.headers
        );
    }
    assert_eq!(reply.header("x-end-to-end"), Some("kept"));
    assert_eq!(reply.header("x-switchyard-version"), Some("stable"));
    proxy.shutdown().await;
}
