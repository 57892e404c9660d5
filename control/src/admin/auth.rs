//! Who may call the admin API: bearer tokens from the config's files and
//! the environment, compared in constant time, each with a name the history
//! records; reads may be public on loopback.

use std::net::SocketAddr;
use std::path::Path;

use http::header;
use http::{Method, StatusCode};
use subtle::ConstantTimeEq;

use super::api::ApiError;
use crate::config::AdminConfig;

/// Who may call what.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    /// (name, token) pairs.
    tokens: Vec<(String, String)>,
    public_reads: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the admin token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the admin token file {0} is empty: put the token in it")]
    EmptyToken(String),
    #[error("the admin API would listen on {0}, which is not a loopback address, without a token: set [admin] token_file or SWITCHYARD_ADMIN_TOKEN, or listen on 127.0.0.1")]
    NoTokenOffLoopback(SocketAddr),
}

impl AdminAuth {
    /// Tokens from the config's files (relative paths are relative to
    /// `base`) and from `SWITCHYARD_ADMIN_TOKEN`.
    pub fn load(
        config: &AdminConfig,
        base: Option<&Path>,
        addr: SocketAddr,
        env_token: Option<String>,
    ) -> Result<AdminAuth, AuthError> {
        let mut tokens = Vec::new();
        let read = |file: &Path| -> Result<String, AuthError> {
            let path = match base {
                Some(base) if file.is_relative() => base.join(file),
                _ => file.to_path_buf(),
            };
            let text = std::fs::read_to_string(&path).map_err(|source| AuthError::TokenFile {
                path: path.display().to_string(),
                source,
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(AuthError::EmptyToken(path.display().to_string()));
            }
            Ok(token)
        };
        if let Some(file) = &config.token_file {
            tokens.push(("admin".to_owned(), read(file)?));
        }
        for named in &config.tokens {
            tokens.push((named.name.clone(), read(&named.file)?));
        }
        if let Some(token) = env_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            tokens.push(("env".to_owned(), token));
        }
        let loopback = addr.ip().is_loopback();
        if tokens.is_empty() && !loopback {
            return Err(AuthError::NoTokenOffLoopback(addr));
        }
        if tokens.is_empty() {
            tracing::warn!(%addr, "the admin API has no token: anyone on this host can change the routing table; set [admin] token_file or SWITCHYARD_ADMIN_TOKEN");
        }
        Ok(AdminAuth {
            tokens,
            public_reads: config.public_reads.unwrap_or(loopback),
        })
    }

    /// The caller's name ("local" on a host trusted for want of tokens,
    /// "anonymous" for a public read), or why the request is refused.
    pub fn authorize(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<String, ApiError> {
        let caller = self.caller(headers);
        // No token configured (only allowed on loopback): the host is trusted.
        let caller = caller.or_else(|| self.tokens.is_empty().then(|| "local".to_owned()));
        let presented_token = headers.contains_key(header::AUTHORIZATION);
        // OFREP evaluations are POSTs that change nothing: reads.
        let read_only = method == Method::GET
            || method == Method::HEAD
            || (method == Method::POST && path.starts_with("/ofrep/"));
        // Liveness and readiness probes never need a token.
        let open = matches!(path, "/healthz" | "/readyz");
        if !open && caller.is_none() && (!read_only || !self.public_reads || presented_token) {
            let why = if presented_token {
                "the bearer token is not valid"
            } else {
                "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'"
            };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, why));
        }
        Ok(caller.unwrap_or_else(|| "anonymous".to_owned()))
    }

    /// The caller's name, if its bearer token is known. Every token is
    /// compared, in constant time, so timing tells nothing about which.
    fn caller(&self, headers: &http::HeaderMap) -> Option<String> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)?;
        let mut found = None;
        for (name, token) in &self.tokens {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(name.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn tokens_compare_and_name_the_caller() {
        let auth = AdminAuth {
            tokens: vec![("deployer".into(), "s3cret".into())],
            public_reads: false,
        };
        let mut headers = http::HeaderMap::new();
        assert_eq!(auth.caller(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(auth.caller(&headers).as_deref(), Some("deployer"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert_eq!(auth.caller(&headers), None);
    }

    #[test]
    fn refuses_public_admin_without_token() {
        let addr: SocketAddr = "0.0.0.0:9901".parse().expect("addr");
        assert!(matches!(
            AdminAuth::load(&AdminConfig::default(), None, addr, None),
            Err(AuthError::NoTokenOffLoopback(_))
        ));
        let auth = AdminAuth::load(&AdminConfig::default(), None, addr, Some("t".into()))
            .expect("token from env");
        assert!(!auth.public_reads);
    }
}
