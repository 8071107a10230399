//! `gatehousectl acme`: ACME accounts.

use crate::output::say;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use gatehouse_proto::names::ResourceName;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::client::{Client, explain};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum AcmeCommand {
    /// ACME accounts (keys and EAB secrets are stored encrypted).
    #[command(subcommand)]
    Account(AcmeAccountCommand),
}

#[derive(Debug, Subcommand)]
pub enum AcmeAccountCommand {
    /// Register an account at a CA.
    Create {
        /// letsencrypt, letsencrypt-staging, google, zerossl, or an https directory URL.
        #[arg(long)]
        ca: String,
        /// A name for the account (default: the CA's name, or the directory's host).
        #[arg(long)]
        name: Option<String>,
        /// Where the CA sends expiry and policy mail.
        #[arg(long)]
        email: Option<String>,
        /// Accept the CA's terms of service.
        #[arg(long)]
        agree_tos: bool,
        /// External Account Binding key id (ZeroSSL, Google).
        #[arg(long, requires = "eab_hmac_file")]
        eab_kid: Option<String>,
        /// A file holding the EAB HMAC key, base64url as the CA shows it.
        #[arg(long, requires = "eab_kid")]
        eab_hmac_file: Option<PathBuf>,
        /// A PEM file with the roots to trust for the CA's API (private CAs).
        #[arg(long)]
        ca_roots: Option<PathBuf>,
    },
    /// List accounts.
    List,
}

/// The account name used when none is given: the preset, or the directory's host.
fn default_name(ca: &str) -> anyhow::Result<String> {
    let text = match ca.split_once("://") {
        Some((_, rest)) => rest
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .replace('.', "-"),
        None => ca.to_owned(),
    };
    text.parse::<ResourceName>()
        .map(|n| n.to_string())
        .map_err(|e| anyhow!("cannot name the account after {ca:?} ({e}): give --name"))
}

pub async fn run(client: &mut Client, cmd: AcmeCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        AcmeCommand::Account(AcmeAccountCommand::Create {
            ca,
            name,
            email,
            agree_tos,
            eab_kid,
            eab_hmac_file,
            ca_roots,
        }) => {
            if !agree_tos {
                bail!("the CA's terms of service must be accepted: add --agree-tos");
            }
            let name = match name {
                Some(n) => n,
                None => default_name(&ca)?,
            };
            let read = |flag: &str, path: &PathBuf| {
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow!("cannot read {flag} {}: {e}", path.display()))
            };
            let eab_hmac = match &eab_hmac_file {
                Some(p) => read("--eab-hmac-file", p)?.trim().to_owned(),
                None => String::new(),
            };
            let ca_roots_pem = match &ca_roots {
                Some(p) => read("--ca-roots", p)?,
                None => String::new(),
            };
            let a = client
                .create_acme_account(CreateAcmeAccountRequest {
                    name,
                    ca,
                    email: email.unwrap_or_default(),
                    agree_tos,
                    eab_kid: eab_kid.unwrap_or_default(),
                    eab_hmac,
                    ca_roots_pem,
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &a, || {
                say!(
                    "ACME account {} created at {}{}; use it with --tls acme:{}",
                    a.name,
                    a.directory_url,
                    if a.eab_kid.is_empty() {
                        String::new()
                    } else {
                        format!(" (bound to EAB key {})", a.eab_kid)
                    },
                    a.name
                );
            });
        }
        AcmeCommand::Account(AcmeAccountCommand::List) => {
            let accounts = client
                .list_acme_accounts(ListAcmeAccountsRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .accounts;
            output::list(
                out,
                &accounts,
                &["NAME", "DIRECTORY", "EMAIL", "EAB KID", "CREATED"],
                |a| {
                    vec![
                        a.name.clone(),
                        a.directory_url.clone(),
                        a.email.clone(),
                        a.eab_kid.clone(),
                        output::time(a.created_at),
                    ]
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_named_after_their_ca() {
        assert_eq!(default_name("letsencrypt").unwrap(), "letsencrypt");
        assert_eq!(
            default_name("https://127.0.0.1:14000/dir").unwrap(),
            "127-0-0-1"
        );
        assert_eq!(
            default_name("https://ca.example.com/acme").unwrap(),
            "ca-example-com"
        );
    }
}
