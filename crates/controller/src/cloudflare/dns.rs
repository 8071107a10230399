//! DNS records.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Client, CloudflareError};

/// A DNS record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    #[serde(default)]
    pub proxied: bool,
    #[serde(default)]
    pub ttl: u32,
    #[serde(default)]
    pub comment: Option<String>,
}

/// What to create or overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub kind: String,
    pub name: String,
    pub content: String,
    pub proxied: bool,
    /// 1 means automatic.
    pub ttl: u32,
    pub comment: Option<String>,
}

impl NewRecord {
    fn body(&self) -> serde_json::Value {
        let mut b = json!({
            "type": self.kind, "name": self.name, "content": self.content,
            "proxied": self.proxied, "ttl": self.ttl,
        });
        if let Some(c) = &self.comment {
            b["comment"] = json!(c);
        }
        b
    }
}

impl Client {
    /// Records of a zone named `name` (every type when `kind` is `None`).
    pub async fn records_named(
        &self,
        zone_id: &str,
        name: &str,
        kind: Option<&str>,
    ) -> Result<Vec<DnsRecord>, CloudflareError> {
        let mut path = format!("/zones/{zone_id}/dns_records?name={name}");
        if let Some(k) = kind {
            path.push_str(&format!("&type={k}"));
        }
        self.list(&path, "listing DNS records").await
    }

    /// Every record of a zone.
    pub async fn records(&self, zone_id: &str) -> Result<Vec<DnsRecord>, CloudflareError> {
        self.list(
            &format!("/zones/{zone_id}/dns_records"),
            "listing DNS records",
        )
        .await
    }

    /// Creates a record.
    pub async fn create_record(
        &self,
        zone_id: &str,
        record: &NewRecord,
    ) -> Result<DnsRecord, CloudflareError> {
        self.send(
            reqwest::Method::POST,
            &format!("/zones/{zone_id}/dns_records"),
            &record.body(),
            &format!("creating the {} record {}", record.kind, record.name),
        )
        .await
    }

    /// Overwrites a record.
    pub async fn update_record(
        &self,
        zone_id: &str,
        id: &str,
        record: &NewRecord,
    ) -> Result<DnsRecord, CloudflareError> {
        self.send(
            reqwest::Method::PUT,
            &format!("/zones/{zone_id}/dns_records/{id}"),
            &record.body(),
            &format!("updating the {} record {}", record.kind, record.name),
        )
        .await
    }

    /// Deletes a record; a record that is already gone counts as deleted.
    pub async fn delete_record(&self, zone_id: &str, id: &str) -> Result<(), CloudflareError> {
        let result: Result<serde_json::Value, _> = self
            .send(
                reqwest::Method::DELETE,
                &format!("/zones/{zone_id}/dns_records/{id}"),
                &json!({}),
                "deleting a DNS record",
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.has_code(81044) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
