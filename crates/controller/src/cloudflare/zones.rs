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
