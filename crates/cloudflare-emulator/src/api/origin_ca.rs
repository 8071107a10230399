//! The Origin CA: certificates for CSRs, listed, fetched and revoked.

#![allow(clippy::result_large_err)]

use super::*;

/// The Origin CA: signs CSRs for hostnames.
pub(crate) struct OriginCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

impl OriginCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Emulated Cloudflare Origin CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }
}

impl std::fmt::Debug for OriginCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginCa")
    }
}

const VALIDITIES: [u32; 7] = [7, 30, 90, 365, 730, 1095, 5475];

pub(super) fn certificate_json(c: &OriginCertificate) -> Value {
    serde_json::to_value(c).unwrap()
}

pub(super) async fn create_certificate(AxumState(app): AxumState<App>, req: Request) -> Reply {
    let body = json_body(req).await?;
    let csr = body
        .get("csr")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(1010, "csr is required"))?;
    let hostnames: Vec<String> = body
        .get("hostnames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if hostnames.is_empty() {
        return Err(bad_request(1012, "hostnames are required"));
    }
    let request_type = body
        .get("request_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if request_type != "origin-rsa" && request_type != "origin-ecc" {
        return Err(bad_request(
            1013,
            "request_type must be origin-rsa or origin-ecc",
        ));
    }
    let validity = body
        .get("requested_validity")
        .and_then(Value::as_u64)
        .map(|v| v as u32)
        .unwrap_or(5475);
    if !VALIDITIES.contains(&validity) {
        return Err(bad_request(
            1014,
            "requested_validity must be one of 7, 30, 90, 365, 730, 1095, 5475",
        ));
    }
    let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr)
        .map_err(|e| bad_request(1010, &format!("Failed to validate the CSR: {e}")))?;
    let alg = parsed.public_key.algorithm();
    let ecc = alg == &rcgen::PKCS_ECDSA_P256_SHA256 || alg == &rcgen::PKCS_ECDSA_P384_SHA384;
    if ecc != (request_type == "origin-ecc") {
        return Err(bad_request(
            1010,
            "The CSR key type does not match request_type",
        ));
    }
    let mut params = rcgen::CertificateParams::new(hostnames.clone())
        .map_err(|e| bad_request(1012, &format!("Invalid hostname: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "CloudFlare Origin Certificate");
    let now = std::time::SystemTime::now();
    let not_after = now + std::time::Duration::from_secs(u64::from(validity) * 86400);
    params.not_before = time::OffsetDateTime::from(now - std::time::Duration::from_secs(3600));
    params.not_after = time::OffsetDateTime::from(not_after);
    let mut serial = [0u8; 20];
    aws_lc_rs::rand::fill(&mut serial).unwrap();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params
        .signed_by(&parsed.public_key, &app.ca.issuer)
        .map_err(|e| bad_request(1010, &format!("Failed to sign: {e}")))?;
    let id = num_id(&serial);
    let record = OriginCertificate {
        id,
        certificate: cert.pem(),
        csr: csr.to_owned(),
        hostnames,
        expires_on: humantime::format_rfc3339_seconds(not_after).to_string(),
        request_type,
        requested_validity: validity,
        revoked_at: None,
    };
    app.state.lock().unwrap().certificates.push(record.clone());
    ok(certificate_json(&record))
}

pub(super) fn num_id(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut acc, b| {
        acc.push_str(&format!("{b:03}"));
        acc
    })
}

pub(super) async fn list_certificates(
    AxumState(app): AxumState<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let Some(zone_id) = q.get("zone_id") else {
        return Err(bad_request(1001, "zone_id is required"));
    };
    let s = app.state.lock().unwrap();
    let Some(zone) = s.zones.iter().find(|z| &z.id == zone_id) else {
        return Err(bad_request(1001, "Invalid zone_id"));
    };
    let certs: Vec<Value> = s
        .certificates
        .iter()
        .filter(|c| c.revoked_at.is_none())
        .filter(|c| {
            c.hostnames
                .iter()
                .any(|h| h == &zone.name || h.ends_with(&format!(".{}", zone.name)))
        })
        .map(certificate_json)
        .collect();
    drop(s);
    paginate(certs, &q, 20, 5, 50)
}

pub(super) async fn get_certificate(
    AxumState(app): AxumState<App>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    let s = app.state.lock().unwrap();
    let c = s
        .certificates
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found(req.uri().path()))?;
    ok(certificate_json(c))
}

pub(super) async fn revoke_certificate(
    AxumState(app): AxumState<App>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    let mut s = app.state.lock().unwrap();
    let c = s
        .certificates
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found(req.uri().path()))?;
    let at = c.revoked_at.get_or_insert_with(now_rfc3339).clone();
    ok(json!({"id": id, "revoked_at": at}))
}
