//! `[listen]`: where clients and the admin API connect, and the checks of
//! those addresses.

use std::net::SocketAddr;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::tls;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where clients connect.
    #[serde(default = "default_data")]
    pub data: Spanned<String>,
    /// Where the admin API listens (never on the data port).
    #[serde(default = "default_admin")]
    pub admin: Spanned<String>,
    /// Terminate TLS on the data listener (see [`tls`]).
    #[serde(default)]
    pub tls: Option<tls::ListenTls>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            data: default_data(),
            admin: default_admin(),
            tls: None,
        }
    }
}

fn default_data() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}

fn default_admin() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".into())
}

impl Listen {
    pub fn data_addr(&self) -> SocketAddr {
        parse_or(&self.data, ([127, 0, 0, 1], 8080))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        parse_or(&self.admin, ([127, 0, 0, 1], 9901))
    }

    pub fn validate(&self, error: &mut impl FnMut(String, Range<usize>, String)) {
        for (key, addr) in [("listen.data", &self.data), ("listen.admin", &self.admin)] {
            if addr.get_ref().parse::<SocketAddr>().is_err() {
                error(
                    key.into(),
                    addr.span(),
                    format!(
                        "'{}' is not an IP:port address, e.g. 127.0.0.1:8080",
                        addr.get_ref()
                    ),
                );
            }
        }
        // Port 0 asks the OS for a fresh port each time, so both listeners on
        // "127.0.0.1:0" is fine (tests, benchmarks).
        if self.data.get_ref() == self.admin.get_ref() && !self.data.get_ref().ends_with(":0") {
            error(
                "listen.admin".into(),
                self.admin.span(),
                "the admin API must not share the data address".into(),
            );
        }
        if let Some(listen_tls) = &self.tls {
            tls::validate_listen(listen_tls, error);
        }
    }
}

/// `validate` reported a bad address already; this only keeps start-up
/// going to the point where every error is reported.
fn parse_or(addr: &Spanned<String>, fallback: ([u8; 4], u16)) -> SocketAddr {
    addr.get_ref()
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(fallback))
}
