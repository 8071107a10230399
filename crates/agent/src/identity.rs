//! The agent's identity: a P-256 key generated on this host, its certificate from the controller
//! CA, and the enrollment record. Stored in one 0600 PEM file replaced atomically, so the key
//! and certificate always match. The agent never deletes its identity on an auth failure.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_proto::names::AgentId;
use rustls::ClientConfig;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::host::files::{self, FileError};
use crate::pki::{self, CertInfo};
use crate::transport::{self, ControllerUrl, TransportError};

/// The TLS directory: others may pass through to the site certificates below it (owned by
/// Caddy's user) but not list it; the identity file itself is 0600.
pub const TLS_DIR_MODE: u32 = 0o711;

/// The identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("this host is not enrolled ({path} is missing): run `gatehouse-agent enroll` first")]
    NotEnrolled { path: PathBuf },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("cannot create a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Who the agent is and where its controller is (`enrollment.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrollment {
    pub agent_id: String,
    pub controller: String,
    pub ca_hash: String,
    pub enrolled_at: i64,
}

/// A certificate chain and its private key. `Debug` hides the key.
#[derive(Clone)]
pub struct Identity {
    pub chain_pem: String,
    key_pem: String,
    pub info: CertInfo,
    pub agent_id: AgentId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.agent_id)
            .field("serial", &self.info.serial)
            .field("not_after", &self.info.not_after)
            .field("key", &"***")
            .finish()
    }
}

/// A freshly generated key and the CSR for it.
pub struct PendingKey {
    key_pem: String,
    /// PKCS#10, DER.
    pub csr_der: Vec<u8>,
    public_key_der: Vec<u8>,
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingKey(***)")
    }
}

impl PendingKey {
    /// Generates a P-256 key on this host and a CSR for it.
    pub fn generate() -> Result<Self, IdentityError> {
        Self::generate_for(gatehouse_proto::v1::KeyType::P256, &[])
    }

    /// Generates a key of `key_type` on this host and a CSR naming `domains`.
    pub fn generate_for(
        key_type: gatehouse_proto::v1::KeyType,
        domains: &[String],
    ) -> Result<Self, IdentityError> {
        let key = match key_type {
            gatehouse_proto::v1::KeyType::P256 => {
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?
            }
            gatehouse_proto::v1::KeyType::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
            }
        };
        let csr = rcgen::CertificateParams::new(domains.to_vec())?.serialize_request(&key)?;
        Ok(Self {
            key_pem: key.serialize_pem(),
            csr_der: csr.der().to_vec(),
            public_key_der: rcgen::PublicKeyData::subject_public_key_info(&key),
        })
    }

    /// A key and CSR made earlier on this host (kept 0600 while their certificate is awaited).
    pub fn restore(key_pem: &str, csr_der: Vec<u8>) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::from_pem(key_pem)?;
        Ok(Self {
            key_pem: key_pem.to_owned(),
            csr_der,
            public_key_der: rcgen::PublicKeyData::subject_public_key_info(&key),
        })
    }

    /// The private key, PEM (to be written 0600, never sent).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Checks that the first certificate of `chain_pem` is for this key.
    pub fn matches(&self, chain_pem: &str) -> Result<(), String> {
        let chain = pki::certs_from_pem(chain_pem).map_err(|e| e.to_string())?;
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|e| format!("malformed certificate: {e}"))?;
        if cert.tbs_certificate.subject_pki.raw != self.public_key_der.as_slice() {
            return Err("the certificate is not for the key this host generated".into());
        }
        Ok(())
    }

    /// Pairs the key with the certificate the controller issued for it, after checking that the
    /// certificate is for this key and names an agent.
    pub fn complete(self, chain_pem: &str) -> Result<Identity, String> {
        self.matches(chain_pem)?;
        let chain = pki::certs_from_pem(chain_pem).map_err(|e| e.to_string())?;
        let info = CertInfo::from_der(&chain[0]).map_err(|e| e.to_string())?;
        let agent_id = info
            .agent_id
            .clone()
            .ok_or("the certificate names no agent (no spiffe://gatehouse/agent/ URI)")?;
        Ok(Identity {
            chain_pem: chain_pem.to_owned(),
            key_pem: self.key_pem,
            info,
            agent_id,
        })
    }
}

impl Identity {
    /// Loads the stored identity.
    pub fn load(paths: &Paths) -> Result<Self, IdentityError> {
        let path = paths.identity();
        let text = read_enrolled(&path)?;
        let damaged = |detail: String| IdentityError::Damaged {
            path: path.clone(),
            detail,
        };
        let certs = pki::certs_from_pem(&text).map_err(|e| damaged(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| damaged(format!("no private key: {e}")))?;
        let info = CertInfo::from_der(&certs[0]).map_err(|e| damaged(e.to_string()))?;
        let agent_id = info
            .agent_id
            .clone()
            .ok_or_else(|| damaged("the certificate names no agent".into()))?;
        let chain_pem = certs
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect::<String>();
        let key_pem = match key {
            PrivateKeyDer::Pkcs8(k) => pem_block("PRIVATE KEY", k.secret_pkcs8_der()),
            _ => return Err(damaged("the private key is not PKCS#8".into())),
        };
        Ok(Self {
            chain_pem,
            key_pem,
            info,
            agent_id,
        })
    }

    /// Stores this identity (key and chain in one 0600 file, atomically).
    pub fn save(&self, paths: &Paths) -> Result<(), IdentityError> {
        files::ensure_dir(&paths.tls_dir, TLS_DIR_MODE)?;
        let text = format!("{}{}", self.chain_pem, self.key_pem);
        files::write_atomic(&paths.identity(), text.as_bytes(), 0o600, None)?;
        Ok(())
    }

    /// TLS that presents this identity and trusts `ca_pem`.
    pub fn client_config(&self, ca_pem: &str) -> Result<Arc<ClientConfig>, IdentityError> {
        let chain = pki::certs_from_pem(&self.chain_pem).map_err(TransportError::from)?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| {
            IdentityError::Damaged {
                path: PathBuf::from("(identity in memory)"),
                detail: e.to_string(),
            }
        })?;
        Ok(transport::client_config_with_identity(ca_pem, chain, key)?)
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Enrollment {
    /// Reads `enrollment.json`.
    pub fn load(paths: &Paths) -> Result<Self, IdentityError> {
        let path = paths.enrollment();
        let text = read_enrolled(&path)?;
        serde_json::from_str(&text).map_err(|e| IdentityError::Damaged {
            path,
            detail: e.to_string(),
        })
    }

    /// Writes `enrollment.json`.
    pub fn save(&self, paths: &Paths) -> Result<(), IdentityError> {
        files::ensure_dir(&paths.state_dir, 0o700)?;
        let text = serde_json::to_vec_pretty(self).expect("serialisable");
        files::write_atomic(&paths.enrollment(), &text, 0o600, None)?;
        Ok(())
    }

    /// The controller address saved at enrollment.
    pub fn controller_url(&self) -> Result<ControllerUrl, String> {
        ControllerUrl::parse(&self.controller, crate::config::DEFAULT_AGENT_PORT)
    }
}

/// Reads the pinned controller CA.
pub fn load_controller_ca(paths: &Paths) -> Result<String, IdentityError> {
    read_enrolled(&paths.controller_ca())
}

/// Reads a file that enrollment writes; a missing one means the host is not enrolled.
fn read_enrolled(path: &std::path::Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            IdentityError::NotEnrolled {
                path: path.to_owned(),
            }
        } else {
            FileError {
                action: "cannot read",
                path: path.to_owned(),
                source,
            }
            .into()
        }
    })
}
