//! ACME accounts: created once at the CA (with External Account Binding where the CA wants
//! it), stored with their key sealed, and loaded for each order.

use base64::Engine;
use gatehouse_proto::names::ResourceName;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use tracing::info;

use super::http::AcmeHttp;
use crate::Shared;
use crate::error::Error;
use crate::store::AcmeAccountRow;

/// The CAs known by name, their directories, and whether they need EAB.
const PRESETS: &[(&str, &str, bool)] = &[
    (
        "letsencrypt",
        "https://acme-v02.api.letsencrypt.org/directory",
        false,
    ),
    (
        "letsencrypt-staging",
        "https://acme-staging-v02.api.letsencrypt.org/directory",
        false,
    ),
    ("google", "https://dv.acme-v02.api.pki.goog/directory", true),
    ("zerossl", "https://acme.zerossl.com/v2/DV90", true),
];

/// The directory URL for `ca` (a preset name or an https URL) and whether EAB is required.
pub fn directory(ca: &str) -> Result<(String, bool), Error> {
    if let Some((_, url, eab)) = PRESETS.iter().find(|(name, _, _)| *name == ca) {
        return Ok(((*url).to_owned(), *eab));
    }
    let url = reqwest::Url::parse(ca).map_err(|_| {
        Error::Invalid(format!(
            "ca: {ca:?} is neither a known CA ({}) nor a directory URL",
            PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        ))
    })?;
    // Plain http only for a CA on this machine (a local test CA).
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(Error::Invalid(format!(
            "ca: {ca:?}: an ACME directory must be an https URL"
        )));
    }
    Ok((ca.to_owned(), false))
}

/// External Account Binding input: the key id and the HMAC key as the CA shows it (base64url).
#[derive(Clone)]
pub struct Eab {
    pub kid: String,
    pub hmac: String,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .field("hmac", &"***")
            .finish()
    }
}

/// Decodes an EAB HMAC key: base64url as CAs print it, with or without padding.
pub fn decode_hmac(text: &str) -> Result<Vec<u8>, Error> {
    let text = text.trim().trim_end_matches('=');
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| {
            Error::Invalid(format!(
                "eab_hmac: not base64url ({e}); paste it as the CA shows it"
            ))
        })?;
    if key.len() < 16 {
        return Err(Error::Invalid(format!(
            "eab_hmac: {} bytes once decoded; an EAB HMAC key is at least 16",
            key.len()
        )));
    }
    Ok(key)
}

/// What `acme account create` asks for.
#[derive(Debug, Clone)]
pub struct NewAccountInput {
    pub name: String,
    pub ca: String,
    pub email: String,
    pub agree_tos: bool,
    pub eab: Option<Eab>,
    /// PEM roots for a private CA's API; empty for the system's.
    pub ca_roots: String,
}

fn sealed_name(account: &str) -> String {
    format!("acme.account.{account}")
}

fn sealed_eab_name(account: &str) -> String {
    format!("acme.account.{account}.eab")
}

/// Registers the account at the CA and stores it.
pub async fn create(shared: &Shared, input: NewAccountInput) -> Result<AcmeAccountRow, Error> {
    let bad = Error::Invalid;
    let name: ResourceName = input
        .name
        .parse()
        .map_err(|e: gatehouse_proto::names::NameError| bad(format!("name: {e}")))?;
    if !input.agree_tos {
        return Err(bad(
            "agree_tos: the CA's terms of service must be accepted (--agree-tos)".into(),
        ));
    }
    let email = input.email.trim();
    if !email.is_empty() && (!email.contains('@') || email.contains(char::is_whitespace)) {
        return Err(bad(format!("email: {email:?} is not an email address")));
    }
    let (directory_url, needs_eab) = directory(&input.ca)?;
    let eab_key = match &input.eab {
        Some(eab) if eab.kid.trim().is_empty() => {
            return Err(bad("eab_kid: empty".into()));
        }
        Some(eab) => Some((eab.kid.trim().to_owned(), decode_hmac(&eab.hmac)?)),
        None if needs_eab => {
            return Err(bad(format!(
                "{} requires External Account Binding: give --eab-kid and --eab-hmac-file",
                input.ca
            )));
        }
        None => None,
    };
    if shared.store.acme_account(name.as_str()).await?.is_some() {
        return Err(Error::Exists(format!(
            "an ACME account named {name} exists"
        )));
    }
    let http = AcmeHttp::new(&input.ca_roots)?;
    let contact = (!email.is_empty()).then(|| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let external = eab_key
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let (_, credentials) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.clone(),
            external.as_ref(),
        )
        .await
        .map_err(|e| refused(&e, eab_key.is_some()))?;
    let credentials = serde_json::to_vec(&credentials).expect("credentials serialise");
    let row = AcmeAccountRow {
        name: name.to_string(),
        directory_url,
        email: email.to_owned(),
        credentials_sealed: shared
            .master_key
            .seal(&sealed_name(name.as_str()), &credentials),
        eab_kid: eab_key
            .as_ref()
            .map(|(kid, _)| kid.clone())
            .unwrap_or_default(),
        eab_hmac_sealed: eab_key
            .as_ref()
            .map(|(_, key)| shared.master_key.seal(&sealed_eab_name(name.as_str()), key))
            .unwrap_or_default(),
        ca_roots: input.ca_roots,
        created_at: shared.now(),
    };
    shared.store.acme_account_insert(&row).await?;
    info!(account = %row.name, directory = %row.directory_url, "ACME account created");
    Ok(row)
}

/// A clear message for a CA that refused to create the account.
fn refused(e: &instant_acme::Error, with_eab: bool) -> Error {
    let detail = super::describe(e);
    match e {
        instant_acme::Error::Api(problem) => {
            let kind = problem.r#type.as_deref().unwrap_or_default();
            if kind.ends_with(":externalAccountRequired") {
                Error::Precondition(format!(
                    "the CA requires External Account Binding: give --eab-kid and \
                     --eab-hmac-file ({detail})"
                ))
            } else if with_eab && (kind.ends_with(":unauthorized") || kind.ends_with(":malformed"))
            {
                Error::Precondition(format!(
                    "the CA refused the External Account Binding: check --eab-kid and the HMAC \
                     key in --eab-hmac-file ({detail})"
                ))
            } else {
                Error::Precondition(format!("the CA refused the account: {detail}"))
            }
        }
        _ => Error::Unavailable(format!("cannot reach the ACME CA: {detail}")),
    }
}

/// Loads a stored account, ready for orders.
pub async fn load(shared: &Shared, name: &str) -> Result<Account, Error> {
    let row = shared.store.acme_account(name).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "no ACME account {name:?}: create it with gatehousectl acme account create"
        ))
    })?;
    let plain = shared
        .master_key
        .open(&sealed_name(name), &row.credentials_sealed)
        .map_err(|e| Error::Internal(format!("ACME account {name}: {e}")))?;
    let credentials: AccountCredentials = serde_json::from_slice(&plain).map_err(|e| {
        Error::Internal(format!(
            "ACME account {name}: stored credentials are damaged: {e}"
        ))
    })?;
    let http = AcmeHttp::new(&row.ca_roots)
        .map_err(|e| e.reworded(|m| format!("ACME account {name}: {m}")))?;
    Account::builder_with_http(Box::new(http))
        .from_credentials(credentials)
        .await
        .map_err(|e| Error::Unavailable(format!("ACME account {name}: {}", super::describe(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_urls() {
        assert_eq!(
            directory("letsencrypt").unwrap(),
            (
                "https://acme-v02.api.letsencrypt.org/directory".to_owned(),
                false
            )
        );
        assert!(directory("zerossl").unwrap().1);
        assert!(directory("google").unwrap().1);
        assert_eq!(
            directory("https://ca.example/dir").unwrap().0,
            "https://ca.example/dir"
        );
        assert!(
            directory("http://ca.example/dir")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        assert!(
            directory("http://127.0.0.1:14000/dir").is_ok(),
            "a local test CA"
        );
        assert!(
            directory("lets-encrypt")
                .unwrap_err()
                .to_string()
                .contains("letsencrypt")
        );
    }

    #[test]
    fn hmac_keys_are_base64url() {
        // 32 bytes, as ZeroSSL and Google print them: base64url without padding.
        let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
        assert_eq!(decode_hmac(key).unwrap().len(), 48);
        assert_eq!(decode_hmac(&format!(" {key}\n")).unwrap().len(), 48);
        assert!(
            decode_hmac("not base64!")
                .unwrap_err()
                .to_string()
                .contains("base64url")
        );
        assert!(
            decode_hmac("c2hvcnQ")
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );
        let debug = format!(
            "{:?}",
            Eab {
                kid: "kid-1".into(),
                hmac: key.into()
            }
        );
        assert!(!debug.contains(key), "{debug}");
    }
}
