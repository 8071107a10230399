//! The Cloudflare API client: bearer token, typed models, pagination, and retries on 429 and 5xx
//! that honour `Retry-After` with jittered backoff. Errors carry Cloudflare's codes and
//! messages. Everything that talks to Cloudflare goes through here.

pub mod accounts;
pub mod dns;
pub mod lists;
pub mod origin_ca;
pub mod tunnels;
pub mod zones;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, warn};

/// Cloudflare's public API.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";

/// How many times a request is tried before its error is returned.
const ATTEMPTS: u32 = 10;
/// The longest wait between two tries, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// One error Cloudflare reported.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiMessage {
    pub code: u64,
    pub message: String,
}

/// A Cloudflare call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudflareError {
    /// Cloudflare answered with errors.
    #[error("Cloudflare refused {what} (HTTP {status}): {}", join(.errors))]
    Api {
        what: String,
        status: u16,
        errors: Vec<ApiMessage>,
    },
    /// Cloudflare could not be reached, or kept answering 429/5xx.
    #[error("cannot reach Cloudflare for {what}: {detail}")]
    Unavailable { what: String, detail: String },
    /// The answer did not have the expected shape.
    #[error("unexpected answer from Cloudflare for {what}: {detail}")]
    Unexpected { what: String, detail: String },
}

fn join(errors: &[ApiMessage]) -> String {
    errors
        .iter()
        .map(|e| format!("{} (code {})", e.message, e.code))
        .collect::<Vec<_>>()
        .join("; ")
}

impl CloudflareError {
    /// Whether Cloudflare reported `code`.
    pub fn has_code(&self, code: u64) -> bool {
        matches!(self, CloudflareError::Api { errors, .. } if errors.iter().any(|e| e.code == code))
    }

    /// The HTTP status Cloudflare answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CloudflareError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the token itself was refused (bad, revoked, or without permission).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            CloudflareError::Api {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// An API token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token read from a file or the store.
    pub fn new(token: &str) -> Self {
        Self(token.trim().to_owned())
    }

    /// The token, to seal for storage.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// A page of results.
#[derive(Debug, Deserialize)]
struct ResultInfo {
    page: Option<u64>,
    total_pages: Option<u64>,
    /// Cursor pagination (Rules List items).
    #[serde(default)]
    cursors: Option<Cursors>,
}

#[derive(Debug, Deserialize)]
struct Cursors {
    after: Option<String>,
}

/// A client for one account's token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: ApiToken,
    /// The first wait after a 5xx or a transport error; doubled per try, jittered.
    backoff: Duration,
}

impl Client {
    /// A client for `base` (the API root, `…/client/v4`).
    pub fn new(base: &str, token: ApiToken) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            backoff: Duration::from_millis(500),
        }
    }

    /// Sets the first backoff wait (tests make it short).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks that the token is valid and active.
    pub async fn verify_token(&self) -> Result<String, CloudflareError> {
        let v: Value = self
            .call(
                reqwest::Method::GET,
                "/user/tokens/verify",
                None,
                "token verification",
            )
            .await?
            .0;
        let status = v["status"].as_str().unwrap_or_default();
        if status != "active" {
            return Err(CloudflareError::Api {
                what: "token verification".into(),
                status: 200,
                errors: vec![ApiMessage {
                    code: 1000,
                    message: format!("the token is {status}, not active"),
                }],
            });
        }
        Ok(v["id"].as_str().unwrap_or_default().to_owned())
    }

    /// One request, retried on 429, 5xx and transport errors. Returns `result` and
    /// `result_info`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<(Value, Option<ResultInfo>), CloudflareError> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.token.expose());
            if let Some(b) = body {
                request = request.json(b);
            }
            let wait = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    if status == 429 || status >= 500 {
                        last = format!("HTTP {status}");
                        let wait = retry_after.unwrap_or_else(|| self.jittered(attempt));
                        warn!(what, status, attempt, wait = ?wait, "Cloudflare is busy; retrying");
                        wait
                    } else {
                        return parse(status, &text, what);
                    }
                }
                Err(e) => {
                    last = crate::error_chain(&e);
                    debug!(what, attempt, "Cloudflare request failed: {last}");
                    self.jittered(attempt)
                }
            };
            tokio::time::sleep(wait.min(MAX_WAIT)).await;
        }
        Err(CloudflareError::Unavailable {
            what: what.to_owned(),
            detail: format!("gave up after {ATTEMPTS} tries, last: {last}"),
        })
    }

    /// Full jitter: uniform in `0..=backoff·2^attempt`, capped.
    fn jittered(&self, attempt: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1 << attempt.min(10))
            .min(MAX_WAIT);
        Duration::from_millis(gatehouse_common::random_below(ceiling.as_millis() as u64))
    }

    /// Every page of a list.
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<Vec<T>, CloudflareError> {
        let mut out = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut page = 1;
        loop {
            let (v, info) = self
                .call(
                    reqwest::Method::GET,
                    &format!("{path}{separator}page={page}&per_page=50"),
                    None,
                    what,
                )
                .await?;
            let items: Vec<T> = typed(v, what)?;
            let done = items.is_empty()
                || info
                    .as_ref()
                    .and_then(|i| Some(i.page? >= i.total_pages?))
                    .unwrap_or(true);
            out.extend(items);
            if done {
                return Ok(out);
            }
            page += 1;
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<T, CloudflareError> {
        let (v, _) = self.call(method, path, Some(body), what).await?;
        typed(v, what)
    }
}

pub(super) fn typed<T: DeserializeOwned>(v: Value, what: &str) -> Result<T, CloudflareError> {
    serde_json::from_value(v).map_err(|e| CloudflareError::Unexpected {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

fn parse(
    status: u16,
    text: &str,
    what: &str,
) -> Result<(Value, Option<ResultInfo>), CloudflareError> {
    let body: Value = serde_json::from_str(text).map_err(|e| CloudflareError::Unexpected {
        what: what.to_owned(),
        detail: format!(
            "HTTP {status}, not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })?;
    if body["success"] == Value::Bool(true) && (200..300).contains(&status) {
        let info = serde_json::from_value(body["result_info"].clone()).ok();
        return Ok((body["result"].clone(), info));
    }
    let errors: Vec<ApiMessage> =
        serde_json::from_value(body["errors"].clone()).unwrap_or_default();
    Err(CloudflareError::Api {
        what: what.to_owned(),
        status,
        errors,
    })
}

/// Cloudflare's refusal, saying what to do about it.
impl From<CloudflareError> for crate::error::Error {
    fn from(e: CloudflareError) -> Self {
        match &e {
            CloudflareError::Api { .. } if e.is_auth() => crate::error::Error::Precondition(
                format!("{e}: check the account's token (gatehousectl cloudflare account add)"),
            ),
            CloudflareError::Api { .. } => crate::error::Error::Precondition(e.to_string()),
            CloudflareError::Unavailable { .. } => crate::error::Error::Unavailable(e.to_string()),
            CloudflareError::Unexpected { .. } => crate::error::Error::Internal(e.to_string()),
        }
    }
}
