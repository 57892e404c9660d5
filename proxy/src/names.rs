//! The names and addresses a table is written with: route, version and
//! shadow names, host names and upstream `host:port` endpoints. A leaf:
//! the table, shadows, route matching and sticky cookies all check with
//! these, so the rule for which bytes a name may hold exists once.

use http::uri::Authority;

/// Bytes allowed in names and host names: they appear in URLs, headers,
/// cookies and metric labels unescaped.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Non-empty and made of [`is_name_byte`] bytes only.
pub fn is_name_text(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_name_byte)
}

/// Route, version and shadow names: 1-64 name bytes.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 64 && is_name_text(name)
}

/// Checks `host:port` (IPv4, `[IPv6]` or a DNS name, with an explicit port).
pub fn parse_endpoint(endpoint: &str) -> Result<Authority, String> {
    let authority: Authority = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if authority.as_str().contains('@') {
        return Err("user info is not allowed".into());
    }
    if authority.port_u16().is_none() {
        return Err("a port is required, e.g. 127.0.0.1:9001".into());
    }
    if authority.port_u16() == Some(0) {
        return Err("port 0 cannot be connected to".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let is_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    // All digits and dots is a malformed IPv4 address, not a name.
    let is_name = is_name_text(host) && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !is_ip && !is_name {
        return Err(format!("'{host}' is neither an IP address nor a host name"));
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_endpoint_forms() {
        for good in [
            "127.0.0.1:80",
            "[::1]:8080",
            "backend.internal:9000",
            "localhost:1",
        ] {
            assert!(parse_endpoint(good).is_ok(), "{good} rejected");
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("canary-2.eu_west"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(is_name_text(&"a".repeat(65)));
    }
}
