//! The controller's internal CAs, created on first start with their keys sealed with the master
//! key in the store: the identity CA (agent client certificates and the controller's own server
//! certificate) and, separate from it, the site CA of the `internal` certificate issuer. Both
//! sign CSRs: private keys never leave the hosts.

use std::time::Duration;

use gatehouse_common::pki::{self, CertInfo};
use gatehouse_proto::names::AgentId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

/// Which CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Identifies agents and the controller.
    Identity,
    /// Signs site certificates for the `internal` issuer.
    Sites,
}

impl CaKind {
    fn kv_name(self) -> &'static str {
        match self {
            CaKind::Identity => "ca.identity",
            CaKind::Sites => "ca.sites",
        }
    }

    fn common_name(self) -> &'static str {
        match self {
            CaKind::Identity => "gatehouse identity CA",
            CaKind::Sites => "gatehouse internal site CA",
        }
    }
}
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVER_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The CA could not be loaded, or a certificate not issued.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("the stored CA is damaged: {0}")]
    Damaged(String),
    #[error("the CSR is not usable: {0}")]
    BadCsr(String),
    #[error("cannot sign: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("invalid server name {name:?} for the controller certificate: {detail}")]
    ServerName { name: String, detail: String },
}

#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    /// PKCS#8 PEM, sealed with the master key.
    key_sealed: String,
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub info: CertInfo,
}

/// The identity CA.
pub struct Ca {
    kind: CaKind,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    hash: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("kind", &self.kind)
            .field("hash", &self.hash)
            .finish()
    }
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The keys a CSR may carry (what the signature check accepts).
const ACCEPTED_KEYS: &str = "P-256, P-384, Ed25519 or RSA of 2048 to 8192 bits";

/// Parses a DER CSR and checks its signature; only its public key is used. A key the
/// signature check cannot accept is named as such, not as a bad signature.
fn parse_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, CaError> {
    use x509_parser::prelude::{FromDer, X509CertificationRequest};
    use x509_parser::public_key::PublicKey;
    if let Ok((_, csr)) = X509CertificationRequest::from_der(csr_der)
        && let Ok(PublicKey::RSA(rsa)) = csr.certification_request_info.subject_pki.parsed()
    {
        let bits = rsa.key_size();
        if !(2048..=8192).contains(&bits) {
            let why = if bits < 2048 { "too weak" } else { "too large" };
            return Err(CaError::BadCsr(format!(
                "its key is RSA-{bits}, which is {why}: use {ACCEPTED_KEYS}"
            )));
        }
    }
    CertificateSigningRequestParams::from_der(&csr_der.into())
        .map_err(|e| CaError::BadCsr(format!("{e} (accepted keys: {ACCEPTED_KEYS})")))
}

impl Ca {
    /// Loads the CA from the store, creating it the first time.
    /// The pin of the identity CA held in `store`, without opening its key (`None`: no CA
    /// yet).
    pub async fn stored_hash(store: &Store) -> Result<Option<String>, CaError> {
        let Some(text) = store.kv_get(CaKind::Identity.kv_name()).await? else {
            return Ok(None);
        };
        let stored: StoredCa =
            serde_json::from_str(&text).map_err(|e| CaError::Damaged(e.to_string()))?;
        let der = pki::certs_from_pem(&stored.cert_pem)
            .map_err(|e| CaError::Damaged(e.to_string()))?
            .remove(0);
        let hash = pki::spki_hash(&der).map_err(|e| CaError::Damaged(e.to_string()))?;
        Ok(Some(hash))
    }

    pub async fn load_or_create(
        store: &Store,
        key: &MasterKey,
        kind: CaKind,
        now: i64,
    ) -> Result<Self, CaError> {
        let name = kind.kv_name();
        let stored = match store.kv_get(name).await? {
            Some(text) => text,
            None => {
                let fresh = Self::create(key, kind, now)?;
                store.kv_insert_if_absent(name, &fresh, now).await?
            }
        };
        let stored: StoredCa =
            serde_json::from_str(&stored).map_err(|e| CaError::Damaged(e.to_string()))?;
        let key_pem = key.open(name, &stored.key_sealed)?;
        let key_pem = String::from_utf8(key_pem).map_err(|e| CaError::Damaged(e.to_string()))?;
        let key_pair = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&stored.cert_pem, key_pair)?;
        let cert_der = pki::certs_from_pem(&stored.cert_pem)
            .map_err(|e| CaError::Damaged(e.to_string()))?
            .remove(0);
        let hash = pki::spki_hash(&cert_der).map_err(|e| CaError::Damaged(e.to_string()))?;
        Ok(Self {
            kind,
            issuer,
            cert_pem: stored.cert_pem,
            cert_der,
            hash,
        })
    }

    fn create(key: &MasterKey, kind: CaKind, now: i64) -> Result<String, CaError> {
        let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, kind.common_name());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = at(now - 3600);
        params.not_after = at(now + CA_LIFETIME.as_secs() as i64);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key_pair)?;
        let stored = StoredCa {
            cert_pem: cert.pem(),
            key_sealed: key.seal(kind.kv_name(), key_pair.serialize_pem().as_bytes()),
        };
        Ok(serde_json::to_string(&stored).expect("serialisable"))
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The pin agents give to `enroll --ca-hash`.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Issues a client certificate for `agent` for the key in `csr_der`. Only the CSR's public
    /// key is used (its signature is checked); the controller decides every name.
    pub fn issue_agent(
        &self,
        csr_der: &[u8],
        agent: &AgentId,
        lifetime: Duration,
        now: i64,
    ) -> Result<Issued, CaError> {
        let csr = parse_csr(csr_der)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, agent.as_str());
        params.subject_alt_names = vec![SanType::URI(
            agent.uri().try_into().expect("an agent URI is ASCII"),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Allow a little clock skew, less for very short test lifetimes.
        let skew = (lifetime.as_secs() / 10).min(60) as i64;
        params.not_before = at(now - skew);
        params.not_after = at(now + lifetime.as_secs() as i64);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let info = CertInfo::from_der(cert.der()).map_err(|e| CaError::Damaged(e.to_string()))?;
        Ok(Issued {
            pem: cert.pem(),
            info,
        })
    }

    /// Issues a TLS server certificate for `domains` to the key in `csr_der` (the `internal`
    /// site issuer).
    pub fn issue_site(
        &self,
        csr_der: &[u8],
        domains: &[String],
        lifetime: Duration,
        now: i64,
    ) -> Result<Issued, CaError> {
        let csr = parse_csr(csr_der)?;
        let mut params = CertificateParams::default();
        if let Some(first) = domains.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        for d in domains {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into().map_err(
                    |e: rcgen::Error| CaError::ServerName {
                        name: d.clone(),
                        detail: e.to_string(),
                    },
                )?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = at(now - 3600);
        params.not_after = at(now + lifetime.as_secs() as i64);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let info = CertInfo::from_der(cert.der()).map_err(|e| CaError::Damaged(e.to_string()))?;
        Ok(Issued {
            pem: format!("{}{}", cert.pem(), self.cert_pem),
            info,
        })
    }

    /// A fresh key and server certificate for the controller's listeners, naming `names`
    /// (DNS names or IP addresses). The chain ends with the CA so agents can pin it.
    pub fn issue_server(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse controller");
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    SanType::DnsName(name.as_str().try_into().map_err(|e: rcgen::Error| {
                        CaError::ServerName {
                            name: name.clone(),
                            detail: e.to_string(),
                        }
                    })?)
                }
            };
            params.subject_alt_names.push(san);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = at(now - 3600);
        params.not_after = at(now + SERVER_LIFETIME.as_secs() as i64);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -newkey rsa:1024`: a valid signature over a key too weak to accept.
    const RSA_1024_CSR: &str = "MIIBTjCBuAIBADAPMQ0wCwYDVQQDDAR3ZWFrMIGfMA0GCSqGSIb3DQEBAQUAA4GN\
ADCBiQKBgQDTfWJgii+ds1Bww/WV0rXNrnuMoKd54k11f7Q57fLPBCREv58yPuCx\
2WaX5pY9oCE+8XvMyDQETSNxX22d0j+lpZBtziGGs9kV+q99RMEQJNujRvU9VMc/\
Y7OifTwfPvyyE51/gzjM5cpYPWEMoqzVRe0HQMDsqi5nzLA1S4QqfQIDAQABoAAw\
DQYJKoZIhvcNAQELBQADgYEAoZT8iOyNxi0w1d39kce4MlRhZxoZEidjutYfnCLP\
2RSUIDWfRKpsis45cFmmLOILFAlluN16wXzkqTmrXURUSq2rb6oSGytCj9rGOFR8\
kddiZMuR9R2zSbz5z9qgXNLCLqM/2voDUsYFu7qmdaBnzpr7kzbPNho9u0GqQ16y\
NKk=";

    #[test]
    fn a_weak_rsa_key_is_named_as_such_not_as_a_bad_signature() {
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(RSA_1024_CSR)
            .unwrap();
        let e = parse_csr(&der).unwrap_err().to_string();
        assert!(e.contains("RSA-1024, which is too weak"), "{e}");
        assert!(e.contains("P-256"), "{e}");
        assert!(!e.contains("signature"), "{e}");
    }
    use gatehouse_agent::identity::PendingKey;

    #[tokio::test]
    async fn issues_agent_certificates_from_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db").display());
        let store = Store::open(&url).await.unwrap();
        let key = MasterKey::random();
        let ca = Ca::load_or_create(&store, &key, CaKind::Identity, 1_700_000_000)
            .await
            .unwrap();
        // The second load finds the same CA; the site CA is another one.
        let again = Ca::load_or_create(&store, &key, CaKind::Identity, 1_700_000_000)
            .await
            .unwrap();
        assert_eq!(ca.hash(), again.hash());
        let sites = Ca::load_or_create(&store, &key, CaKind::Sites, 1_700_000_000)
            .await
            .unwrap();
        assert_ne!(sites.hash(), ca.hash());
        // With another master key the sealed CA key cannot be opened.
        assert!(
            Ca::load_or_create(&store, &MasterKey::random(), CaKind::Identity, 0)
                .await
                .is_err()
        );
        // The key is not stored in the clear.
        let raw = store.kv_get("ca.identity").await.unwrap().unwrap();
        assert!(!raw.contains("PRIVATE KEY"));

        let pending = PendingKey::generate().unwrap();
        let id: AgentId = "abcdefgh01234567".parse().unwrap();
        let now = gatehouse_common::now_unix();
        let issued = ca
            .issue_agent(&pending.csr_der, &id, Duration::from_secs(3600), now)
            .unwrap();
        assert_eq!(issued.info.agent_id.as_ref(), Some(&id));
        assert_eq!(issued.info.not_after, now + 3600);
        let identity = pending.complete(&issued.pem).unwrap();
        assert_eq!(identity.agent_id, id);

        let err = ca
            .issue_agent(b"garbage", &id, Duration::from_secs(60), now)
            .unwrap_err();
        assert!(matches!(err, CaError::BadCsr(_)), "{err}");

        let site_key = PendingKey::generate_for(
            gatehouse_proto::v1::KeyType::Rsa2048,
            &["www.example.com".into()],
        )
        .unwrap();
        let issued = sites
            .issue_site(
                &site_key.csr_der,
                &["www.example.com".into(), "*.example.com".into()],
                Duration::from_secs(86400),
                now,
            )
            .unwrap();
        site_key.matches(&issued.pem).unwrap();
        assert!(
            issued.pem.ends_with(sites.cert_pem()),
            "the chain ends with the site CA"
        );
        assert_eq!(issued.info.not_after, now + 86400);
    }
}
