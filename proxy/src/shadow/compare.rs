//! The compare stage: the primary's status and body digest handed to the
//! compared copies of its request, which judge the shadow's answer by it.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::Shadow;
use crate::body::ProxyBody;
use crate::tee::Digester;

/// What a compared copy needs to judge the shadow's answer.
pub(super) struct Compared {
    pub(super) primary: oneshot::Receiver<Primary>,
    pub(super) ignore_body: bool,
    pub(super) wait: Duration,
    pub(super) method: Method,
    pub(super) path: String,
}

/// The primary's answer, as far as a comparison needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Primary {
    pub(super) status: StatusCode,
    pub(super) digest: Option<u64>,
}

/// The shadow's answer.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) digest: Option<u64>,
}

/// What the compare stage owes the compared copies of one request: the
/// primary's status and (unless every one ignores bodies) its body digest.
/// Dropped without [`Comparison::attach`] (the primary failed), each copy
/// counts as aborted.
#[derive(Default)]
pub struct Comparison {
    waiting: Vec<oneshot::Sender<Primary>>,
    digest: bool,
}

impl Comparison {
    pub(super) fn expect(&mut self, shadow: &Shadow, req: &Request<ProxyBody>) -> Compared {
        let (tx, rx) = oneshot::channel();
        self.waiting.push(tx);
        self.digest |= !shadow.spec.compare_ignore_body;
        Compared {
            primary: rx,
            ignore_body: shadow.spec.compare_ignore_body,
            wait: shadow.compare_wait,
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
        }
    }

    /// The compare stage: hands the primary's status to the compared copies
    /// and, when bodies are compared, wraps the response body to digest it
    /// as it streams to the client.
    #[inline]
    pub fn attach(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        if self.waiting.is_empty() {
            return response;
        }
        self.attach_to(response)
    }

    fn attach_to(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let status = response.status();
        let Comparison { waiting, digest } = self;
        if !digest {
            report(
                waiting,
                Primary {
                    status,
                    digest: None,
                },
            );
            return response;
        }
        response.map(|body| {
            Digester::body(body, move |digest| {
                // Without a digest the primary's body was cut short.
                if digest.is_some() {
                    report(waiting, Primary { status, digest });
                }
            })
            .boxed()
        })
    }
}

fn report(waiting: Vec<oneshot::Sender<Primary>>, primary: Primary) {
    for tx in waiting {
        // A copy abandoned for its body size no longer listens.
        let _ = tx.send(primary);
    }
}
