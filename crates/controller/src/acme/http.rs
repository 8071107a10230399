//! The HTTP client instant-acme talks through: reqwest (the controller's one HTTP client), with
//! timeouts, and the account's own roots for a private CA.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

/// No single ACME request may hang an order.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AcmeHttp(reqwest::Client);

impl AcmeHttp {
    /// A client trusting the system's roots, or only `roots_pem` when it is not empty.
    pub fn new(roots_pem: &str) -> Result<Self, crate::error::Error> {
        use crate::error::Error;
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if !roots_pem.trim().is_empty() {
            let certs =
                reqwest::Certificate::from_pem_bundle(roots_pem.as_bytes()).map_err(|e| {
                    Error::Invalid(format!("the CA roots are not PEM certificates: {e}"))
                })?;
            if certs.is_empty() {
                return Err(Error::Invalid(
                    "the CA roots file holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        builder
            .build()
            .map(Self)
            .map_err(|e| Error::Internal(format!("cannot build the ACME HTTP client: {e}")))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut head = http::Response::builder().status(response.status());
            if let Some(headers) = head.headers_mut() {
                *headers = response.headers().clone();
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, ()) = head.body(())?.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}
