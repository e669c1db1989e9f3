//! E-mail receivers: one message per outbox row over SMTP with lettre (rustls with ring),
//! STARTTLS by default. The notification id is the Message-ID, so a mail system can drop a
//! duplicate as webhook receivers do with `X-Flotilla-Delivery`.

use super::config::{EmailTls, ReceiverConfig};
use super::http::{SendError, chain, read_ca_file};
use super::render;
use crate::store::outbox::OutboxRow;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

fn config_error(what: impl std::fmt::Display) -> SendError {
    SendError::Config(what.to_string())
}

/// Sends `row` to an e-mail receiver once.
pub async fn send(
    receiver: &ReceiverConfig,
    row: &OutboxRow,
    timeout: Duration,
) -> Result<(), SendError> {
    let smtp = receiver
        .smtp
        .as_deref()
        .ok_or_else(|| config_error("email receiver has no smtp"))?;
    let (host, port) = smtp
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| config_error(format!("smtp = {smtp:?} is not host:port")))?;
    let from: Mailbox = receiver
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| config_error(format!("from: {e}")))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(render::title(&row.transitions))
        .message_id(Some(format!("<{}@flotilla>", row.id)))
        .header(ContentType::TEXT_PLAIN);
    for to in &receiver.to {
        builder = builder.to(to.parse().map_err(|e| config_error(format!("to: {e}")))?);
    }
    let message = builder
        .body(render::text(&row.id, &row.transitions))
        .map_err(|e| config_error(format!("message: {e}")))?;

    let tls = match receiver.email_tls() {
        EmailTls::None => Tls::None,
        mode => {
            let mut params = TlsParameters::builder(host.to_string());
            params = match &receiver.ca_file {
                Some(path) => {
                    let mut p = params.certificate_store(CertificateStore::None);
                    for der in read_ca_file(path).map_err(config_error)? {
                        let cert = Certificate::from_der(der.to_vec())
                            .map_err(|e| config_error(format!("ca_file: {e}")))?;
                        p = p.add_root_certificate(cert);
                    }
                    p
                }
                None => params.certificate_store(CertificateStore::WebpkiRoots),
            };
            let params = params
                .build_rustls()
                .map_err(|e| config_error(format!("TLS setup: {e}")))?;
            if mode == EmailTls::Tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&receiver.username, &receiver.secret) {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| SendError::Transport(format!("smtp: {}", chain(&e))))
}
