//! Sign-in links to the status page.

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::audit::Actor;
use crate::error::{Error, Result};

impl Audited for CreateUiLoginRequest {
    type Response = CreateUiLoginResponse;
    fn target(&self) -> String {
        "ui".into()
    }
}

pub(super) async fn create_ui_login(
    shared: &Shared,
    actor: &Actor,
    _req: CreateUiLoginRequest,
) -> Result<CreateUiLoginResponse> {
    let config = shared.config();
    if !config.ui_enabled {
        return Err(Error::Precondition(
            "the status page is off (ui_enabled = false in controller.toml)".into(),
        ));
    }
    let (url, expires_at) = crate::http::ui::login_link(shared, actor).await?;
    Ok(CreateUiLoginResponse { url, expires_at })
}
