//! HTTP receivers (webhook, Slack-compatible, ntfy): one POST per try over hyper, TLS by rustls
//! with ring and the built-in web roots (or a receiver's `ca_file`). Errors say what failed
//! without the URL, which may carry a token.

use super::ReceiverKind;
use super::render;
use crate::store::outbox::OutboxRow;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// Most of a receiver's answer read (then dropped): enough to finish the exchange cleanly,
/// bounded so a hostile receiver cannot fill memory.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a try failed: a message for `last_error` and the log.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The receiver answered, but not 2xx.
    #[error("receiver answered HTTP {0}")]
    Status(u16),
    /// No answer: connection, TLS or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The receiver's configuration cannot be used (unreadable `ca_file`…).
    #[error("{0}")]
    Config(String),
}

/// A `ca_file` that cannot be read or holds no certificate.
#[derive(Debug, thiserror::Error)]
#[error("ca_file {path}: {reason}")]
pub struct CaFileError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads the PEM certificates of a `ca_file`.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let fail = |reason: String| CaFileError {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(fail("holds no certificate".into()));
    }
    Ok(certs)
}

/// The whole error chain in one line (hyper's own message is only "client error (Connect)").
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SendError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = read_ca_file(path).map_err(|e| SendError::Config(e.to_string()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| SendError::Config(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Sends `row` to an HTTP receiver once: POST, wait for the status, read a bounded answer.
pub async fn send(receiver: &super::ReceiverConfig, row: &OutboxRow) -> Result<(), SendError> {
    let url = receiver
        .url
        .as_ref()
        .ok_or_else(|| SendError::Config("receiver has no url".into()))?;
    let uri: ::http::Uri = url
        .expose()
        .parse()
        .map_err(|_| SendError::Config("url is not a valid URL".into()))?;
    let mut req = ::http::Request::post(uri).header("X-Flotilla-Delivery", &row.id);
    let body = match receiver.kind {
        ReceiverKind::Webhook => {
            let body =
                render::webhook_body(&row.id, &row.receiver, row.created_ms, &row.transitions);
            let secret = receiver
                .secret
                .as_ref()
                .ok_or_else(|| SendError::Config("webhook receiver has no secret".into()))?;
            req = req.header("Content-Type", "application/json").header(
                "X-Flotilla-Signature",
                render::signature(secret.expose().as_bytes(), &body),
            );
            body
        }
        ReceiverKind::Slack => {
            req = req.header("Content-Type", "application/json");
            render::slack_body(&row.id, &row.transitions)
        }
        ReceiverKind::Ntfy => {
            req = req
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("Title", render::title(&row.transitions))
                .header(
                    "Priority",
                    render::ntfy_priority(&row.transitions).to_string(),
                )
                .header("Tags", render::ntfy_tags(&row.transitions));
            if let Some(token) = &receiver.secret {
                req = req.header("Authorization", format!("Bearer {}", token.expose()));
            }
            render::text(&row.id, &row.transitions).into_bytes()
        }
        ReceiverKind::Email => {
            return Err(SendError::Config("not an HTTP receiver".into()));
        }
    };
    let req = req
        .header(
            "User-Agent",
            concat!("flotilla-hubd/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| SendError::Config("request headers are not valid".into()))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(receiver.ca_file.as_deref())?)
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(https);
    let resp = client
        .request(req)
        .await
        .map_err(|e| SendError::Transport(chain(&e)))?;
    let status = resp.status();
    // Read (a bounded part of) the answer so the exchange ends cleanly; its content is unused.
    let _ = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(SendError::Status(status.as_u16()))
    }
}
