//! The admin gRPC service. Callers are root on the local Unix socket, or bearer API tokens over
//! TLS with a role. Every mutating call is written to the audit log, refusals included.

use gatehouse_proto::text::escape;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::names::{Role, validate_labels};
use gatehouse_proto::v1::admin_service_server::AdminService;
use gatehouse_proto::v1::*;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::secrets::{API_PREFIX, JOIN_PREFIX, Token, random_id};
use crate::store::{AgentRow, ApiTokenRow, AuditRow, JoinTokenRow};
use crate::{Shared, cloudflare_sites, now, sites};

/// The default join token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest join token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Who made a call.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A local process on the admin socket.
    Local { uid: u32 },
    /// An API token.
    Token {
        id: String,
        name: String,
        role: Role,
    },
    /// The controller itself (dev mode set-up).
    Controller,
    /// An enrolled agent, over its stream (what the controller refused it).
    Agent { id: String },
}

impl Actor {
    fn role(&self) -> Role {
        match self {
            Actor::Local { .. } | Actor::Controller => Role::Admin,
            Actor::Token { role, .. } => *role,
            Actor::Agent { .. } => Role::Viewer,
        }
    }

    fn label(&self) -> String {
        match self {
            Actor::Local { uid } => format!("local:uid={uid}"),
            Actor::Token { id, name, role } => format!("token:{id} ({name}, {role})"),
            Actor::Controller => "controller".into(),
            Actor::Agent { id } => format!("agent:{id}"),
        }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct AdminApi {
    shared: Arc<Shared>,
}

impl AdminApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Identifies the caller; it must hold at least `need`.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        if let Some(uds) = request.extensions().get::<UdsConnectInfo>() {
            let uid = uds
                .peer_cred
                .map(|c| c.uid())
                .ok_or_else(|| Status::unauthenticated("cannot tell who is on the admin socket"))?;
            let me = nix::unistd::geteuid().as_raw();
            if uid != 0 && uid != me {
                return Err(Status::permission_denied(
                    "the admin socket is for root (or the controller's own user)",
                ));
            }
            return Ok(Actor::Local { uid });
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "an API token is required: pass --token or set GATEHOUSE_TOKEN",
                )
            })?;
        let text = header.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <token>`")
        })?;
        let token = Token::parse(API_PREFIX, text).map_err(Status::unauthenticated)?;
        let row = self
            .shared
            .store
            .api_token_get(&token.id)
            .await?
            .filter(|r| token.matches(&r.secret_hash))
            .ok_or_else(|| Status::unauthenticated("unknown API token"))?;
        if row.revoked_at.is_some() {
            return Err(Status::unauthenticated("this API token was revoked"));
        }
        let role: Role = row
            .role
            .parse()
            .map_err(|_| Status::internal("stored token role is damaged"))?;
        self.shared.store.api_token_touch(&row.id, now()).await?;
        Ok(Actor::Token {
            id: row.id,
            name: row.name,
            role,
        })
    }

    async fn read<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        self.caller(request).await
    }

    /// Authorizes a mutation and audits it, whatever the outcome.
    async fn mutate<T, R, F>(
        &self,
        request: &Request<T>,
        need: Role,
        action: &str,
        target: &str,
        work: F,
    ) -> Result<R, Status>
    where
        F: std::future::Future<Output = Result<R, Status>>,
    {
        let actor = self.caller(request).await?;
        let result = if actor.role() < need {
            Err(Status::permission_denied(format!(
                "role {} cannot {action}: it needs {need} or above",
                actor.role()
            )))
        } else {
            work.await
        };
        self.audit(&actor, action, target, &result).await;
        result
    }

    async fn audit<R>(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        result: &Result<R, Status>,
    ) {
        audit(
            &self.shared,
            actor,
            action,
            target,
            result.as_ref().err().map(|s| s.message()),
        )
        .await;
    }
}

/// Writes an audit entry; a failure to write is logged, never hidden.
pub async fn audit(
    shared: &Shared,
    actor: &Actor,
    action: &str,
    target: &str,
    error: Option<&str>,
) {
    // Targets and errors carry callers' text: one entry is one line, whatever they sent.
    let entry = AuditRow {
        at_ms: now_ms(),
        actor: escape(&actor.label()).into_owned(),
        action: action.to_owned(),
        target: escape(target).into_owned(),
        result: error.map_or_else(|| "ok".to_owned(), |e| format!("error: {}", escape(e))),
    };
    info!(actor = %entry.actor, action, target, result = %entry.result, "audit");
    if let Err(e) = shared.store.audit_insert(&random_id(20), &entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Creates a join token (used by the API and by dev mode).
pub async fn create_join_token(
    shared: &Shared,
    token: &Token,
    ttl: Duration,
    labels: BTreeMap<String, String>,
) -> Result<JoinTokenRow, Status> {
    if ttl > MAX_TOKEN_TTL {
        return Err(Status::invalid_argument("ttl: at most 30 days"));
    }
    let now = now();
    let row = JoinTokenRow {
        id: token.id.clone(),
        secret_hash: token.secret_hash(),
        labels,
        created_at: now,
        expires_at: now + ttl.as_secs() as i64,
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    shared.store.join_token_insert(&row).await?;
    Ok(row)
}

/// Creates an API token (used by the API and by dev mode).
pub async fn create_api_token(
    shared: &Shared,
    name: &str,
    role: Role,
) -> Result<(Token, ApiTokenRow), Status> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "name: 1 to 64 printable characters",
        ));
    }
    let token = Token::generate(API_PREFIX);
    let row = ApiTokenRow {
        id: token.id.clone(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        secret_hash: token.secret_hash(),
        created_at: now(),
        revoked_at: None,
        last_used_at: None,
    };
    shared.store.api_token_insert(&row).await?;
    Ok((token, row))
}

fn join_token_view(row: &JoinTokenRow, now: i64) -> JoinToken {
    JoinToken {
        id: row.id.clone(),
        labels: row.labels.clone().into_iter().collect(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        used_at: row.used_at.unwrap_or(0),
        used_by_agent: row.used_by.clone().unwrap_or_default(),
        revoked_at: row.revoked_at.unwrap_or(0),
        state: row.state(now).to_owned(),
    }
}

fn api_token_view(row: &ApiTokenRow) -> ApiToken {
    ApiToken {
        id: row.id.clone(),
        name: row.name.clone(),
        role: row.role.clone(),
        created_at: row.created_at,
        revoked_at: row.revoked_at.unwrap_or(0),
        last_used_at: row.last_used_at.unwrap_or(0),
    }
}

impl AdminApi {
    fn agent_view(&self, row: AgentRow, desired_generation: u64) -> Agent {
        let live = self.shared.fleet.view(&row.id);
        let last_seen = live.last_seen.or(row.last_seen_at).unwrap_or(0);
        let status = self.shared.agent_status(&row);
        Agent {
            id: row.id,
            hostname: row.hostname,
            labels: row.labels.into_iter().collect(),
            enrolled_at: row.enrolled_at,
            revoked_at: row.revoked_at.unwrap_or(0),
            status: status.into(),
            last_seen_at: last_seen,
            connected_since: live.connected_since.unwrap_or(0),
            sessions: live.sessions,
            desired_generation,
            applied_generation: row.applied_generation,
            version: row.version,
            facts: row.facts,
            metrics: live.metrics,
            metrics_sampled_at: live.metrics_sampled_at,
            certificate_serial: row.cert_serial,
            certificate_not_after: row.cert_not_after,
            domain: row.domain,
        }
    }

    /// A certificate issuer named by a request (`internal`, `acme:ACCOUNT`), checked.
    async fn certificate_source(
        &self,
        issuer: &str,
        key_type: KeyType,
    ) -> Result<sites::CertificateSource, Status> {
        let issuer =
            gatehouse_proto::spec::Issuer::parse(issuer).map_err(Status::invalid_argument)?;
        match &issuer {
            gatehouse_proto::spec::Issuer::Acme(account) => {
                if self
                    .shared
                    .store
                    .acme_account(account.as_str())
                    .await?
                    .is_none()
                {
                    return Err(Status::failed_precondition(format!(
                        "no ACME account {account}: create it with gatehousectl acme account \
                         create"
                    )));
                }
            }
            gatehouse_proto::spec::Issuer::Internal => {}
            gatehouse_proto::spec::Issuer::OriginCa(_) => {
                return Err(Status::invalid_argument(
                    "issuer: Origin CA certificates come with proxied Cloudflare sites",
                ));
            }
        }
        Ok(sites::CertificateSource {
            issuer: issuer.to_string(),
            key_type,
        })
    }

    async fn order(&self, id: &str) -> Result<CertificateOrder, Status> {
        let row = self
            .shared
            .store
            .acme_order(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no certificate order {id:?}")))?;
        let all = self.shared.store.acme_orders(Some(&row.agent_id)).await?;
        let mut views = crate::acme::order_views(&self.shared, &[row], &all).await?;
        Ok(views.remove(0))
    }

    async fn agent_by_id(&self, id: &str) -> Result<Agent, Status> {
        let row = self.shared.store.agent_get(id).await?.ok_or_else(|| {
            Status::not_found(format!("no agent {id:?}: see gatehousectl agents list"))
        })?;
        let generation = self
            .shared
            .store
            .desired_latest(id)
            .await?
            .map_or(0, |d| d.generation);
        Ok(self.agent_view(row, generation))
    }
}

impl AdminApi {
    /// Reads the agent's newest desired state, applies `change`, stores the result as the next
    /// generation and tells the agent's stream. Changes are serialised.
    async fn change_state(
        &self,
        agent_id: &str,
        change: impl FnOnce(DesiredState) -> Result<DesiredState, sites::Refused>,
    ) -> Result<DesiredState, Status> {
        self.agent_by_id(agent_id).await?;
        crate::change_desired(&self.shared, agent_id, change).await
    }

    async fn last_apply(&self, agent_id: &str) -> Result<(u64, i64, Vec<ItemResult>), Status> {
        let row = self
            .shared
            .store
            .agent_get(agent_id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no agent {agent_id:?}")))?;
        Ok(row
            .last_apply
            .map_or((0, 0, Vec::new()), |r| (r.generation, r.at, r.items())))
    }

    /// The sites of one agent as the API shows them.
    async fn sites_of(&self, agent_id: &str) -> Result<Vec<Site>, Status> {
        let latest = self
            .shared
            .store
            .desired_latest(agent_id)
            .await?
            .unwrap_or_else(|| crate::store::DesiredStateRow {
                generation: 0,
                state: DesiredState::default(),
                created_at: 0,
            });
        let (applied, _, results) = self.last_apply(agent_id).await?;
        let inventory = self.shared.fleet.view(agent_id).certificates;
        let on_cloudflare: Vec<_> = self
            .shared
            .store
            .cloudflare_sites()
            .await?
            .into_iter()
            .filter(|r| r.agent_id == agent_id)
            .collect();
        let in_state: Vec<String> = latest.state.sites.iter().map(|s| s.name.clone()).collect();
        let mut out: Vec<Site> = latest
            .state
            .sites
            .into_iter()
            .map(|spec| {
                let (state, error) =
                    sites::site_state(&spec.name, latest.generation, applied, &results);
                let cf = on_cloudflare.iter().find(|r| r.site == spec.name);
                Site {
                    agent_id: agent_id.to_owned(),
                    certificate: sites::site_certificate(&spec, &inventory),
                    fqdn: cf.map(|r| r.fqdn.clone()).unwrap_or_default(),
                    cloudflare_state: cf.map(|r| r.state.clone()).unwrap_or_default(),
                    spec: Some(spec),
                    generation: latest.generation,
                    state,
                    error,
                }
            })
            .collect();
        // A set-up at Cloudflare that stopped before the site reached the desired state.
        for row in on_cloudflare.iter().filter(|r| !in_state.contains(&r.site)) {
            out.push(Site {
                agent_id: agent_id.to_owned(),
                spec: Some(SiteSpec {
                    name: row.site.clone(),
                    domains: vec![row.fqdn.clone()],
                    ..Default::default()
                }),
                generation: 0,
                state: "setting-up".into(),
                error: String::new(),
                certificate: None,
                fqdn: row.fqdn.clone(),
                cloudflare_state: row.state.clone(),
            });
        }
        Ok(out)
    }

    async fn site(&self, agent_id: &str, name: &str) -> Result<Site, Status> {
        self.sites_of(agent_id)
            .await?
            .into_iter()
            .find(|s| s.spec.as_ref().is_some_and(|spec| spec.name == name))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no site {name:?} on agent {agent_id}: see gatehousectl site list"
                ))
            })
    }
}

fn agent_id_arg(id: &str) -> Result<String, Status> {
    id.parse::<gatehouse_proto::names::AgentId>()
        .map(|a| a.to_string())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        let req = request.get_ref();
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            s => Duration::from_secs(s),
        };
        let labels =
            validate_labels(&req.labels).map_err(|e| Status::invalid_argument(e.to_string()));
        let token = Token::generate(JOIN_PREFIX);
        let target = format!("join-token:{}", token.id);
        let result = self
            .mutate(&request, Role::Operator, "token.create", &target, async {
                let row = create_join_token(&self.shared, &token, ttl, labels?).await?;
                Ok(CreateJoinTokenResponse {
                    token: token.reveal(),
                    info: Some(join_token_view(&row, now())),
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_join_tokens(
        &self,
        request: Request<ListJoinTokensRequest>,
    ) -> Result<Response<ListJoinTokensResponse>, Status> {
        self.read(&request).await?;
        let now = now();
        let tokens = self.shared.store.join_token_list().await?;
        Ok(Response::new(ListJoinTokensResponse {
            tokens: tokens.iter().map(|t| join_token_view(t, now)).collect(),
        }))
    }

    async fn revoke_join_token(
        &self,
        request: Request<RevokeJoinTokenRequest>,
    ) -> Result<Response<RevokeJoinTokenResponse>, Status> {
        let id = request.get_ref().id.clone();
        let target = format!("join-token:{id}");
        let shared = self.shared.clone();
        let result = self
            .mutate(&request, Role::Operator, "token.revoke", &target, async {
                if shared.store.join_token_get(&id).await?.is_none() {
                    return Err(Status::not_found(format!(
                        "no join token {id:?}: see gatehousectl token list"
                    )));
                }
                let row = shared.store.join_token_revoke(&id, now()).await?;
                Ok(RevokeJoinTokenResponse {
                    token: Some(join_token_view(&row, now())),
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.read(&request).await?;
        let rows = self.shared.store.agent_list().await?;
        let mut agents = Vec::with_capacity(rows.len());
        for row in rows {
            let generation = self
                .shared
                .store
                .desired_latest(&row.id)
                .await?
                .map_or(0, |d| d.generation);
            agents.push(self.agent_view(row, generation));
        }
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        self.read(&request).await?;
        let id = agent_id_arg(&request.get_ref().id)?;
        Ok(Response::new(self.agent_by_id(&id).await?))
    }

    async fn revoke_agent(
        &self,
        request: Request<RevokeAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let id = request.get_ref().id.clone();
        let target = format!("agent:{id}");
        let result = self
            .mutate(&request, Role::Operator, "agent.revoke", &target, async {
                let id = agent_id_arg(&id)?;
                self.agent_by_id(&id).await?;
                self.shared.store.agent_revoke(&id, now()).await?;
                // Refuse the next handshake and close the open stream now.
                self.shared.revoked.insert(&id);
                self.shared.fleet.disconnect(&id);
                self.agent_by_id(&id).await
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn set_agent_labels(
        &self,
        request: Request<SetAgentLabelsRequest>,
    ) -> Result<Response<Agent>, Status> {
        let req = request.get_ref().clone();
        let target = format!("agent:{}", req.id);
        let result = self
            .mutate(&request, Role::Operator, "agent.label", &target, async {
                let id = agent_id_arg(&req.id)?;
                let labels = validate_labels(&req.labels)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.agent_by_id(&id).await?;
                self.shared.store.agent_set_labels(&id, &labels).await?;
                self.change_state(&id, |mut state| {
                    state.labels = labels.into_iter().collect();
                    Ok(state)
                })
                .await?;
                self.agent_by_id(&id).await
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn create_api_token(
        &self,
        request: Request<CreateApiTokenRequest>,
    ) -> Result<Response<CreateApiTokenResponse>, Status> {
        let req = request.get_ref().clone();
        let target = format!("api-token:{}", req.name);
        let shared = self.shared.clone();
        let result = self
            .mutate(&request, Role::Admin, "apitoken.create", &target, async {
                let role: Role =
                    req.role
                        .parse()
                        .map_err(|e: gatehouse_proto::names::NameError| {
                            Status::invalid_argument(e.to_string())
                        })?;
                let (token, row) = create_api_token(&shared, &req.name, role).await?;
                Ok(CreateApiTokenResponse {
                    token: token.reveal(),
                    info: Some(api_token_view(&row)),
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_api_tokens(
        &self,
        request: Request<ListApiTokensRequest>,
    ) -> Result<Response<ListApiTokensResponse>, Status> {
        self.read(&request).await?;
        let tokens = self.shared.store.api_token_list().await?;
        Ok(Response::new(ListApiTokensResponse {
            tokens: tokens.iter().map(api_token_view).collect(),
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<RevokeApiTokenRequest>,
    ) -> Result<Response<RevokeApiTokenResponse>, Status> {
        let id = request.get_ref().id.clone();
        let target = format!("api-token:{id}");
        let shared = self.shared.clone();
        let result = self
            .mutate(&request, Role::Admin, "apitoken.revoke", &target, async {
                if shared.store.api_token_get(&id).await?.is_none() {
                    return Err(Status::not_found(format!(
                        "no API token {id:?}: see gatehousectl apitoken list"
                    )));
                }
                let row = shared.store.api_token_revoke(&id, now()).await?;
                Ok(RevokeApiTokenResponse {
                    token: Some(api_token_view(&row)),
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        self.read(&request).await?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(10_000),
        };
        let entries = self.shared.store.audit_list(limit).await?;
        Ok(Response::new(ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| AuditEntry {
                    at_ms: e.at_ms,
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    result: e.result,
                })
                .collect(),
        }))
    }

    async fn put_site(&self, request: Request<PutSiteRequest>) -> Result<Response<Site>, Status> {
        let req = request.get_ref().clone();
        let name = match (&req.cloudflare, req.site.as_ref()) {
            (Some(cf), _) if cf.name.is_empty() => format!("(new name in {})", cf.zone),
            (Some(cf), _) => cf.name.clone(),
            (None, Some(s)) => s.name.clone(),
            (None, None) => String::new(),
        };
        let target = format!("agent:{}/site:{name}", req.agent_id);
        let result = self
            .mutate(&request, Role::Operator, "site.put", &target, async {
                let id = agent_id_arg(&req.agent_id)?;
                let mut site = req
                    .site
                    .clone()
                    .ok_or_else(|| Status::invalid_argument("site: required"))?;
                let key_type = KeyType::try_from(req.key_type)
                    .map_err(|_| Status::invalid_argument("key_type: unknown key type"))?;
                let source = match &req.cloudflare {
                    Some(cf) => {
                        let agent = self.agent_by_id(&id).await?;
                        let addresses = agent.facts.map(|f| f.addresses).unwrap_or_default();
                        let row =
                            cloudflare_sites::set_up(&self.shared, &id, cf, &addresses).await?;
                        self.shared.store.agent_set_domain(&id, &row.fqdn).await?;
                        site.name = row.site.clone();
                        site.domains = vec![row.fqdn.clone()];
                        if !req.certificate_issuer.is_empty() {
                            // The controller's own issuer (ACME by DNS-01 in this zone).
                            site.tls = Some(SiteTls {
                                mode: Some(site_tls::Mode::Certificate(row.site.clone())),
                            });
                            Some(
                                self.certificate_source(&req.certificate_issuer, key_type)
                                    .await?,
                            )
                        } else if cf.proxied {
                            site.tls = Some(SiteTls {
                                mode: Some(site_tls::Mode::Certificate(row.site.clone())),
                            });
                            Some(sites::CertificateSource {
                                issuer: format!("origin-ca:{}", cf.account),
                                key_type: KeyType::P256,
                            })
                        } else {
                            let config = &self.shared.config;
                            site.tls = Some(SiteTls {
                                mode: Some(site_tls::Mode::CaddyManaged(CaddyManaged {
                                    acme_ca: config.caddy_acme_ca.clone(),
                                    acme_ca_root: config.caddy_acme_ca_root.clone(),
                                })),
                            });
                            None
                        }
                    }
                    None if !req.certificate_issuer.is_empty() => Some(
                        self.certificate_source(&req.certificate_issuer, key_type)
                            .await?,
                    ),
                    None => req
                        .internal_certificate
                        .then(|| sites::CertificateSource::internal(key_type)),
                };
                let name = site.name.clone();
                self.change_state(&id, |state| sites::put_site(state, site, source))
                    .await?;
                self.site(&id, &name).await
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_sites(
        &self,
        request: Request<ListSitesRequest>,
    ) -> Result<Response<ListSitesResponse>, Status> {
        self.read(&request).await?;
        let ids = match request.get_ref().agent_id.as_str() {
            "" => self
                .shared
                .store
                .agent_list()
                .await?
                .into_iter()
                .map(|a| a.id)
                .collect(),
            id => vec![agent_id_arg(id)?],
        };
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.sites_of(&id).await?);
        }
        Ok(Response::new(ListSitesResponse { sites: out }))
    }

    async fn get_site(&self, request: Request<GetSiteRequest>) -> Result<Response<Site>, Status> {
        self.read(&request).await?;
        let id = agent_id_arg(&request.get_ref().agent_id)?;
        Ok(Response::new(
            self.site(&id, &request.get_ref().name).await?,
        ))
    }

    async fn delete_site(
        &self,
        request: Request<GetSiteRequest>,
    ) -> Result<Response<Site>, Status> {
        let req = request.get_ref().clone();
        let target = format!("agent:{}/site:{}", req.agent_id, req.name);
        let result = self
            .mutate(&request, Role::Operator, "site.delete", &target, async {
                let id = agent_id_arg(&req.agent_id)?;
                let before = self.site(&id, &req.name).await?;
                cloudflare_sites::tear_down(&self.shared, &id, &req.name).await?;
                if before.state == "setting-up" {
                    // It never reached the desired state: removing it at Cloudflare is all.
                    return Ok(Site {
                        state: "deleted".into(),
                        ..before
                    });
                }
                let state = self
                    .change_state(&id, |state| sites::delete_site(state, &req.name))
                    .await?;
                Ok(Site {
                    generation: state.generation,
                    state: "deleted".into(),
                    ..before
                })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn reissue_certificate(
        &self,
        request: Request<ReissueCertificateRequest>,
    ) -> Result<Response<Agent>, Status> {
        let req = request.get_ref().clone();
        let target = format!("agent:{}/certificate:{}", req.agent_id, req.name);
        let result = self
            .mutate(
                &request,
                Role::Operator,
                "certificate.reissue",
                &target,
                async {
                    let id = agent_id_arg(&req.agent_id)?;
                    self.change_state(&id, |state| sites::reissue(state, &req.name))
                        .await?;
                    self.agent_by_id(&id).await
                },
            )
            .await?;
        Ok(Response::new(result))
    }

    async fn rollback_agent(
        &self,
        request: Request<RollbackAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let req = request.get_ref().clone();
        let target = format!("agent:{}", req.agent_id);
        let action = format!("agent.rollback(to={})", req.to_generation);
        let result = self
            .mutate(&request, Role::Operator, &action, &target, async {
                let id = agent_id_arg(&req.agent_id)?;
                let earlier = self
                    .shared
                    .store
                    .desired_get(&id, req.to_generation)
                    .await?
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "agent {id} has no generation {}: see gatehousectl agents status {id}",
                            req.to_generation
                        ))
                    })?;
                self.change_state(&id, |_| Ok(sites::rollback(earlier.state)))
                    .await?;
                self.agent_by_id(&id).await
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn get_agent_status(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<AgentStatus>, Status> {
        self.read(&request).await?;
        let id = agent_id_arg(&request.get_ref().id)?;
        let agent = self.agent_by_id(&id).await?;
        let (applied_generation, applied_at, results) = self.last_apply(&id).await?;
        let history = self
            .shared
            .store
            .desired_history(&id, 50)
            .await?
            .into_iter()
            .map(|d| GenerationInfo {
                generation: d.generation,
                created_at: d.created_at,
                sites: d.state.sites.len() as u32,
                certificates: d.state.certificates.len() as u32,
            })
            .collect();
        Ok(Response::new(AgentStatus {
            agent: Some(agent),
            applied_generation,
            applied_at,
            results,
            certificates: self.shared.fleet.view(&id).certificates,
            history,
        }))
    }

    async fn add_cloudflare_account(
        &self,
        request: Request<AddCloudflareAccountRequest>,
    ) -> Result<Response<CloudflareAccount>, Status> {
        let req = request.get_ref().clone();
        let target = format!("cloudflare-account:{}", req.name);
        let result = self
            .mutate(
                &request,
                Role::Admin,
                "cloudflare.account.add",
                &target,
                async { cloudflare_sites::add_account(&self.shared, &req).await },
            )
            .await?;
        Ok(Response::new(result))
    }

    async fn list_cloudflare_accounts(
        &self,
        request: Request<ListCloudflareAccountsRequest>,
    ) -> Result<Response<ListCloudflareAccountsResponse>, Status> {
        self.read(&request).await?;
        let accounts = self.shared.store.cloudflare_accounts().await?;
        Ok(Response::new(ListCloudflareAccountsResponse {
            accounts: accounts
                .iter()
                .map(cloudflare_sites::account_view)
                .collect(),
        }))
    }

    async fn create_acme_account(
        &self,
        request: Request<CreateAcmeAccountRequest>,
    ) -> Result<Response<AcmeAccount>, Status> {
        let req = request.get_ref().clone();
        let target = format!("acme-account:{}", req.name);
        let result = self
            .mutate(
                &request,
                Role::Admin,
                "acme.account.create",
                &target,
                async {
                    let eab = (!req.eab_kid.is_empty() || !req.eab_hmac.is_empty()).then(|| {
                        crate::acme::account::Eab {
                            kid: req.eab_kid.clone(),
                            hmac: req.eab_hmac.clone(),
                        }
                    });
                    let row = crate::acme::account::create(
                        &self.shared,
                        crate::acme::account::NewAccountInput {
                            name: req.name.clone(),
                            ca: req.ca.clone(),
                            email: req.email.clone(),
                            agree_tos: req.agree_tos,
                            eab,
                            ca_roots: req.ca_roots_pem.clone(),
                        },
                    )
                    .await?;
                    Ok(crate::acme::account_view(&row))
                },
            )
            .await?;
        Ok(Response::new(result))
    }

    async fn list_acme_accounts(
        &self,
        request: Request<ListAcmeAccountsRequest>,
    ) -> Result<Response<ListAcmeAccountsResponse>, Status> {
        self.read(&request).await?;
        let accounts = self.shared.store.acme_accounts().await?;
        Ok(Response::new(ListAcmeAccountsResponse {
            accounts: accounts.iter().map(crate::acme::account_view).collect(),
        }))
    }

    async fn list_certificate_orders(
        &self,
        request: Request<ListCertificateOrdersRequest>,
    ) -> Result<Response<ListCertificateOrdersResponse>, Status> {
        self.read(&request).await?;
        let agent = request.get_ref().agent_id.as_str();
        let rows = self
            .shared
            .store
            .acme_orders((!agent.is_empty()).then_some(agent))
            .await?;
        let orders = crate::acme::order_views(&self.shared, &rows, &rows).await?;
        Ok(Response::new(ListCertificateOrdersResponse { orders }))
    }

    async fn get_certificate_order(
        &self,
        request: Request<GetCertificateOrderRequest>,
    ) -> Result<Response<CertificateOrder>, Status> {
        self.read(&request).await?;
        let order = self.order(&request.get_ref().id).await?;
        Ok(Response::new(order))
    }

    async fn request_certificate(
        &self,
        request: Request<RequestCertificateRequest>,
    ) -> Result<Response<RequestCertificateResponse>, Status> {
        let req = request.get_ref().clone();
        let target = format!("certificate:{}", req.name);
        let result = self
            .mutate(&request, Role::Operator, "cert.request", &target, async {
                let bad = |m: String| Status::invalid_argument(m);
                let name: gatehouse_proto::names::ResourceName = req
                    .name
                    .parse()
                    .map_err(|e: gatehouse_proto::names::NameError| bad(format!("name: {e}")))?;
                if req.agent_ids.is_empty() {
                    return Err(bad(
                        "agent_ids: bind the certificate to at least one host".into()
                    ));
                }
                let key_type = KeyType::try_from(req.key_type)
                    .map_err(|_| bad("key_type: unknown key type".into()))?;
                let source = self.certificate_source(&req.issuer, key_type).await?;
                let mut ids = Vec::new();
                for agent in &req.agent_ids {
                    let id = agent_id_arg(agent)?;
                    self.agent_by_id(&id).await?;
                    ids.push(id);
                }
                let mut agents = Vec::new();
                for id in &ids {
                    self.change_state(id, |state| {
                        sites::put_certificate(
                            state,
                            name.as_str(),
                            req.domains.clone(),
                            source.clone(),
                        )
                    })
                    .await?;
                    agents.push(self.agent_by_id(id).await?);
                }
                Ok(RequestCertificateResponse { agents })
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn revoke_certificate_order(
        &self,
        request: Request<RevokeCertificateOrderRequest>,
    ) -> Result<Response<CertificateOrder>, Status> {
        let req = request.get_ref().clone();
        let target = format!("certificate-order:{}", req.id);
        let result = self
            .mutate(&request, Role::Operator, "cert.revoke", &target, async {
                let reason = crate::acme::revocation_reason(&req.reason)
                    .map_err(Status::invalid_argument)?;
                crate::acme::revoke(&self.shared, &req.id, reason).await?;
                self.order(&req.id).await
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn retry_certificate_order(
        &self,
        request: Request<GetCertificateOrderRequest>,
    ) -> Result<Response<CertificateOrder>, Status> {
        let id = request.get_ref().id.clone();
        let target = format!("certificate-order:{id}");
        let result = self
            .mutate(&request, Role::Operator, "cert.retry", &target, async {
                let order = self.order(&id).await?;
                if order.state == "issued" {
                    return Err(Status::failed_precondition(format!(
                        "order {id} is issued; to replace the certificate, use cert reissue"
                    )));
                }
                self.shared.store.acme_order_retry_now(&id, now()).await?;
                self.shared.acme_wake.notify_one();
                self.order(&id).await
            })
            .await?;
        Ok(Response::new(result))
    }

    async fn list_zones(
        &self,
        request: Request<ListZonesRequest>,
    ) -> Result<Response<ListZonesResponse>, Status> {
        self.read(&request).await?;
        let zones = cloudflare_sites::zones(&self.shared, &request.get_ref().account).await?;
        Ok(Response::new(ListZonesResponse { zones }))
    }
}
