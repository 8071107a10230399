//! The identity certificate renewed: over the stream before it expires (checked with a fresh
//! connection before it replaces the current one), or by a grace renewal after an outage.

use gatehouse_common::error_chain;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;
use gatehouse_proto::v1::{RenewRequest, WhoAmIRequest};
use tracing::info;

use crate::identity::{Identity, PendingKey};
use crate::runtime::{Agent, SessionError};
use crate::transport;

impl Agent {
    /// Checks a renewed certificate with a fresh connection before replacing the current one.
    pub(crate) async fn promote(
        &self,
        key: PendingKey,
        chain_pem: &str,
        ca: &str,
    ) -> Result<Identity, String> {
        let new = key.complete(chain_pem)?;
        let config = new.client_config(ca).map_err(|e| e.to_string())?;
        let channel = transport::tls_channel(&self.controller(), config)
            .await
            .map_err(|e| error_chain(&e))?;
        let seen = AgentServiceClient::new(channel)
            .who_am_i(WhoAmIRequest {})
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        if seen.agent_id != new.agent_id.as_str() {
            return Err(format!("the controller sees {} instead", seen.agent_id));
        }
        new.save(&self.paths).map_err(|e| e.to_string())?;
        info!(serial = %new.info.serial, not_after = new.info.not_after, "identity certificate renewed");
        self.update_status(|s| {
            s.identity_serial = new.info.serial.clone();
            s.identity_not_after = new.info.not_after;
            s.identity_renewals += 1;
        });
        Ok(new)
    }

    /// Renews a certificate that expired while the controller was away (grace renewal).
    pub(crate) async fn renew_expired(
        &self,
        current: &Identity,
        ca: &str,
    ) -> Result<Identity, SessionError> {
        info!("the identity certificate has expired; asking for a grace renewal");
        let channel = transport::tls_channel(&self.controller(), current.client_config(ca)?)
            .await
            .map_err(|e| SessionError::Connect(error_chain(&e)))?;
        let key = PendingKey::generate()?;
        let answer = AgentServiceClient::new(channel)
            .renew(RenewRequest {
                csr_der: key.csr_der.clone(),
            })
            .await
            .map_err(|s| SessionError::Refused(s.message().to_owned()))?
            .into_inner();
        let new = key
            .complete(&answer.certificate_pem)
            .map_err(SessionError::Refused)?;
        new.save(&self.paths)?;
        self.update_status(|s| {
            s.identity_serial = new.info.serial.clone();
            s.identity_not_after = new.info.not_after;
            s.identity_renewals += 1;
        });
        Ok(new)
    }
}
