//! Cloudflare Tunnels (remotely managed, `config_src: "cloudflare"`): create, find by name, get
//! with connections, the token, the whole ingress configuration, a new secret, connections
//! dropped, delete. A tunnel's token is a secret: it is returned, never logged.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Client, CloudflareError};

/// A tunnel as Cloudflare shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tunnel {
    pub id: String,
    pub name: String,
    /// `inactive`, `degraded`, `healthy` or `down`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub connections: Vec<TunnelConnection>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
}

/// One edge connection of a connector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TunnelConnection {
    pub id: String,
    /// The connector (one cloudflared process).
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_version: String,
    #[serde(default)]
    pub colo_name: String,
    #[serde(default)]
    pub opened_at: String,
}

/// A created tunnel and the token its connector runs with.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedTunnel {
    pub id: String,
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for CreatedTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTunnel")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &"***")
            .finish()
    }
}

/// Per-rule origin options, as cloudflared names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginRequest {
    #[serde(
        rename = "noTLSVerify",
        skip_serializing_if = "std::ops::Not::not",
        default
    )]
    pub no_tls_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub http_host_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin_server_name: Option<String>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connect_timeout: Option<u64>,
}

/// One ingress rule; the catch-all has no hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hostname: Option<String>,
    pub service: String,
    #[serde(default)]
    pub origin_request: OriginRequest,
}

/// The secret inside a tunnel token (base64 of JSON `{"a", "t", "s"}`), as base64 text.
pub fn token_secret(token: &str) -> Option<String> {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let v: Value = serde_json::from_slice(&json).ok()?;
    v["s"].as_str().map(str::to_owned)
}

impl Client {
    fn tunnels_path(account: &str) -> String {
        format!("/accounts/{account}/cfd_tunnel")
    }

    /// Creates a remotely managed tunnel with the given secret (base64 of at least 32 bytes);
    /// a name in use answers HTTP 409 (code 1013).
    pub async fn create_tunnel(
        &self,
        account: &str,
        name: &str,
        secret_b64: &str,
    ) -> Result<CreatedTunnel, CloudflareError> {
        self.send(
            reqwest::Method::POST,
            &Self::tunnels_path(account),
            &json!({"name": name, "config_src": "cloudflare", "tunnel_secret": secret_b64}),
            "creating a tunnel",
        )
        .await
    }

    /// The live tunnel named `name`, if any.
    pub async fn tunnel_by_name(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Option<Tunnel>, CloudflareError> {
        let found: Vec<Tunnel> = self
            .list(
                &format!(
                    "{}?name={name}&is_deleted=false",
                    Self::tunnels_path(account)
                ),
                "looking up a tunnel",
            )
            .await?;
        Ok(found.into_iter().find(|t| t.name == name))
    }

    /// A tunnel with its connections.
    pub async fn tunnel(&self, account: &str, id: &str) -> Result<Tunnel, CloudflareError> {
        let (v, _) = self
            .call(
                reqwest::Method::GET,
                &format!("{}/{id}", Self::tunnels_path(account)),
                None,
                "reading a tunnel",
            )
            .await?;
        super::typed(v, "reading a tunnel")
    }

    /// The token a connector runs the tunnel with.
    pub async fn tunnel_token(&self, account: &str, id: &str) -> Result<String, CloudflareError> {
        let (v, _) = self
            .call(
                reqwest::Method::GET,
                &format!("{}/{id}/token", Self::tunnels_path(account)),
                None,
                "reading a tunnel token",
            )
            .await?;
        super::typed(v, "reading a tunnel token")
    }

    /// Replaces the tunnel's whole ingress configuration; returns its version.
    pub async fn put_tunnel_configuration(
        &self,
        account: &str,
        id: &str,
        ingress: &[IngressRule],
    ) -> Result<u64, CloudflareError> {
        let v: Value = self
            .send(
                reqwest::Method::PUT,
                &format!("{}/{id}/configurations", Self::tunnels_path(account)),
                &json!({"config": {"ingress": ingress}}),
                "configuring a tunnel",
            )
            .await?;
        Ok(v["version"].as_u64().unwrap_or_default())
    }

    /// Gives the tunnel a new secret (base64 of at least 32 bytes); returns the new token. The
    /// old token opens no new connections.
    pub async fn rotate_tunnel_secret(
        &self,
        account: &str,
        id: &str,
        secret_b64: &str,
    ) -> Result<String, CloudflareError> {
        let v: Value = self
            .send(
                reqwest::Method::PATCH,
                &format!("{}/{id}", Self::tunnels_path(account)),
                &json!({"tunnel_secret": secret_b64}),
                "rotating a tunnel secret",
            )
            .await?;
        match v["token"].as_str() {
            Some(token) => Ok(token.to_owned()),
            None => self.tunnel_token(account, id).await,
        }
    }

    /// Drops every connection of the tunnel (its connectors must be stopped first).
    pub async fn delete_tunnel_connections(
        &self,
        account: &str,
        id: &str,
    ) -> Result<(), CloudflareError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("{}/{id}/connections", Self::tunnels_path(account)),
            None,
            "dropping tunnel connections",
        )
        .await
        .map(|_| ())
    }

    /// Deletes the tunnel; one already gone counts as deleted. Refused (code 1022) while it
    /// has active connections.
    pub async fn delete_tunnel(&self, account: &str, id: &str) -> Result<(), CloudflareError> {
        match self
            .call(
                reqwest::Method::DELETE,
                &format!("{}/{id}", Self::tunnels_path(account)),
                None,
                "deleting a tunnel",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(CloudflareError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
