//! Zones.

use serde::Deserialize;

use super::{Client, CloudflareError};

/// A zone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub status: String,
    /// Cloudflare's authoritative servers for the zone.
    #[serde(default)]
    pub name_servers: Vec<String>,
    /// The account that holds the zone (where its tunnels are made).
    #[serde(default)]
    pub account: ZoneAccount,
}

/// A zone's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ZoneAccount {
    #[serde(default)]
    pub id: String,
}

impl Client {
    /// Every zone the token can see.
    pub async fn zones(&self) -> Result<Vec<Zone>, CloudflareError> {
        self.list("/zones", "listing zones").await
    }

    /// The zone named `name`.
    pub async fn zone_by_name(&self, name: &str) -> Result<Option<Zone>, CloudflareError> {
        let zones: Vec<Zone> = self
            .list(&format!("/zones?name={name}"), "looking up a zone")
            .await?;
        Ok(zones.into_iter().find(|z| z.name == name))
    }
}
