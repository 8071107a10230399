//! An emulator of the Cloudflare API v4 subset gatehouse uses, following
//! `../shared/cloudflare/` (envelope, error codes, `result_info`, 429 with `Retry-After`), with
//! an authoritative DNS server that answers from its records, and fault injection (429 bursts,
//! 5xx, slow answers) so retry paths are tested. Cloudflare itself is unreachable here.

mod api;
mod dns;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// A DNS record as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub id: String,
    pub zone_id: String,
    pub zone_name: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    pub proxiable: bool,
    pub proxied: bool,
    pub ttl: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub tags: Vec<String>,
    pub created_on: String,
    pub modified_on: String,
}

/// An Origin CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginCertificate {
    pub id: String,
    pub certificate: String,
    pub csr: String,
    pub hostnames: Vec<String>,
    pub expires_on: String,
    pub request_type: String,
    pub requested_validity: u32,
    #[serde(skip)]
    pub revoked_at: Option<String>,
}

/// A Cloudflare Tunnel as the emulator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub id: String,
    pub account_tag: String,
    pub name: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
    /// Base64; part of the token.
    pub secret: String,
    /// `local` or `cloudflare` (remotely managed).
    pub config_src: String,
    /// The remotely managed configuration last PUT, as sent.
    pub config: Option<serde_json::Value>,
    pub config_version: u64,
    pub connections: Vec<Connection>,
    pub conns_active_at: Option<String>,
    pub conns_inactive_at: Option<String>,
}

/// One connection of a connector to the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    /// The connector (one cloudflared process).
    pub client_id: String,
    pub client_version: String,
    pub colo_name: String,
    pub origin_ip: String,
    pub opened_at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub id: String,
    pub name: String,
    pub account_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub id: String,
    pub active: bool,
}

/// Faults to inject into the next requests.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    pub rate_limited: u32,
    pub retry_after: u32,
    pub server_errors: u32,
    pub server_status: u16,
    pub write_errors: u32,
    /// Writes let through before `write_errors` start.
    pub writes_before_errors: u32,
    /// Writes that are carried out but answered 502, as when the answer is lost on the way.
    pub lost_responses: u32,
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub tokens: BTreeMap<String, Token>,
    pub zones: Vec<Zone>,
    pub records: Vec<Record>,
    pub certificates: Vec<OriginCertificate>,
    pub tunnels: Vec<Tunnel>,
    pub lists: api::Lists,
    pub faults: Faults,
    pub requests: u64,
    pub throttled: u64,
}

pub(crate) type Shared = Arc<Mutex<State>>;

/// A running emulator; stops when dropped.
#[derive(Debug)]
pub struct Emulator {
    state: Shared,
    /// The API base URL, `http://127.0.0.1:PORT/client/v4`.
    pub api_url: String,
    /// The authoritative DNS server (UDP and TCP).
    pub dns_addr: SocketAddr,
    /// The Origin CA root, PEM: what a client that trusts Cloudflare's Origin CA trusts.
    pub origin_ca_pem: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).expect("RNG");
    hex::encode(b)
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

impl Emulator {
    /// Starts on free loopback ports.
    pub fn start() -> Self {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
    }

    /// Starts the API on `api` and the DNS server on `dns` (port 0: any free port).
    pub fn start_on(api: SocketAddr, dns: SocketAddr) -> Self {
        let state: Shared = Arc::default();
        let origin_ca = api::OriginCa::new();
        let origin_ca_pem = origin_ca.cert_pem.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("emulator runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(api)
                    .await
                    .expect("bind the API");
                let api_addr = listener.local_addr().unwrap();
                let dns_addr = dns::serve(dns, thread_state.clone())
                    .await
                    .expect("bind DNS");
                let app = api::router(thread_state, Arc::new(origin_ca));
                ready_tx.send((api_addr, dns_addr)).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = shutdown_rx.await;
                    })
                    .await
                    .expect("serve the API");
            });
        });
        let (api_addr, dns_addr) = ready_rx.recv().expect("the emulator started");
        Self {
            state,
            api_url: format!("http://{api_addr}/client/v4"),
            dns_addr,
            origin_ca_pem,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("emulator lock"))
    }

    /// Registers an API token; returns its id.
    pub fn add_token(&self, token: &str) -> String {
        let id = random_hex(16);
        self.with(|s| {
            s.tokens.insert(
                token.to_owned(),
                Token {
                    id: id.clone(),
                    active: true,
                },
            )
        });
        id
    }

    /// Revokes an API token.
    pub fn revoke_token(&self, token: &str) {
        self.with(|s| {
            if let Some(t) = s.tokens.get_mut(token) {
                t.active = false;
            }
        });
    }

    /// Adds a zone; returns its id.
    pub fn add_zone(&self, name: &str) -> String {
        let id = random_hex(16);
        self.with(|s| {
            s.zones.push(Zone {
                id: id.clone(),
                name: name.to_owned(),
                account_id: api::ACCOUNT.into(),
            })
        });
        id
    }

    /// Adds a record directly (as if someone else had created it); returns its id.
    pub fn add_record(&self, zone_id: &str, kind: &str, name: &str, content: &str) -> String {
        self.with(|s| {
            let zone = s
                .zones
                .iter()
                .find(|z| z.id == zone_id)
                .expect("zone")
                .clone();
            let record = api::new_record(&zone, kind, name, content, false, 1, None);
            let id = record.id.clone();
            s.records.push(record);
            id
        })
    }

    /// The records of a zone.
    pub fn records(&self, zone_id: &str) -> Vec<Record> {
        self.with(|s| {
            s.records
                .iter()
                .filter(|r| r.zone_id == zone_id)
                .cloned()
                .collect()
        })
    }

    /// The account that holds every zone and tunnel.
    pub fn account_id(&self) -> &'static str {
        api::ACCOUNT
    }

    /// Creates a remotely managed tunnel directly (as if made elsewhere); returns its id and
    /// token.
    pub fn add_tunnel(&self, name: &str) -> (String, String) {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("RNG");
        let tunnel = Tunnel {
            id: api::uuid(),
            account_tag: api::ACCOUNT.into(),
            name: name.to_owned(),
            created_at: now_rfc3339(),
            deleted_at: None,
            secret: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret),
            config_src: "cloudflare".into(),
            config: None,
            config_version: 0,
            connections: Vec::new(),
            conns_active_at: None,
            conns_inactive_at: None,
        };
        let out = (tunnel.id.clone(), api::token_of(&tunnel));
        self.with(|s| s.tunnels.push(tunnel));
        out
    }

    /// Every tunnel, deleted ones included.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.with(|s| s.tunnels.clone())
    }

    /// A Rules List's items as (ip, comment), by list name.
    pub fn rules_list_items(&self, name: &str) -> Vec<(String, String)> {
        self.with(|s| {
            s.lists.settle();
            s.lists
                .rules
                .iter()
                .find(|l| l.name == name)
                .map(|l| {
                    l.items
                        .iter()
                        .map(|i| (i.ip.clone(), i.comment.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// A Gateway list's items as (value, description), by list name.
    pub fn gateway_list_items(&self, name: &str) -> Vec<(String, String)> {
        self.with(|s| {
            s.lists
                .gateway
                .iter()
                .find(|l| l.name == name)
                .map(|l| {
                    l.items
                        .iter()
                        .map(|i| (i.value.clone(), i.description.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Puts an item into a Rules List (and a Gateway list of the same name, if any) as
    /// someone else would: gatehouse must leave it alone. False when no such list exists.
    pub fn add_foreign_list_item(&self, name: &str, ip: &str, comment: &str) -> bool {
        self.with(|s| {
            let mut found = false;
            if let Some(l) = s.lists.rules.iter_mut().find(|l| l.name == name) {
                l.items.push(api::RulesItem {
                    id: random_hex(16),
                    ip: ip.to_owned(),
                    comment: comment.to_owned(),
                    created_on: now_rfc3339(),
                });
                found = true;
            }
            if let Some(l) = s.lists.gateway.iter_mut().find(|l| l.name == name) {
                l.items.push(api::GatewayItem {
                    value: ip.to_owned(),
                    description: comment.to_owned(),
                    created_at: now_rfc3339(),
                });
                found = true;
            }
            found
        })
    }

    /// How long each Rules List bulk operation stays pending (a write meanwhile gets 429).
    pub fn set_bulk_delay(&self, delay: Duration) {
        self.with(|s| s.lists.bulk_delay = delay);
    }

    /// How many Rules List bulk operations were started.
    pub fn bulk_operations(&self) -> usize {
        self.with(|s| s.lists.ops.len())
    }

    /// The edge's address for connectors (`/edge/connect`, `/edge/disconnect`): what the
    /// cloudflared stand-in reaches.
    pub fn edge_url(&self) -> String {
        self.api_url.trim_end_matches("/client/v4").to_owned() + "/edge"
    }

    /// Every Origin CA certificate, with its revocation time.
    pub fn certificates(&self) -> Vec<OriginCertificate> {
        self.with(|s| s.certificates.clone())
    }

    /// The next `n` requests get HTTP 429 with `Retry-After: retry_after`.
    pub fn rate_limit_next(&self, n: u32, retry_after: u32) {
        self.with(|s| {
            s.faults.rate_limited = n;
            s.faults.retry_after = retry_after;
        });
    }

    /// The next `n` requests get HTTP `status` (a 5xx).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.with(|s| {
            s.faults.server_errors = n;
            s.faults.server_status = status;
        });
    }

    /// The next `n` writes (POST, PUT, PATCH, DELETE) are refused with HTTP 403, as for a token
    /// that may read but not edit; reads still work.
    pub fn fail_writes(&self, n: u32) {
        self.with(|s| s.faults.write_errors = n);
    }

    /// After `skip` more writes go through, the next `n` are refused with HTTP 403: a failure
    /// midway through a sequence of writes.
    pub fn fail_writes_after(&self, skip: u32, n: u32) {
        self.with(|s| {
            s.faults.writes_before_errors = skip;
            s.faults.write_errors = n;
        });
    }

    /// The next `n` writes are carried out, but answered HTTP 502 (the answer was lost).
    pub fn lose_responses(&self, n: u32) {
        self.with(|s| s.faults.lost_responses = n);
    }

    /// Every answer is delayed by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.faults.delay = delay);
    }

    /// How many requests arrived, and how many of them were answered 429.
    pub fn request_counts(&self) -> (u64, u64) {
        self.with(|s| (s.requests, s.throttled))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
