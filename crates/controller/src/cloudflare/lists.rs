//! Account lists: Rules Lists (their item writes are asynchronous bulk operations, polled here
//! to completion) and Gateway lists (edited by value).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Client, CloudflareError};

/// How often a bulk operation is polled, and for how long.
const POLL: Duration = Duration::from_millis(200);
const POLL_FOR: Duration = Duration::from_secs(120);

/// A Rules List or a Gateway list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountList {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// One item of a list: its id (Rules Lists only), address and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub id: String,
    pub ip: String,
    pub comment: String,
}

#[derive(Deserialize)]
struct RulesItem {
    id: String,
    ip: String,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
struct GatewayItem {
    value: String,
    #[serde(default)]
    description: String,
}

impl Client {
    fn rules_path(account: &str) -> String {
        format!("/accounts/{account}/rules/lists")
    }

    fn gateway_path(account: &str) -> String {
        format!("/accounts/{account}/gateway/lists")
    }

    /// The account's Rules Lists.
    pub async fn rules_lists(&self, account: &str) -> Result<Vec<AccountList>, CloudflareError> {
        self.lists_at(&Self::rules_path(account), "listing Rules Lists")
            .await
    }

    async fn lists_at(&self, path: &str, what: &str) -> Result<Vec<AccountList>, CloudflareError> {
        let (v, _) = self.call(reqwest::Method::GET, path, None, what).await?;
        super::typed(v, what)
    }

    /// Creates an IP Rules List (`name`: `^[a-z0-9_]+$`).
    pub async fn create_rules_list(
        &self,
        account: &str,
        name: &str,
        description: &str,
    ) -> Result<AccountList, CloudflareError> {
        self.send(
            reqwest::Method::POST,
            &Self::rules_path(account),
            &json!({"name": name, "kind": "ip", "description": description}),
            "creating a Rules List",
        )
        .await
    }

    /// Every item of a Rules List (cursor pages).
    pub async fn rules_list_items(
        &self,
        account: &str,
        list: &str,
    ) -> Result<Vec<ListItem>, CloudflareError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!(
                    "{}/{list}/items?per_page=500&cursor={c}",
                    Self::rules_path(account)
                ),
                None => format!("{}/{list}/items?per_page=500", Self::rules_path(account)),
            };
            let (v, info) = self
                .call(reqwest::Method::GET, &path, None, "reading a Rules List")
                .await?;
            let items: Vec<RulesItem> = super::typed(v, "reading a Rules List")?;
            out.extend(items.into_iter().map(|i| ListItem {
                id: i.id,
                ip: i.ip,
                comment: i.comment,
            }));
            cursor = info.and_then(|i| i.cursors).and_then(|c| c.after);
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }

    /// Adds items (ip, comment) and waits for the bulk operation to complete.
    pub async fn add_rules_list_items(
        &self,
        account: &str,
        list: &str,
        items: &[(String, String)],
    ) -> Result<(), CloudflareError> {
        let body: Vec<Value> = items
            .iter()
            .map(|(ip, comment)| json!({"ip": ip, "comment": comment}))
            .collect();
        let v: Value = self
            .send(
                reqwest::Method::POST,
                &format!("{}/{list}/items", Self::rules_path(account)),
                &Value::Array(body),
                "adding Rules List items",
            )
            .await?;
        self.wait_bulk(account, &v, "adding Rules List items").await
    }

    /// Deletes items by id and waits for the bulk operation to complete.
    pub async fn delete_rules_list_items(
        &self,
        account: &str,
        list: &str,
        ids: &[String],
    ) -> Result<(), CloudflareError> {
        let items: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        let v: Value = self
            .send(
                reqwest::Method::DELETE,
                &format!("{}/{list}/items", Self::rules_path(account)),
                &json!({ "items": items }),
                "deleting Rules List items",
            )
            .await?;
        self.wait_bulk(account, &v, "deleting Rules List items")
            .await
    }

    /// Polls a bulk operation until it completes; a failed one is Cloudflare's refusal.
    async fn wait_bulk(
        &self,
        account: &str,
        started: &Value,
        what: &str,
    ) -> Result<(), CloudflareError> {
        let Some(op) = started["operation_id"].as_str() else {
            return Err(CloudflareError::Unexpected {
                what: what.into(),
                detail: "no operation_id".into(),
            });
        };
        let deadline = tokio::time::Instant::now() + POLL_FOR;
        loop {
            let (v, _) = self
                .call(
                    reqwest::Method::GET,
                    &format!("{}/bulk_operations/{op}", Self::rules_path(account)),
                    None,
                    what,
                )
                .await?;
            match v["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed") => {
                    return Err(CloudflareError::Api {
                        what: what.into(),
                        status: 200,
                        errors: vec![super::ApiMessage {
                            code: 0,
                            message: v["error"]
                                .as_str()
                                .unwrap_or("the bulk operation failed")
                                .to_owned(),
                        }],
                    });
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(CloudflareError::Unavailable {
                        what: what.into(),
                        detail: format!(
                            "bulk operation {op} still pending after {} s",
                            POLL_FOR.as_secs()
                        ),
                    });
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The account's Gateway lists.
    pub async fn gateway_lists(&self, account: &str) -> Result<Vec<AccountList>, CloudflareError> {
        self.lists_at(&Self::gateway_path(account), "listing Gateway lists")
            .await
    }

    /// Creates an empty IP Gateway list.
    pub async fn create_gateway_list(
        &self,
        account: &str,
        name: &str,
        description: &str,
    ) -> Result<AccountList, CloudflareError> {
        self.send(
            reqwest::Method::POST,
            &Self::gateway_path(account),
            &json!({"name": name, "type": "IP", "description": description, "items": []}),
            "creating a Gateway list",
        )
        .await
    }

    /// Every item of a Gateway list (its result is an array of arrays).
    pub async fn gateway_list_items(
        &self,
        account: &str,
        list: &str,
    ) -> Result<Vec<ListItem>, CloudflareError> {
        let (v, _) = self
            .call(
                reqwest::Method::GET,
                &format!("{}/{list}/items", Self::gateway_path(account)),
                None,
                "reading a Gateway list",
            )
            .await?;
        let pages: Vec<Vec<GatewayItem>> = super::typed(v, "reading a Gateway list")?;
        Ok(pages
            .into_iter()
            .flatten()
            .map(|i| ListItem {
                id: String::new(),
                ip: i.value,
                comment: i.description,
            })
            .collect())
    }

    /// Appends (value, description) items and removes values, in one PATCH.
    pub async fn patch_gateway_list(
        &self,
        account: &str,
        list: &str,
        append: &[(String, String)],
        remove: &[String],
    ) -> Result<(), CloudflareError> {
        let append: Vec<Value> = append
            .iter()
            .map(|(v, d)| json!({"value": v, "description": d}))
            .collect();
        let _: Value = self
            .send(
                reqwest::Method::PATCH,
                &format!("{}/{list}", Self::gateway_path(account)),
                &json!({"append": append, "remove": remove}),
                "changing a Gateway list",
            )
            .await?;
        Ok(())
    }
}
