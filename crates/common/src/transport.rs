//! gRPC channels over TLS that gatehouse dials itself, so it can pin the controller CA by hash
//! during enrollment and present the agent identity afterwards. Also the admin Unix socket.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pki;

/// A controller address: `https://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrl {
    host: String,
    port: u16,
}

impl ControllerUrl {
    /// Parses `https://HOST[:PORT]`; the port defaults to `default_port`.
    pub fn parse(text: &str, default_port: u16) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("invalid controller URL {text:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "invalid controller URL {text:?}: it must start with https://"
            ));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(format!(
                "invalid controller URL {text:?}: it must not have a path"
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("invalid controller URL {text:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(default_port),
        })
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ControllerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default versions")
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// TLS that trusts only the CA in `ca_pem`, with no client certificate.
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, TransportError> {
    let roots = root_store(ca_pem)?;
    Ok(finish(
        builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// TLS that trusts the CA in `ca_pem` and presents the identity `chain` + `key`.
pub fn client_config_with_identity(
    ca_pem: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TransportError> {
    let roots = root_store(ca_pem)?;
    let config = builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TransportError::Identity)?;
    Ok(finish(config))
}

/// TLS that trusts the controller when the chain it sends contains a CA whose public key hash
/// is `ca_hash` and the server certificate chains to it (enrollment's trust-on-pin).
pub fn client_config_pinned(ca_hash: &str) -> Arc<ClientConfig> {
    let verifier = PinnedCaVerifier {
        pin: ca_hash.to_owned(),
        provider: provider(),
    };
    finish(
        builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    )
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in pki::certs_from_pem(ca_pem)? {
        roots.add(cert).map_err(TransportError::Ca)?;
    }
    Ok(roots)
}

/// TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the CA certificate is unusable: {0}")]
    CaPem(#[from] pki::PkiError),
    #[error("the CA certificate is unusable: {0}")]
    Ca(rustls::Error),
    #[error("the identity certificate or key is unusable: {0}")]
    Identity(rustls::Error),
}

/// The marker the pinned verifier's refusal carries, so callers can explain it.
pub const CA_HASH_MISMATCH: &str = "controller CA does not match the pinned --ca-hash";

#[derive(Debug)]
struct PinnedCaVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| pki::spki_hash(c).is_ok_and(|h| h == self.pin))
            .ok_or_else(|| rustls::Error::General(CA_HASH_MISMATCH.to_owned()))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Endpoint settings shared by every gatehouse channel: HTTP/2 keepalive 30 s / 10 s.
fn endpoint(uri: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Dials `url` with TLS from `tls` and waits until the connection is up.
pub async fn tls_channel(
    url: &ControllerUrl,
    tls: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let server_name = ServerName::try_from(url.host().to_owned())
        .expect("a host parsed from a URI is a valid server name");
    let addr = (url.host().to_owned(), url.port());
    // The scheme is http because TLS happens inside the connector.
    endpoint(&format!(
        "http://{}",
        url.to_string().trim_start_matches("https://")
    ))?
    .connect_with_connector(tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let addr = addr.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }))
    .await
}

/// Dials the controller's local admin socket.
pub async fn unix_channel(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    endpoint("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_urls() {
        let u = ControllerUrl::parse("https://ctl.example.com", 7443).unwrap();
        assert_eq!((u.host(), u.port()), ("ctl.example.com", 7443));
        assert_eq!(u.to_string(), "https://ctl.example.com:7443");
        let u = ControllerUrl::parse("https://[::1]:9000", 7443).unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 9000));
        assert_eq!(u.to_string(), "https://[::1]:9000");
        assert!(
            ControllerUrl::parse("http://x", 1)
                .unwrap_err()
                .contains("https://")
        );
        assert!(
            ControllerUrl::parse("https://x/path", 1)
                .unwrap_err()
                .contains("path")
        );
        assert!(ControllerUrl::parse("not a url", 1).is_err());
    }
}
