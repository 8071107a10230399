//! Cloudflare Origin CA certificates, for hosts behind proxied records.

use serde::Deserialize;
use serde_json::json;

use super::{Client, CloudflareError};

/// An Origin CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OriginCertificate {
    pub id: String,
    pub certificate: String,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub expires_on: String,
}

/// Validities Cloudflare offers, in days.
pub const VALIDITIES: [u32; 7] = [7, 30, 90, 365, 730, 1095, 5475];

impl Client {
    /// Signs the host's P-256 CSR (`origin-ecc`) for `hostnames`. Error 1100 is transient at
    /// Cloudflare and is retried here.
    pub async fn create_origin_certificate(
        &self,
        csr_pem: &str,
        hostnames: &[String],
        validity_days: u32,
    ) -> Result<OriginCertificate, CloudflareError> {
        let body = json!({
            "csr": csr_pem, "hostnames": hostnames,
            "request_type": "origin-ecc", "requested_validity": validity_days,
        });
        let mut tries = 0;
        loop {
            match self
                .send(
                    reqwest::Method::POST,
                    "/certificates",
                    &body,
                    "creating an Origin CA certificate",
                )
                .await
            {
                Err(e) if e.has_code(1100) && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(1 << tries)).await;
                }
                other => return other,
            }
        }
    }

    /// Revokes an Origin CA certificate; one already revoked or gone counts as revoked.
    pub async fn revoke_origin_certificate(&self, id: &str) -> Result<(), CloudflareError> {
        let result: Result<serde_json::Value, _> = self
            .send(
                reqwest::Method::DELETE,
                &format!("/certificates/{id}"),
                &json!({}),
                "revoking an Origin CA certificate",
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(CloudflareError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A DER CSR as PEM, as the Origin CA API takes it.
pub fn csr_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}
