//! `gatehousectl cert …`: certificates on agents and the ACME orders behind them.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use gatehouse_proto::names::{DomainName, ResourceName};
use gatehouse_proto::v1::*;

use super::sites::Key;
use crate::Output;
use crate::args::now;
use crate::client::{Client, explain};
use crate::output::{self, say};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Ask the agent for a new key and certificate now.
    Reissue {
        #[arg(long)]
        agent: String,
        name: String,
    },
    /// ACME orders (one per host and certificate revision) and where each stands.
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
    },
    /// One ACME order: its state, last error, next attempt and DNS-01 records.
    Show { id: String },
    /// Start a failed or waiting ACME order's next attempt now (resets its backoff).
    Retry { id: String },
    /// A certificate (without a site) on each bound host; each host makes its own key.
    Request {
        /// The certificate's name on the hosts (files <name>-<hash>.crt/.key).
        #[arg(long)]
        name: String,
        /// A name it covers (repeatable; *.example.com for a wildcard).
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// The ACME account (see gatehousectl acme account list); short for
        /// `--issuer acme:ACCOUNT`.
        #[arg(long, conflicts_with = "issuer")]
        account: Option<String>,
        /// Who signs it: `acme:ACCOUNT`, or `internal` (the controller's site CA).
        #[arg(long)]
        issuer: Option<String>,
        /// A host it is bound to (repeatable).
        #[arg(long = "agent", required = true)]
        agents: Vec<String>,
        #[arg(long, value_enum, default_value_t = Key::P256)]
        key_type: Key,
    },
    /// Revoke an issued ACME certificate at its CA; a host still using it gets a new one.
    Revoke {
        id: String,
        /// unspecified, key-compromise, superseded, cessation-of-operation.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

pub async fn run(client: &mut Client, cmd: CertCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Reissue { agent, name } => {
            let a = client
                .reissue_certificate(ReissueCertificateRequest {
                    agent_id: agent.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &a, || {
                say!(
                    "certificate {name} on agent {agent}: a new key and certificate are on their way (generation {})",
                    a.desired_generation
                );
            });
            Ok(())
        }
        CertCommand::List { agent } => {
            let orders = client
                .list_certificate_orders(ListCertificateOrdersRequest {
                    agent_id: agent.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .orders;
            let now = now();
            output::list(
                out,
                &orders,
                &[
                    "ID",
                    "AGENT",
                    "CERTIFICATE",
                    "DOMAINS",
                    "STATE",
                    "EXPIRES",
                    "NOTE",
                ],
                |o| {
                    vec![
                        o.id.clone(),
                        o.agent_id.clone(),
                        format!("{} r{}", o.certificate, o.revision),
                        o.domains.join(","),
                        o.state.clone(),
                        if o.not_after > 0 {
                            output::time(o.not_after)
                        } else {
                            "-".into()
                        },
                        order_note(o, now),
                    ]
                },
            );
            Ok(())
        }
        CertCommand::Show { id } => {
            let o = client
                .get_certificate_order(GetCertificateOrderRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            show_order(&o, out);
            Ok(())
        }
        CertCommand::Request {
            name,
            domains,
            account,
            issuer,
            agents,
            key_type,
        } => {
            name.parse::<ResourceName>()
                .map_err(|e| anyhow!("--name: {e}"))?;
            let issuer = match (account, issuer) {
                (Some(account), _) => format!("acme:{account}"),
                (None, Some(issuer)) => issuer,
                (None, None) => {
                    bail!("say who signs it: --account ACME_ACCOUNT or --issuer internal")
                }
            };
            for d in &domains {
                d.parse::<DomainName>()
                    .map_err(|e| anyhow!("--domain {d}: {e}"))?;
            }
            let answer = client
                .request_certificate(RequestCertificateRequest {
                    name: name.clone(),
                    domains,
                    issuer,
                    key_type: match key_type {
                        Key::P256 => KeyType::P256,
                        Key::Rsa2048 => KeyType::Rsa2048,
                    } as i32,
                    agent_ids: agents,
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &answer, || {
                for a in &answer.agents {
                    say!(
                        "certificate {name} on agent {} (generation {}): the host makes a key, \
                         then the order starts; follow it with gatehousectl cert list",
                        a.id,
                        a.desired_generation
                    );
                }
            });
            Ok(())
        }
        CertCommand::Revoke { id, reason } => {
            let o = client
                .revoke_certificate_order(RevokeCertificateOrderRequest { id, reason })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &o, || {
                say!(
                    "certificate {} (serial {}) of order {} revoked; agent {} gets a new one",
                    o.certificate,
                    o.serial,
                    o.id,
                    o.agent_id
                );
            });
            Ok(())
        }
        CertCommand::Retry { id } => {
            let o = client
                .retry_certificate_order(GetCertificateOrderRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &o, || {
                say!("order {}: the next attempt starts now", o.id);
            });
            Ok(())
        }
    }
}

fn order_note(o: &CertificateOrder, now: i64) -> String {
    if o.renewal_overdue {
        return "RENEWAL OVERDUE: in its last third, not renewed".into();
    }
    if o.state == "issued" && o.superseded {
        return "renewed".into();
    }
    if o.state == "issued" && o.renew_at > 0 {
        return format!(
            "renews {} ({})",
            output::relative(o.renew_at, now),
            o.renewal
        );
    }
    if o.state == "failed" {
        return format!(
            "attempt {} failed, next {}: {}",
            o.failures,
            output::relative(o.next_attempt_at, now),
            o.last_error
        );
    }
    String::new()
}

fn show_order(o: &CertificateOrder, out: Output) {
    if out == Output::Json {
        output::json(o);
        return;
    }
    let now = now();
    say!("order:        {}", o.id);
    say!("agent:        {}", o.agent_id);
    say!("certificate:  {} (revision {})", o.certificate, o.revision);
    say!("account:      acme:{}", o.account);
    say!("domains:      {}", o.domains.join(", "));
    say!("state:        {}", o.state);
    if o.state == "issued" {
        say!("serial:       {}", o.serial);
        say!(
            "valid:        {} to {}",
            output::time(o.not_before),
            output::time(o.not_after)
        );
    }
    if !o.last_error.is_empty() {
        say!("last error:   {}", o.last_error);
    }
    if o.state != "issued" && o.failures > 0 {
        say!(
            "next attempt: {} (failure {} in a row)",
            output::relative(o.next_attempt_at, now),
            o.failures
        );
    }
    let note = order_note(o, now);
    if !note.is_empty() && o.state == "issued" {
        say!("note:         {note}");
    }
    for record in &o.txt_records {
        say!("dns-01 txt:   {record}");
    }
}
