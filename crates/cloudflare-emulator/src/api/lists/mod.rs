//! Account lists: Rules Lists (WAF `ip.src in $name`), whose item writes are asynchronous bulk
//! operations (one pending per account; another write meanwhile gets HTTP 429; deletes by item
//! id; IPv6 only as a CIDR from /4 to /64), and Gateway lists (Access), edited by value with
//! PATCH `{append, remove}`. Shapes as in `shared/cloudflare/` (README, lists section).

mod gateway;
mod rules;

use std::time::{Duration, Instant};

use crate::{now_rfc3339, random_hex};
pub(super) use gateway::*;
pub(super) use rules::*;

/// A Rules List.
#[derive(Debug, Clone)]
pub struct RulesList {
    pub id: String,
    pub name: String,
    pub description: String,
    pub items: Vec<RulesItem>,
    pub created_on: String,
    pub modified_on: String,
}

/// One item of a Rules List.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesItem {
    pub id: String,
    pub ip: String,
    pub comment: String,
    pub created_on: String,
}

/// A Gateway list.
#[derive(Debug, Clone)]
pub struct GatewayList {
    pub id: String,
    pub name: String,
    pub description: String,
    pub items: Vec<GatewayItem>,
    pub created_at: String,
    pub updated_at: String,
}

/// One item of a Gateway list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayItem {
    pub value: String,
    pub description: String,
    pub created_at: String,
}

/// What a bulk operation does once it runs.
#[derive(Debug, Clone)]
pub(crate) enum BulkChange {
    Add(Vec<(String, String)>),
    Replace(Vec<(String, String)>),
    Delete(Vec<String>),
}

/// An asynchronous Rules List write.
#[derive(Debug, Clone)]
pub(crate) struct BulkOp {
    pub id: String,
    pub list_id: String,
    pub change: Option<BulkChange>,
    pub ready_at: Instant,
    pub status: &'static str,
    pub error: Option<String>,
    pub completed: Option<String>,
}

/// Lists state and limits.
#[derive(Debug)]
pub(crate) struct Lists {
    pub rules: Vec<RulesList>,
    pub gateway: Vec<GatewayList>,
    pub ops: Vec<BulkOp>,
    /// How long a bulk operation stays pending.
    pub bulk_delay: Duration,
    /// Rules List items across all lists of the account (Enterprise: 500,000).
    pub rules_item_limit: usize,
    /// Gateway list entries per list.
    pub gateway_item_limit: usize,
}

impl Default for Lists {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            gateway: Vec::new(),
            ops: Vec::new(),
            bulk_delay: Duration::from_millis(100),
            rules_item_limit: 10_000,
            gateway_item_limit: 1_000,
        }
    }
}

impl Lists {
    /// Runs the bulk operations whose time has come.
    pub(crate) fn settle(&mut self) {
        let now = Instant::now();
        for i in 0..self.ops.len() {
            if self.ops[i].status != "pending" || self.ops[i].ready_at > now {
                continue;
            }
            let change = self.ops[i].change.take();
            let list_id = self.ops[i].list_id.clone();
            let result = match change {
                Some(c) => self.run(&list_id, c),
                None => Ok(()),
            };
            let op = &mut self.ops[i];
            op.completed = Some(now_rfc3339());
            match result {
                Ok(()) => op.status = "completed",
                Err(e) => {
                    op.status = "failed";
                    op.error = Some(e);
                }
            }
        }
    }

    fn run(&mut self, list_id: &str, change: BulkChange) -> Result<(), String> {
        let total: usize = self.rules.iter().map(|l| l.items.len()).sum();
        let limit = self.rules_item_limit;
        let list = self
            .rules
            .iter_mut()
            .find(|l| l.id == list_id)
            .ok_or("the list was deleted")?;
        let item = |ip: String, comment: String| RulesItem {
            id: random_hex(16),
            ip,
            comment,
            created_on: now_rfc3339(),
        };
        match change {
            BulkChange::Add(items) => {
                let new: Vec<_> = items
                    .into_iter()
                    .filter(|(ip, _)| !list.items.iter().any(|i| &i.ip == ip))
                    .collect();
                if total + new.len() > limit {
                    return Err("This list is at the maximum number of items".into());
                }
                list.items
                    .extend(new.into_iter().map(|(ip, c)| item(ip, c)));
            }
            BulkChange::Replace(items) => {
                if total - list.items.len() + items.len() > limit {
                    return Err("This list is at the maximum number of items".into());
                }
                list.items = items.into_iter().map(|(ip, c)| item(ip, c)).collect();
            }
            BulkChange::Delete(ids) => list.items.retain(|i| !ids.contains(&i.id)),
        }
        list.modified_on = now_rfc3339();
        Ok(())
    }

    fn pending(&self) -> bool {
        self.ops.iter().any(|o| o.status == "pending")
    }
}

/// Lists live in the emulator's one account.
fn check_account(account: &str, path: &str) -> Result<(), axum::response::Response> {
    super::tunnels::account(account, path)
}
