//! What a site really serves: a TLS handshake with the site's name, whose chain is observed,
//! never trusted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::names::DomainName;

/// A certificate a site must serve after the reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCheck {
    pub site: String,
    pub domain: DomainName,
    pub port: u16,
    pub serial: String,
}

/// The serial of the certificate served for `check.domain` (SNI) on `address:check.port`.
/// The chain is only observed, not trusted.
pub async fn served_serial(address: IpAddr, check: &ServedCheck) -> Result<String, String> {
    let sni = match check.domain.as_str().strip_prefix("*.") {
        Some(parent) => format!("gatehouse-check.{parent}"),
        None => check.domain.to_string(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ObserveOnly(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((address, check.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate served")?;
    crate::pki::CertInfo::from_der(leaf)
        .map(|i| i.serial)
        .map_err(|e| e.to_string())
}

/// Accepts any server certificate: used only to see which certificate is served.
#[derive(Debug)]
struct ObserveOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ObserveOnly {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
