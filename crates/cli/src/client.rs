//! The connection to the admin API: the local socket, or TLS with a bearer token.

use anyhow::{Context, anyhow};
use gatehouse_common::transport::{self, ControllerUrl};
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Cli;

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// Connects as the command line says.
pub async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let (channel, bearer) = match &cli.controller {
        Some(url) => {
            let url = ControllerUrl::parse(url, 7444).map_err(|e| anyhow!("--controller: {e}"))?;
            let ca_file = cli
                .ca_file
                .as_ref()
                .ok_or_else(|| anyhow!("--controller needs --ca-file (the controller's ca.pem)"))?;
            let ca = std::fs::read_to_string(ca_file)
                .with_context(|| format!("cannot read --ca-file {}", ca_file.display()))?;
            let token = cli.token.as_ref().ok_or_else(|| {
                anyhow!("--controller needs an API token: --token or GATEHOUSE_TOKEN")
            })?;
            let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
                .map_err(|_| anyhow!("the API token has characters a token never has"))?;
            let tls = transport::client_config(&ca).context("--ca-file")?;
            let channel = transport::tls_channel(&url, tls).await.map_err(|e| {
                anyhow!(
                    "cannot reach the admin API at {url}: {}",
                    gatehouse_common::error_chain(&e)
                )
            })?;
            (channel, Some(value))
        }
        None => {
            let channel = transport::unix_channel(cli.socket.clone()).await.map_err(|e| {
                anyhow!(
                    "cannot reach the admin socket {}: {} (is the controller running here, and are you root? \
                     Or use --controller, --ca-file and --token)",
                    cli.socket.display(),
                    gatehouse_common::error_chain(&e)
                )
            })?;
            (channel, None)
        }
    };
    Ok(AdminServiceClient::with_interceptor(
        channel,
        Bearer(bearer),
    ))
}

/// Turns a refusal into a message that says what to do.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => " (check the API token)",
        tonic::Code::PermissionDenied => " (ask an admin for a token with a higher role)",
        // Only when no answer came: a controller that answered (its response carries
        // headers) is running, and its message says what is wrong.
        tonic::Code::Unavailable if status.metadata().is_empty() => " (is the controller running?)",
        _ => "",
    };
    anyhow!("{}{hint}", status.message())
}
