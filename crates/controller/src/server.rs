//! Builds and runs a controller: master key, store, CA, listeners (agent TLS, admin TLS, admin
//! Unix socket), and drains them on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_proto::v1::admin_service_server::AdminServiceServer;
use gatehouse_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{error, info};

use crate::Shared;
use crate::agent_api::AgentApi;
use crate::api::AdminApi;
use crate::ca::{Ca, CaError, CaKind};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::secrets::{MasterKey, SecretError};
use crate::store::{Store, StoreError};
use crate::tls::{self, RevokedAgents};

/// Why the controller could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// A started controller.
#[derive(Debug)]
pub struct Running {
    pub shared: Arc<Shared>,
    pub agent_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `/healthz` and `/metrics`.
    pub http_addr: SocketAddr,
    pub admin_socket: PathBuf,
    /// Where the CA certificate was written, for gatehousectl's `--ca-file`.
    pub ca_file: PathBuf,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Running {
    /// The CA pin agents enroll with.
    pub fn ca_hash(&self) -> &str {
        self.shared.ca.hash()
    }

    /// Waits until `shutdown` is cancelled, then ends every stream and waits for the listeners.
    pub async fn wait(mut self) {
        self.shutdown.cancelled().await;
        info!("shutting down: closing agent streams");
        self.shared.fleet.disconnect_all();
        while self.tasks.join_next().await.is_some() {}
        // Streams and orders end on the same signal; the store outlives every one of them.
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        let _ = std::fs::remove_file(&self.admin_socket);
        self.shared.store.close().await;
        info!("controller stopped");
    }
}

/// Creates the data directory 0700 whatever the umask, and narrows an existing one to that:
/// it holds the store, with the sealed CA key, token hashes and the audit log.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        info!(dir = %dir.display(), was = format!("{mode:o}"), "the data directory is now 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Starts a controller; it runs until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    start_with_clock(config, gatehouse_common::Clock::system(), shutdown).await
}

/// Starts a controller whose decisions follow `clock` (a manual one in tests).
pub async fn start_with_clock(
    config: Config,
    clock: gatehouse_common::Clock,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let path_err = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| StartError::Path { path, source }
    };
    private_dir(&config.data_dir).map_err(path_err(&config.data_dir))?;
    let key = MasterKey::load_or_create(&config.master_key_file)?;
    let store = Store::open(config.database.expose()).await?;
    let ca = Ca::load_or_create(&store, &key, CaKind::Identity, clock.now()).await?;
    let site_ca = Ca::load_or_create(&store, &key, CaKind::Sites, clock.now()).await?;
    let revoked = RevokedAgents::default();
    for id in store.agent_revoked_ids().await? {
        revoked.insert(&id);
    }
    let ca_file = config.data_dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).map_err(path_err(&ca_file))?;
    let site_ca_file = config.data_dir.join("site-ca.pem");
    std::fs::write(&site_ca_file, site_ca.cert_pem()).map_err(path_err(&site_ca_file))?;

    let (chain, server_key) = ca.issue_server(&config.server_names, clock.now())?;
    let agent_tls = tls::agent_server_config(
        ca.cert_der(),
        chain.clone(),
        server_key.clone_key(),
        revoked.clone(),
        config.agent_cert_grace,
    )?;
    let admin_tls = tls::admin_server_config(chain, server_key)?;

    let listen = |what, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                what,
                addr: addr.to_string(),
                source,
            })
    };
    let agent_listener = listen("agent port", config.agent_listen).await?;
    let admin_listener = listen("admin port", config.admin_listen).await?;
    let http_listener = listen("HTTP port", config.http_listen).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(path_err(&config.data_dir))?;
    let agent_addr = agent_listener
        .local_addr()
        .map_err(path_err(&config.data_dir))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(path_err(&config.data_dir))?;
    let socket = bind_admin_socket(&config.admin_socket)?;

    let admin_socket = config.admin_socket.clone();
    let issuance = crate::limit::PerMinute::new(config.issuance_limit);
    let failed_enrollments = crate::limit::PerMinute::new(config.enroll_failure_limit);
    let failed_checkins = crate::limit::PerMinute::new(config.checkin.failure_limit);
    let shared = Arc::new(Shared {
        store,
        ca,
        site_ca,
        fleet: Fleet::default(),
        revoked,
        config: std::sync::RwLock::new(Arc::new(config)),
        master_key: key,
        state_changes: tokio::sync::Mutex::new(()),
        acme_wake: tokio::sync::Notify::new(),
        issuance,
        failed_enrollments,
        failed_checkins,
        last_checkins: Default::default(),
        allowlists_changed: tokio::sync::Notify::new(),
        list_sync: Default::default(),
        allowlist_sets: tokio::sync::watch::Sender::new(Default::default()),
        wg_pending: Default::default(),
        wg_addresses: Default::default(),
        alerts_wake: tokio::sync::Notify::new(),
        tasks: tokio_util::task::TaskTracker::new(),
        clock,
    });

    let mut tasks = JoinSet::new();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    tasks.spawn(crate::health::run(
        shared.clone(),
        health_reporter,
        shutdown.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gatehouse_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptors are valid");
    let agent_service = AgentServiceServer::new(AgentApi::new(shared.clone()));
    let admin_service = AdminServiceServer::new(AdminApi::new(shared.clone()));
    let limits = crate::idle::Limits {
        first_request: shared.config().first_request_timeout,
        idle: shared.config().idle_connection_timeout,
    };
    let agent_incoming = tls::incoming(agent_listener, agent_tls, limits, shutdown.clone());
    let admin_incoming = tls::incoming(admin_listener, admin_tls, limits, shutdown.clone());
    let s = shutdown.clone();
    let agent_health = health.clone();
    tasks.spawn(async move {
        let served = Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .layer(crate::idle::TrackLayer)
            .add_service(agent_health)
            .add_service(agent_service)
            .serve_with_incoming_shutdown(agent_incoming, s.cancelled_owned())
            .await;
        if let Err(e) = served {
            error!("agent port failed: {e}");
        }
    });
    let s = shutdown.clone();
    let admin = admin_service.clone();
    let (admin_health, admin_reflection) = (health.clone(), reflection.clone());
    tasks.spawn(async move {
        let served = Server::builder()
            .layer(crate::idle::TrackLayer)
            .add_service(admin_health)
            .add_service(admin_reflection)
            .add_service(admin)
            .serve_with_incoming_shutdown(admin_incoming, s.cancelled_owned())
            .await;
        if let Err(e) = served {
            error!("admin port failed: {e}");
        }
    });
    let s = shutdown.clone();
    let http = crate::http::service(shared.clone());
    tasks.spawn(async move {
        let served = axum::serve(http_listener, http)
            .with_graceful_shutdown(s.cancelled_owned())
            .await;
        if let Err(e) = served {
            error!("HTTP port failed: {e}");
        }
    });
    let timings = crate::acme::order::Timings {
        propagation: shared.config().acme_propagation_timeout,
        ..Default::default()
    };
    tasks.spawn(crate::acme::worker::run(
        shared.clone(),
        timings,
        shutdown.clone(),
    ));
    tasks.spawn(crate::allowlists::sweep(shared.clone(), shutdown.clone()));
    tasks.spawn(crate::alerts::run(shared.clone(), shutdown.clone()));
    if shared.store.is_postgres() {
        tasks.spawn(crate::fleet::changes::listen(
            shared.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::fleet::history::prune(
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::wireguard::desired::expiry(
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::wireguard::desired::run(
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::allowlists::sync::run(
        shared.clone(),
        shutdown.clone(),
    ));
    let s = shutdown.clone();
    tasks.spawn(async move {
        let served = Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(admin_service)
            .serve_with_incoming_shutdown(
                crate::local::incoming(socket, s.clone()),
                s.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            error!("admin socket failed: {e}");
        }
    });
    info!(
        agent = %agent_addr,
        admin = %admin_addr,
        http = %http_addr,
        socket = %admin_socket.display(),
        ca_hash = %shared.ca.hash(),
        "controller started"
    );
    Ok(Running {
        shared,
        agent_addr,
        admin_addr,
        http_addr,
        admin_socket,
        ca_file,
        tasks,
        shutdown,
    })
}

/// Binds the admin socket: only its owner may connect (mode 0600); a stale socket file left by
/// a previous run is replaced.
fn bind_admin_socket(path: &std::path::Path) -> Result<UnixListener, StartError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| StartError::Path {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}
