//! Keeps each allowlist's Cloudflare list equal to what the allowlist allows: a Rules List
//! (`gatehouse_<name>`, item writes as bulk operations polled to completion, deletes by item
//! id) and/or a Gateway list (`gatehouse-<name>`, PATCH append/remove by value).
//!
//! Only items whose comment carries gatehouse's tag (`gatehouse:<list>`) are ever changed:
//! anything else in the list is someone else's. Each round sends the difference between what
//! the allowlist allows and what the list holds; what the list holds is read from Cloudflare at
//! start, every [`FULL_EVERY`] and after any error, and otherwise known from the last round.
//! One task does every list in turn, so at most one bulk operation per account is in flight;
//! a 429 (a bulk operation someone else started) is ridden out by the client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Mirror, effective};
use crate::Shared;
use crate::cloudflare::Client;
use crate::cloudflare::accounts::client;
use crate::cloudflare::lists::ListItem;
use crate::error::{Error, Result};
use crate::store::{AllowlistRow, LeaderJob, Leadership};

/// How often the lists are looked at (expiry is decided by the clock, so this is how late an
/// expired entry may leave a list), besides every change.
const TICK: Duration = Duration::from_secs(1);
/// How often a controller that does not mirror at Cloudflare asks whether it may.
const FOLLOW: Duration = Duration::from_secs(15);
/// How often what a list holds is read again from Cloudflare.
const FULL_EVERY: Duration = Duration::from_secs(600);
/// Items a Rules List account takes on most plans, and entries per Gateway list.
pub const RULES_ITEMS_MAX: usize = 10_000;
pub const GATEWAY_ITEMS_MAX: usize = 1_000;

/// The two kinds of Cloudflare list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Rules,
    Gateway,
}

impl Target {
    pub fn word(self) -> &'static str {
        match self {
            Target::Rules => "rules",
            Target::Gateway => "gateway",
        }
    }

    /// The list's name at Cloudflare.
    pub fn list_name(self, allowlist: &str) -> String {
        match self {
            Target::Rules => format!("gatehouse_{}", allowlist.replace('-', "_")),
            Target::Gateway => format!("gatehouse-{allowlist}"),
        }
    }
}

/// The targets of a list.
fn targets(list: &AllowlistRow) -> Vec<Target> {
    match Mirror::parse(&list.cloudflare).unwrap_or(Mirror::None) {
        Mirror::None => vec![],
        Mirror::Rules => vec![Target::Rules],
        Mirror::Gateway => vec![Target::Gateway],
        Mirror::Both => vec![Target::Rules, Target::Gateway],
    }
}

/// The tag on every item gatehouse writes for `list`.
pub fn tag(list: &str) -> String {
    format!("gatehouse:{list}")
}

/// An entry as a list item's address: a single address without its /32 or /128.
fn wire(cidr: &str) -> String {
    match cidr.parse::<ipnet::IpNet>() {
        Ok(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
        _ => cidr.to_owned(),
    }
}

/// A list item's address as an entry (`203.0.113.7` → `203.0.113.7/32`).
fn entry_of(ip: &str) -> String {
    super::parse_cidr(ip).map_or_else(|_| ip.to_owned(), |n| n.to_string())
}

fn ours(item: &ListItem, list: &str) -> bool {
    let t = tag(list);
    item.comment == t || item.comment.starts_with(&format!("{t} "))
}

/// How a list's last round went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub list_id: String,
    /// When the list last matched (Unix seconds; 0: not yet since the controller started).
    pub synced_at: i64,
    pub items: usize,
    pub error: String,
}

/// What is known of each Cloudflare list: gatehouse's items in it (address → item id).
#[derive(Debug, Default)]
struct Known {
    list_id: String,
    items: BTreeMap<String, String>,
    read_at: Option<tokio::time::Instant>,
}

/// Every list's sync status, for `allowlist show`.
#[derive(Debug, Default)]
pub struct Statuses(Mutex<HashMap<(String, Target), SyncStatus>>);

impl Statuses {
    pub fn get(&self, list: &str, target: Target) -> Option<SyncStatus> {
        self.0
            .lock()
            .expect("sync status lock")
            .get(&(list.to_owned(), target))
            .cloned()
    }

    fn set(&self, list: &str, target: Target, status: SyncStatus) {
        self.0
            .lock()
            .expect("sync status lock")
            .insert((list.to_owned(), target), status);
    }
}

/// Runs until `shutdown`: a round at start, on every change and every [`TICK`].
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut known: HashMap<(String, Target), Known> = HashMap::new();
    let mut accounts: HashMap<String, (Client, String)> = HashMap::new();
    let mut leadership = Leadership::new(LeaderJob::AllowlistSync, FOLLOW);
    loop {
        let changed = shared.allowlists_changed.notified();
        // Every controller computes the sets (its own hosts' Caddy matchers need them); one,
        // the leader, mirrors them at Cloudflare.
        let mirror = leadership.leads(&shared.store).await;
        if let Err(e) = round(&shared, &mut known, &mut accounts, mirror).await {
            warn!("allowlist sync: {e}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One round over every list mirrored at Cloudflare. `accounts` keeps each Cloudflare
/// account's client and id between rounds (forgotten after an error), so a quiet round makes
/// no Cloudflare call at all.
async fn round(
    shared: &Shared,
    known: &mut HashMap<(String, Target), Known>,
    accounts: &mut HashMap<String, (Client, String)>,
    mirror: bool,
) -> Result<()> {
    let lists = shared.store.allowlists().await?;
    let now = shared.now();
    known.retain(|(name, _), _| lists.iter().any(|l| &l.name == name));
    // Every list's set, for the hosts' Caddy matchers; then the Cloudflare lists.
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for list in &lists {
        let wanted: BTreeSet<String> = effective(shared, list, now)
            .await?
            .into_iter()
            .map(|e| e.cidr.to_string())
            .collect();
        sets.insert(list.name.clone(), wanted);
    }
    let published: super::Sets = std::sync::Arc::new(
        sets.iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect(),
    );
    shared.allowlist_sets.send_if_modified(|current| {
        let changed = **current != *published;
        if changed {
            *current = published.clone();
        }
        changed
    });
    if !mirror {
        return Ok(());
    }
    for list in &lists {
        let targets = targets(list);
        if targets.is_empty() {
            continue;
        }
        let wanted = &sets[&list.name];
        if !accounts.contains_key(&list.account) {
            let found = match client(shared, &list.account).await {
                Ok(cf) => account_id(&cf).await.map(|id| (cf, id)),
                Err(e) => Err(e),
            };
            match found {
                Ok(found) => {
                    accounts.insert(list.account.clone(), found);
                }
                Err(e) => {
                    for t in targets {
                        fail(shared, list, t, &e);
                    }
                    continue;
                }
            }
        }
        let (cf, account) = accounts[&list.account].clone();
        for target in targets {
            let k = known.entry((list.name.clone(), target)).or_default();
            let result = one(&cf, &account, list, target, wanted, k).await;
            match result {
                Ok(()) => shared.list_sync.set(
                    &list.name,
                    target,
                    SyncStatus {
                        list_id: k.list_id.clone(),
                        synced_at: shared.now(),
                        items: k.items.len(),
                        error: String::new(),
                    },
                ),
                Err(e) => {
                    // Read it again next time (and the account too): what happened is not known.
                    k.read_at = None;
                    accounts.remove(&list.account);
                    fail(shared, list, target, &e);
                }
            }
        }
    }
    Ok(())
}

fn fail(shared: &Shared, list: &AllowlistRow, target: Target, e: &Error) {
    let before = shared.list_sync.get(&list.name, target).unwrap_or_default();
    if before.error != e.to_string() {
        warn!(list = %list.name, target = target.word(), error = %e, "cannot sync the allowlist to Cloudflare");
    }
    shared.list_sync.set(
        &list.name,
        target,
        SyncStatus {
            error: e.to_string(),
            ..before
        },
    );
}

/// Cloudflare's id of the account the token works in (from its zones).
async fn account_id(cf: &Client) -> Result<String> {
    cf.zones()
        .await?
        .into_iter()
        .map(|z| z.account.id)
        .find(|id| !id.is_empty())
        .ok_or_else(|| {
            Error::Precondition(
                "the Cloudflare account's token sees no zone, so its account id is unknown".into(),
            )
        })
}

/// Makes one Cloudflare list hold gatehouse's items for exactly `wanted`.
async fn one(
    cf: &Client,
    account: &str,
    list: &AllowlistRow,
    target: Target,
    wanted: &BTreeSet<String>,
    k: &mut Known,
) -> Result<()> {
    let stale = k
        .read_at
        .is_none_or(|t| t.elapsed() >= FULL_EVERY || k.list_id.is_empty());
    if stale {
        read(cf, account, list, target, k).await?;
    }
    let have: BTreeSet<String> = k.items.keys().cloned().collect();
    let add: Vec<String> = wanted.difference(&have).cloned().collect();
    let remove: Vec<String> = have.difference(wanted).cloned().collect();
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let limit = match target {
        Target::Rules => RULES_ITEMS_MAX,
        Target::Gateway => GATEWAY_ITEMS_MAX,
    };
    if wanted.len() > limit {
        return Err(Error::Exhausted(format!(
            "the allowlist {} allows {} addresses, more than the {limit} a Cloudflare {} list takes",
            list.name,
            wanted.len(),
            target.word()
        )));
    }
    let tagged: Vec<(String, String)> = add.iter().map(|ip| (wire(ip), tag(&list.name))).collect();
    match target {
        Target::Rules => {
            if !remove.is_empty() {
                let ids: Vec<String> = remove
                    .iter()
                    .filter_map(|ip| k.items.get(ip).cloned())
                    .collect();
                cf.delete_rules_list_items(account, &k.list_id, &ids)
                    .await?;
            }
            if !tagged.is_empty() {
                cf.add_rules_list_items(account, &k.list_id, &tagged)
                    .await?;
            }
            // The new items' ids come from reading the list back.
            read(cf, account, list, target, k).await?;
        }
        Target::Gateway => {
            let values: Vec<String> = remove
                .iter()
                .map(|ip| k.items.get(ip).cloned().unwrap_or_else(|| wire(ip)))
                .collect();
            cf.patch_gateway_list(account, &k.list_id, &tagged, &values)
                .await?;
            for ip in &remove {
                k.items.remove(ip);
            }
            for ip in add {
                let value = wire(&ip);
                k.items.insert(ip, value);
            }
        }
    }
    info!(list = %list.name, target = target.word(), added = tagged.len(), removed = remove.len(), "allowlist synced to Cloudflare");
    Ok(())
}

/// Reads (creating it when missing) the Cloudflare list and gatehouse's items in it.
async fn read(
    cf: &Client,
    account: &str,
    list: &AllowlistRow,
    target: Target,
    k: &mut Known,
) -> Result<()> {
    let name = target.list_name(&list.name);
    let description = format!("managed by gatehouse: allowlist {}", list.name);
    let found = match target {
        Target::Rules => cf.rules_lists(account).await?,
        Target::Gateway => cf.gateway_lists(account).await?,
    }
    .into_iter()
    .find(|l| l.name == name);
    let id = match found {
        Some(l) => l.id,
        None => {
            let made = match target {
                Target::Rules => cf.create_rules_list(account, &name, &description).await?,
                Target::Gateway => cf.create_gateway_list(account, &name, &description).await?,
            };
            info!(list = %list.name, target = target.word(), cloudflare_list = %name, "Cloudflare list created");
            made.id
        }
    };
    let items = match target {
        Target::Rules => cf.rules_list_items(account, &id).await?,
        Target::Gateway => cf.gateway_list_items(account, &id).await?,
    };
    // Keyed by entry; the value is what deletes it: the item id (Rules) or its value (Gateway).
    k.items = items
        .into_iter()
        .filter(|i| ours(i, &list.name))
        .map(|i| {
            let handle = match target {
                Target::Rules => i.id,
                Target::Gateway => i.ip.clone(),
            };
            (entry_of(&i.ip), handle)
        })
        .collect();
    k.list_id = id;
    k.read_at = Some(tokio::time::Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(Target::Rules.list_name("home-lab"), "gatehouse_home_lab");
        assert_eq!(Target::Gateway.list_name("home-lab"), "gatehouse-home-lab");
        let item = |c: &str| ListItem {
            id: "i".into(),
            ip: "203.0.113.7".into(),
            comment: c.into(),
        };
        assert!(ours(&item("gatehouse:home"), "home"));
        assert!(!ours(&item("gatehouse:home2"), "home"));
        assert!(!ours(&item("office"), "home"));
        assert!(!ours(&item(""), "home"));
    }
}
