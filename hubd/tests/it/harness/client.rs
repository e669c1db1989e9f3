//! Raw protocol clients for abuse and by-hand agents: a bare QUIC connection, a client that said
//! hello (an operator, or an agent driven frame by frame), and the fleet event feed over QUIC.

use super::{DEADLINE, within};
use flotilla_certs::dial::{self, DialError};
use flotilla_certs::{IDENTITY_STEM, Identity};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{
    MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_METRICS_FRAME, MAX_REQUEST_FRAME,
};
use flotilla_wire::msg::{
    FleetEvent, Hello, MetricsFrame, MetricsSample, OpRequest, OpResponse, StreamOpen, Welcome,
};
use flotilla_wire::{IdentityId, PROTOCOL_VERSION};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// What test clients say in hello.
pub(crate) fn test_hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: "test".into(),
        hostname: "test-host".into(),
        os: "test-os".into(),
    }
}

/// Opens a client endpoint and a QUIC connection to `hubs` with `config`, without any exchange.
pub(crate) async fn dial_raw(
    hubs: &[String],
    config: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection), DialError> {
    let endpoint = dial::client_endpoint(false)?;
    let conn = within(DEADLINE, "connect", dial::connect(&endpoint, hubs, config)).await?;
    Ok((endpoint, conn))
}

/// A client that said hello and got a welcome: an operator, or an agent driven by hand.
pub(crate) struct Client {
    /// The connection.
    pub(crate) conn: quinn::Connection,
    /// What the hub said.
    pub(crate) welcome: Welcome,
    /// Control stream, send half (kept open, as agentd does).
    pub(crate) control_send: quinn::SendStream,
    /// Control stream, receive half.
    pub(crate) control_recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl Client {
    /// Says hello as `identity` to `hubs`.
    pub(crate) async fn hello(identity: &Identity, hubs: &[String]) -> Result<Self, DialError> {
        let endpoint = dial::client_endpoint(false)?;
        let config = dial::identity_config(identity).expect("client TLS configuration");
        let (conn, control_send, control_recv, welcome) = within(
            DEADLINE,
            "hello",
            dial::hello(&endpoint, hubs, config, test_hello()),
        )
        .await?;
        Ok(Self {
            conn,
            welcome,
            control_send,
            control_recv,
            _endpoint: endpoint,
        })
    }

    /// Says hello as the identity stored in `dir`, to the hubs listed there.
    pub(crate) async fn from_dir(dir: &Path) -> Result<Self, DialError> {
        let identity = Identity::load(dir, IDENTITY_STEM).expect("identity in dir");
        let hubs = Identity::load_hubs(dir).expect("hubs file in dir");
        Self::hello(&identity, &hubs).await
    }

    /// One operator request and its response.
    pub(crate) async fn request(&self, req: &OpRequest) -> OpResponse {
        within(DEADLINE, "operator response", async {
            let (mut send, mut recv) = self.conn.open_bi().await.expect("open request stream");
            write_frame(&mut send, &StreamOpen::Request, MAX_CONTROL_FRAME)
                .await
                .expect("write stream open");
            write_frame(&mut send, req, MAX_REQUEST_FRAME)
                .await
                .expect("write request");
            send.finish().expect("finish request");
            read_frame::<OpResponse, _>(&mut recv, MAX_REQUEST_FRAME)
                .await
                .expect("read response")
                .expect("a response before the stream ends")
        })
        .await
    }

    /// Subscribes to fleet events.
    pub(crate) async fn subscribe(&self) -> Subscription {
        let (mut send, recv) = self.conn.open_bi().await.expect("open events stream");
        write_frame(&mut send, &StreamOpen::Events, MAX_CONTROL_FRAME)
            .await
            .expect("write stream open");
        Subscription { recv, _send: send }
    }

    /// Opens a metrics stream and sends `sample` on it, as agentd does.
    pub(crate) async fn send_sample(&self, sample: MetricsSample) -> quinn::SendStream {
        let mut send = self.conn.open_uni().await.expect("open metrics stream");
        write_frame(&mut send, &StreamOpen::Metrics, MAX_CONTROL_FRAME)
            .await
            .expect("write stream open");
        write_frame(&mut send, &MetricsFrame::Sample(sample), MAX_METRICS_FRAME)
            .await
            .expect("write sample");
        send
    }
}

/// Fleet events pushed to an operator over QUIC.
pub(crate) struct Subscription {
    recv: quinn::RecvStream,
    _send: quinn::SendStream,
}

impl Subscription {
    /// Waits for the first event `pick` accepts.
    pub(crate) async fn until<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(FleetEvent) -> Option<T>,
    ) -> T {
        within(deadline, what, async {
            loop {
                let ev = read_frame::<FleetEvent, _>(&mut self.recv, MAX_EVENTS_FRAME)
                    .await
                    .unwrap_or_else(|e| panic!("events stream failed waiting for {what}: {e}"))
                    .unwrap_or_else(|| panic!("events stream ended waiting for {what}"));
                if let Some(t) = pick(ev) {
                    return t;
                }
            }
        })
        .await
    }

    /// Waits until every id in `want` is online (from the snapshot or later events).
    pub(crate) async fn all_online(&mut self, want: &[IdentityId], deadline: Duration) {
        let mut online = HashSet::new();
        self.until("agents online", deadline, |ev| {
            match ev {
                FleetEvent::Snapshot(list) => {
                    online.extend(
                        list.into_iter()
                            .filter(|a| a.status == flotilla_wire::msg::Status::Online)
                            .map(|a| a.id),
                    );
                }
                FleetEvent::Online(info) => {
                    online.insert(info.id);
                }
                FleetEvent::Offline { id, .. } => {
                    online.remove(&id);
                }
                _ => {}
            }
            want.iter().all(|id| online.contains(id)).then_some(())
        })
        .await
    }
}
