//! Certificate facts both sides need: serials, validity, the agent id in the URI SAN, and the
//! CA pin (`sha256:` of the CA's SubjectPublicKeyInfo, like kubeadm's discovery hash).

use aws_lc_rs::digest;
use gatehouse_proto::names::AgentId;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("no certificate found in the PEM text")]
    NoCertificate,
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("malformed certificate: {0}")]
    Der(String),
}

/// What gatehouse reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The agent named by a `spiffe://gatehouse/agent/<id>` URI SAN, if any.
    pub agent_id: Option<AgentId>,
    /// `sha256:<hex>` of the SubjectPublicKeyInfo.
    pub spki_hash: String,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Der(e.to_string()))?;
        let agent_id = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .find_map(|name| match name {
                GeneralName::URI(uri) => AgentId::from_uri(uri).ok(),
                _ => None,
            });
        Ok(Self {
            serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            agent_id,
            spki_hash: spki_hash_of(&cert),
        })
    }

    /// Reads the first certificate of a PEM chain.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let chain = certs_from_pem(pem)?;
        Self::from_der(&chain[0])
    }
}

fn spki_hash_of(cert: &X509Certificate<'_>) -> String {
    let spki = cert.tbs_certificate.subject_pki.raw;
    format!(
        "sha256:{}",
        hex::encode(digest::digest(&digest::SHA256, spki))
    )
}

/// `sha256:<hex>` of a DER certificate's SubjectPublicKeyInfo.
pub fn spki_hash(der: &[u8]) -> Result<String, PkiError> {
    Ok(CertInfo::from_der(der)?.spki_hash)
}

/// Every certificate in a PEM text, in order. Fails when there is none.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate);
    }
    Ok(certs)
}

/// Parses `sha256:<64 hex>` as given to `--ca-hash`.
pub fn parse_ca_hash(text: &str) -> Result<String, String> {
    let hex_part = text.strip_prefix("sha256:").ok_or_else(|| {
        format!("--ca-hash must look like sha256:<64 hex characters>, got {text:?}")
    })?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--ca-hash must look like sha256:<64 hex characters>, got {text:?}"
        ));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_agent_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://gatehouse/agent/abcdefgh01234567"
                .try_into()
                .unwrap(),
        )];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::from_pem(&cert.pem()).unwrap();
        assert_eq!(info.agent_id.unwrap().as_str(), "abcdefgh01234567");
        assert_eq!(info.serial, "0abc");
        assert!(info.spki_hash.starts_with("sha256:") && info.spki_hash.len() == 71);
        assert!(info.not_after > info.not_before);
    }

    #[test]
    fn ca_hash_syntax() {
        let good = format!("sha256:{}", "A".repeat(64));
        assert_eq!(
            parse_ca_hash(&good).unwrap(),
            format!("sha256:{}", "a".repeat(64))
        );
        assert!(parse_ca_hash("abc").is_err());
        assert!(parse_ca_hash(&format!("sha256:{}", "g".repeat(64))).is_err());
        assert!(matches!(
            certs_from_pem("nothing"),
            Err(PkiError::NoCertificate)
        ));
    }
}
