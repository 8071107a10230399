//! The admin gRPC API. Callers are root on the local Unix socket, or bearer API tokens over TLS
//! with a role. The table at the bottom is the API at a glance: each call, the role it needs,
//! the action it is audited as (every mutating call, refusals included), and the feature file
//! that serves it. Handlers return [`Error`]; [`status`] is the one place that knows gRPC codes.

mod acme;
pub(crate) mod agents;
pub(crate) mod alerts;
pub(crate) mod allowlists;
mod audit;
mod backup;
pub(crate) mod certificates;
mod cloudflare;
pub(crate) mod sites;
mod tokens;
pub(crate) mod tunnels;
mod ui;
pub(crate) mod wireguard;

use std::future::Future;
use std::sync::Arc;

use gatehouse_proto::names::Role;
use gatehouse_proto::v1::admin_service_server::AdminService;
use gatehouse_proto::v1::*;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::Shared;
use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::secrets::{API_PREFIX, Token};
use crate::store::StoreError;

/// The service.
#[derive(Debug, Clone)]
pub struct AdminApi {
    shared: Arc<Shared>,
}

/// What a streaming call answers with.
pub type ItemStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What an audited request is about, as its audit entry names it.
trait Audited {
    /// What the call answers.
    type Response;
    /// The target as the request names it (`agent:ID/site:NAME`).
    fn target(&self) -> String;
    /// A detail the action carries (`agent.rollback(to=3)`).
    fn detail(&self) -> Option<String> {
        None
    }
    /// The target once done, when the call made it (a new token's id).
    fn made(_response: &Self::Response) -> Option<String> {
        None
    }
}

/// A domain error as a gRPC status.
pub fn status(e: Error) -> Status {
    match e {
        Error::Invalid(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Exists(m) => Status::already_exists(m),
        Error::Precondition(m) => Status::failed_precondition(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Exhausted(m) => Status::resource_exhausted(m),
        Error::Internal(m) => Status::internal(m),
        Error::Store(e) => e.into(),
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        status(e)
    }
}

/// A store failure is logged here; callers are told to try again, not given the details.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        warn!("store error: {e}");
        Status::unavailable("the controller's store is unavailable; try again")
    }
}

impl AdminApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Identifies the caller.
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
        let token =
            Token::parse(API_PREFIX, text).map_err(|e| Status::unauthenticated(e.to_string()))?;
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
        self.shared
            .store
            .api_token_touch(&row.id, self.shared.now())
            .await?;
        Ok(Actor::Token {
            id: row.id,
            name: row.name,
            role,
        })
    }

    /// Runs a read for a caller holding at least `need`.
    async fn read<R>(
        &self,
        actor: &Actor,
        need: Role,
        action: &str,
        work: impl Future<Output = Result<R>>,
    ) -> Result<R, Status> {
        authorize(actor, need, action)?;
        Ok(work.await?)
    }

    /// Runs a mutation for a caller holding at least `need`, and audits it whatever the outcome.
    async fn mutate<Q, F>(
        &self,
        actor: &Actor,
        need: Role,
        action: &str,
        request: Q,
        work: impl FnOnce(Q) -> F,
    ) -> Result<Q::Response, Status>
    where
        Q: Audited,
        F: Future<Output = Result<Q::Response>>,
    {
        let mut target = request.target();
        let action = match request.detail() {
            Some(detail) => format!("{action}({detail})"),
            None => action.to_owned(),
        };
        let result = match authorize(actor, need, &action) {
            Ok(()) => work(request).await.map_err(status),
            Err(refused) => Err(refused),
        };
        if let Some(made) = result.as_ref().ok().and_then(Q::made) {
            target = made;
        }
        let error = result.as_ref().err().map(Status::message);
        crate::audit::record(&self.shared, actor, &action, &target, error).await;
        result
    }
}

fn authorize(actor: &Actor, need: Role, action: &str) -> Result<(), Status> {
    if actor.role() < need {
        return Err(Status::permission_denied(format!(
            "role {} cannot {action}: it needs {need} or above",
            actor.role()
        )));
    }
    Ok(())
}

/// An agent id from a request, checked.
fn agent_id_arg(id: &str) -> Result<String> {
    Ok(id.parse::<gatehouse_proto::names::AgentId>()?.to_string())
}

/// The admin API, one line per call: `rpc(Request) -> Response: role [+ actor] [audit
/// "action"] => feature;`, then the calls that answer with a stream: `rpc(Request) -> stream
/// Stream of Item: role audit "action" => feature;`. The handler is `feature::rpc(&Shared,
/// Request)` (for a stream it returns every item), or `feature::rpc(&Shared, &Actor, Request)`
/// with `+ actor`; audited requests implement [`Audited`] next to it.
macro_rules! admin_api {
    (
        unary {
            $($rpc:ident($req:ty) -> $resp:ty: $role:ident $(+ $who:ident)? $(audit $action:literal)? => $feature:ident;)*
        }
        streams {
            $($srpc:ident($sreq:ty) -> stream $stream:ident of $item:ty: $srole:ident $(audit $saction:literal)? => $sfeature:ident;)*
        }
    ) => {
        #[tonic::async_trait]
        impl AdminService for AdminApi {
            $(
                async fn $rpc(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let actor = self.caller(&request).await?;
                    let request = request.into_inner();
                    admin_api!(@run self, actor, request, $role, $feature::$rpc, $rpc, [$($who)?] $(, $action)?)
                        .map(Response::new)
                }
            )*
            $(
                type $stream = ItemStream<$item>;

                async fn $srpc(&self, request: Request<$sreq>) -> Result<Response<Self::$stream>, Status> {
                    let actor = self.caller(&request).await?;
                    let request = request.into_inner();
                    let stream: Self::$stream = admin_api!(@run self, actor, request, $srole, $sfeature::$srpc, $srpc, [] $(, $saction)?)?;
                    Ok(Response::new(stream))
                }
            )*
        }

        /// The role each call needs, by method name.
        pub const ROLES: &[(&str, Role)] = &[
            $((stringify!($rpc), Role::$role),)*
            $((stringify!($srpc), Role::$srole),)*
        ];
    };
    (@run $api:ident, $actor:ident, $request:ident, $role:ident, $handler:path, $rpc:ident, []) => {
        $api.read(&$actor, Role::$role, stringify!($rpc), $handler(&$api.shared, $request)).await
    };
    (@run $api:ident, $actor:ident, $request:ident, $role:ident, $handler:path, $rpc:ident, [$who:ident]) => {
        $api.read(&$actor, Role::$role, stringify!($rpc), $handler(&$api.shared, &$actor, $request)).await
    };
    (@run $api:ident, $actor:ident, $request:ident, $role:ident, $handler:path, $rpc:ident, [], $action:literal) => {
        $api.mutate(&$actor, Role::$role, $action, $request, |r| $handler(&$api.shared, r)).await
    };
    (@run $api:ident, $actor:ident, $request:ident, $role:ident, $handler:path, $rpc:ident, [$who:ident], $action:literal) => {
        $api.mutate(&$actor, Role::$role, $action, $request, |r| $handler(&$api.shared, &$actor, r)).await
    };
}

admin_api! {
    unary {
        create_join_token(CreateJoinTokenRequest) -> CreateJoinTokenResponse: Operator audit "token.create" => tokens;
        list_join_tokens(ListJoinTokensRequest) -> ListJoinTokensResponse: Viewer => tokens;
        revoke_join_token(RevokeJoinTokenRequest) -> RevokeJoinTokenResponse: Operator audit "token.revoke" => tokens;
        create_api_token(CreateApiTokenRequest) -> CreateApiTokenResponse: Admin audit "apitoken.create" => tokens;
        list_api_tokens(ListApiTokensRequest) -> ListApiTokensResponse: Viewer => tokens;
        revoke_api_token(RevokeApiTokenRequest) -> RevokeApiTokenResponse: Admin audit "apitoken.revoke" => tokens;

        list_agents(ListAgentsRequest) -> ListAgentsResponse: Viewer => agents;
        get_agent(GetAgentRequest) -> Agent: Viewer => agents;
        get_agent_status(GetAgentRequest) -> AgentStatus: Viewer => agents;
        revoke_agent(RevokeAgentRequest) -> Agent: Operator audit "agent.revoke" => agents;
        set_agent_labels(SetAgentLabelsRequest) -> Agent: Operator audit "agent.label" => agents;
        label_agents(LabelAgentsRequest) -> LabelAgentsResponse: Operator audit "agents.label" => agents;
        rollback_agent(RollbackAgentRequest) -> Agent: Operator audit "agent.rollback" => agents;

        list_audit(ListAuditRequest) -> ListAuditResponse: Viewer => audit;

        put_site(PutSiteRequest) -> Site: Operator audit "site.put" => sites;
        list_sites(ListSitesRequest) -> ListSitesResponse: Viewer => sites;
        get_site(GetSiteRequest) -> Site: Viewer => sites;
        delete_site(GetSiteRequest) -> Site: Operator audit "site.delete" => sites;

        reissue_certificate(ReissueCertificateRequest) -> Agent: Operator audit "certificate.reissue" => certificates;
        request_certificate(RequestCertificateRequest) -> RequestCertificateResponse: Operator audit "cert.request" => certificates;
        list_certificate_orders(ListCertificateOrdersRequest) -> ListCertificateOrdersResponse: Viewer => certificates;
        get_certificate_order(GetCertificateOrderRequest) -> CertificateOrder: Viewer => certificates;
        retry_certificate_order(GetCertificateOrderRequest) -> CertificateOrder: Operator audit "cert.retry" => certificates;
        revoke_certificate_order(RevokeCertificateOrderRequest) -> CertificateOrder: Operator audit "cert.revoke" => certificates;

        add_cloudflare_account(AddCloudflareAccountRequest) -> CloudflareAccount: Admin audit "cloudflare.account.add" => cloudflare;
        list_cloudflare_accounts(ListCloudflareAccountsRequest) -> ListCloudflareAccountsResponse: Viewer => cloudflare;
        list_zones(ListZonesRequest) -> ListZonesResponse: Viewer => cloudflare;

        create_acme_account(CreateAcmeAccountRequest) -> AcmeAccount: Admin audit "acme.account.create" => acme;
        list_acme_accounts(ListAcmeAccountsRequest) -> ListAcmeAccountsResponse: Viewer => acme;

        create_tunnel(CreateTunnelRequest) -> Tunnel: Operator audit "tunnel.create" => tunnels;
        list_tunnels(ListTunnelsRequest) -> ListTunnelsResponse: Viewer => tunnels;
        get_tunnel(GetTunnelRequest) -> Tunnel: Viewer => tunnels;
        add_tunnel_route(TunnelRouteRequest) -> Tunnel: Operator audit "tunnel.route.add" => tunnels;
        remove_tunnel_route(TunnelRouteRequest) -> Tunnel: Operator audit "tunnel.route.remove" => tunnels;
        restart_tunnel(GetTunnelRequest) -> Tunnel: Operator audit "tunnel.restart" => tunnels;
        rotate_tunnel(GetTunnelRequest) -> Tunnel: Operator audit "tunnel.rotate" => tunnels;
        delete_tunnel(DeleteTunnelRequest) -> Tunnel: Operator audit "tunnel.delete" => tunnels;

        create_allowlist(CreateAllowlistRequest) -> Allowlist: Operator audit "allowlist.create" => allowlists;
        list_allowlists(ListAllowlistsRequest) -> ListAllowlistsResponse: Viewer => allowlists;
        get_allowlist(GetAllowlistRequest) -> Allowlist: Viewer => allowlists;
        delete_allowlist(GetAllowlistRequest) -> Allowlist: Operator audit "allowlist.delete" => allowlists;
        add_allowlist_device(AllowlistDeviceRequest) -> AddAllowlistDeviceResponse: Operator audit "allowlist.device.add" => allowlists;
        revoke_allowlist_device(RevokeAllowlistDeviceRequest) -> AllowlistDevice: Operator audit "allowlist.device.revoke" => allowlists;
        add_allowlist_entry(AddAllowlistEntryRequest) -> Allowlist: Operator audit "allowlist.entry.add" => allowlists;
        remove_allowlist_entry(RemoveAllowlistEntryRequest) -> Allowlist: Operator audit "allowlist.entry.remove" => allowlists;

        create_wg_network(CreateWgNetworkRequest) -> WgNetwork: Operator audit "wg.network.create" => wireguard;
        list_wg_networks(ListWgNetworksRequest) -> ListWgNetworksResponse: Viewer => wireguard;
        get_wg_network(GetWgNetworkRequest) -> WgNetwork: Viewer => wireguard;
        delete_wg_network(GetWgNetworkRequest) -> WgNetwork: Operator audit "wg.network.delete" => wireguard;
        add_wg_host(AddWgHostRequest) -> WgPeer: Operator audit "wg.host.add" => wireguard;
        add_wg_client(AddWgClientRequest) -> AddWgClientResponse: Operator audit "wg.client.add" => wireguard;
        remove_wg_peer(RemoveWgPeerRequest) -> WgPeer: Operator audit "wg.peer.remove" => wireguard;
        get_wg_status(GetWgStatusRequest) -> GetWgStatusResponse: Viewer => wireguard;
        rotate_wg_host_key(RotateWgHostKeyRequest) -> WgPeer: Operator audit "wg.host.rotate-key" => wireguard;

        list_alerts(ListAlertsRequest) -> ListAlertsResponse: Viewer => alerts;
        create_silence(CreateSilenceRequest) -> Silence: Operator + actor audit "alert.silence" => alerts;
        list_silences(ListSilencesRequest) -> ListSilencesResponse: Viewer => alerts;
        expire_silence(ExpireSilenceRequest) -> Silence: Operator audit "alert.silence.expire" => alerts;
        create_ui_login(CreateUiLoginRequest) -> CreateUiLoginResponse: Viewer + actor audit "ui.login" => ui;
    }

    streams {
        create_backup(CreateBackupRequest) -> stream CreateBackupStream of BackupChunk: Admin audit "backup.create" => backup;
        get_tunnel_logs(GetTunnelLogsRequest) -> stream GetTunnelLogsStream of TunnelLogLines: Viewer => tunnels;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_has_one_role_and_mutations_need_more_than_viewer() {
        let mut names: Vec<&str> = ROLES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ROLES.len(), "a call listed twice");
        for (name, role) in ROLES {
            // A sign-in link carries its caller's own role, so any role may make one.
            let reads =
                name.starts_with("list_") || name.starts_with("get_") || *name == "create_ui_login";
            assert_eq!(*role == Role::Viewer, reads, "{name} needs {role}");
        }
    }
}
