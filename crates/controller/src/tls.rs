//! The controller's TLS listeners. One agent port: a client certificate is optional at the
//! handshake (so `Enroll` works without one), but when one is sent it must chain to the identity
//! CA and name an agent that is not revoked. The verified identity travels with the connection
//! into the gRPC handlers; no message field can claim another.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use gatehouse_common::pki::CertInfo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::debug;

/// Agents refused at the handshake. Shared with the admin API, which adds to it on revoke.
#[derive(Debug, Clone, Default)]
pub struct RevokedAgents(Arc<RwLock<HashSet<String>>>);

impl RevokedAgents {
    /// Refuses `id` from now on.
    pub fn insert(&self, id: &str) {
        self.0.write().expect("revoked lock").insert(id.to_owned());
    }

    /// Whether `id` is refused.
    pub fn contains(&self, id: &str) -> bool {
        self.0.read().expect("revoked lock").contains(id)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[derive(Debug)]
struct AgentCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevokedAgents,
    grace: Duration,
}

impl ClientCertVerifier for AgentCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let info = CertInfo::from_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("unreadable client certificate: {e}")))?;
        let agent = info.agent_id.ok_or_else(|| {
            rustls::Error::General("the client certificate names no agent".into())
        })?;
        if self.revoked.contains(agent.as_str()) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        // A certificate that expired less than `grace` ago still opens a connection, so the
        // agent can ask for a grace renewal; the handlers refuse everything else to it.
        let now_secs = now.as_secs() as i64;
        let check_at = if info.not_after < now_secs
            && now_secs - info.not_after <= self.grace.as_secs() as i64
        {
            UnixTime::since_unix_epoch(Duration::from_secs((info.not_after - 1).max(0) as u64))
        } else {
            now
        };
        self.inner
            .verify_client_cert(end_entity, intermediates, check_at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS for the agent port.
pub fn agent_server_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    revoked: RevokedAgents,
    grace: Duration,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier = AgentCertVerifier {
        inner,
        revoked,
        grace,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// TLS for the admin port (bearer tokens, no client certificates).
pub fn admin_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Who is on the other end of a TLS connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    /// The verified client certificate, when one was presented.
    pub certificate: Option<CertInfo>,
    /// The connection's requests, for closing it when idle.
    pub activity: Option<Arc<crate::idle::Activity>>,
}

/// A TLS connection with its verified peer, as tonic sees it; closed when it does nothing
/// ([`crate::idle`]).
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: Peer,
    watch: crate::idle::Watch,
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        // Looked at on every poll, so a client that keeps sending cannot dodge it.
        if self.watch.poll_expired(cx) {
            let error = self.watch.error();
            debug!(remote = ?self.peer.remote, error = %error, "closing an idle connection");
            return Poll::Ready(Err(error));
        }
        read
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener` and yields finished TLS handshakes. Each handshake
/// runs in its own task with a 10 s limit, so a slow client delays no one else; a connection
/// that then does nothing is closed after `limits`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: crate::idle::Limits,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| CertInfo::from_der(c).ok());
                        let (watch, activity) = crate::idle::Watch::new(limits);
                        let peer = Peer {
                            remote: Some(remote),
                            certificate,
                            activity: Some(activity),
                        };
                        let _ = tx
                            .send(Ok(TlsConn {
                                stream,
                                peer,
                                watch,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => debug!(%remote, "TLS handshake failed: {e}"),
                    Err(_) => debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
