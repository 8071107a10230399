//! Caddy sites in the one resource shape: the snippet files there now, a pure plan (the file-set
//! diff between the rendered snippets and those files), then one Caddy transaction
//! ([`Caddy::apply`]: validate, swap, reload, check the served certificate, roll back on any
//! failure). A site waiting for its certificate keeps serving its old snippet until it comes.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_proto::spec::{self, SiteTls};

use super::{Item, Outcome, Resource, failed, ok, pending};
use crate::host::caddy::{self, Caddy, ServedCheck};
use crate::host::certs::Installed;
use crate::host::files::{self, FileChange};

/// What the desired state asks: the sites, the certificates usable for them now, and the
/// entries of the allowlists they use (as last received).
#[derive(Debug, Clone)]
pub struct Desired {
    pub sites: Vec<spec::Site>,
    pub usable: BTreeMap<String, Installed>,
    pub allowlists: BTreeMap<String, Vec<String>>,
}

impl Desired {
    /// The addresses a site lets in (`None`: everyone); an allowlist whose entries have not
    /// arrived yet lets no one in.
    fn allowed(&self, site: &spec::Site) -> Option<Vec<String>> {
        if site.allow.is_empty() {
            return None;
        }
        let mut all: BTreeSet<String> = BTreeSet::new();
        for list in &site.allow {
            all.extend(
                self.allowlists
                    .get(list.as_str())
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        Some(all.into_iter().collect())
    }

    /// The first allowlist of a site whose entries have not arrived.
    fn missing_list<'a>(&self, site: &'a spec::Site) -> Option<&'a str> {
        site.allow
            .iter()
            .map(|l| l.as_str())
            .find(|l| !self.allowlists.contains_key(*l))
    }

    /// The certificate a site waits for, when it is not usable yet.
    fn waiting_for<'a>(&self, site: &'a spec::Site) -> Option<&'a str> {
        match &site.tls {
            SiteTls::Certificate(name) if !self.usable.contains_key(name.as_str()) => {
                Some(name.as_str())
            }
            _ => None,
        }
    }

    fn certificate(&self, site: &spec::Site) -> Option<&Installed> {
        match &site.tls {
            SiteTls::Certificate(name) => self.usable.get(name.as_str()),
            _ => None,
        }
    }

    /// The snippet files wanted: each site rendered, or its old file while it waits for its
    /// certificate.
    fn files(&self, observed: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for site in &self.sites {
            let file = caddy::file_name(site.name.as_str());
            if self.waiting_for(site).is_some() {
                if let Some(old) = observed.get(&file) {
                    out.insert(file, old.clone());
                }
                continue;
            }
            out.insert(
                file,
                caddy::render(site, self.certificate(site), self.allowed(site).as_deref()),
            );
        }
        out
    }

    /// What must be served after a reload: each site with a certificate of ours.
    fn checks(&self) -> Vec<ServedCheck> {
        self.sites
            .iter()
            .filter(|site| self.waiting_for(site).is_none())
            .filter_map(|site| {
                let cert = self.certificate(site)?;
                Some(ServedCheck {
                    site: site.name.to_string(),
                    domain: site.domains[0].clone(),
                    port: site.port,
                    serial: cert.serial.clone(),
                })
            })
            .collect()
    }
}

/// The sites of one Caddy.
#[derive(Debug)]
pub struct Sites {
    caddy: Caddy,
}

impl Sites {
    /// Sites served by `caddy`.
    pub fn new(caddy: Caddy) -> Self {
        Self { caddy }
    }
}

impl Resource for Sites {
    type Desired = Desired;
    type Observed = BTreeMap<String, String>;
    type Change = FileChange;

    async fn observe(&self) -> Result<Self::Observed, String> {
        self.caddy.observe().map_err(|e| e.to_string())
    }

    fn plan(desired: &Desired, observed: &Self::Observed) -> Vec<FileChange> {
        files::diff(&desired.files(observed), observed)
    }

    async fn apply(&self, desired: &Desired, changes: Vec<FileChange>, out: &mut Outcome) {
        let result = if changes.is_empty() {
            tracing::debug!("Caddy sites up to date");
            Ok(())
        } else {
            self.caddy.apply(&changes, &desired.checks()).await
        };
        let changed: BTreeSet<&str> = changes.iter().map(FileChange::file).collect();
        for site in &desired.sites {
            let item: Item = ("site", site.name.to_string());
            if let Some(name) = desired.waiting_for(site) {
                out.results
                    .push(pending(item, format!("waiting for certificate {name}")));
                continue;
            }
            let file = caddy::file_name(site.name.as_str());
            out.results
                .push(match (&result, desired.missing_list(site)) {
                    (Err(e), _) if changed.contains(file.as_str()) => failed(item, e),
                    (_, Some(list)) => pending(
                        item,
                        format!(
                            "serving 403 to everyone until the entries of allowlist {list} arrive"
                        ),
                    ),
                    _ => ok(item),
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::v1::{SiteSpec, SiteTls as WireTls, site_tls};

    fn site(name: &str, upstream: &str, certificate: Option<&str>) -> spec::Site {
        let mode = match certificate {
            Some(c) => site_tls::Mode::Certificate(c.into()),
            None => site_tls::Mode::CaddyInternal(true),
        };
        spec::Site::try_from(&SiteSpec {
            name: name.into(),
            domains: vec![format!("{name}.example.com")],
            upstreams: vec![upstream.into()],
            tls: Some(WireTls { mode: Some(mode) }),
            ..Default::default()
        })
        .unwrap()
    }

    fn cert(name: &str) -> Installed {
        Installed {
            name: name.into(),
            revision: 1,
            domains: vec![],
            key_type: 0,
            serial: "0a".into(),
            not_before: 0,
            not_after: 1,
            sha256: "ab".into(),
            cert_path: format!("/tls/{name}.crt").into(),
            key_path: format!("/tls/{name}.key").into(),
        }
    }

    /// What, the sites, the usable certificates, the files there, the plan.
    type Case = (
        &'static str,
        Vec<spec::Site>,
        BTreeMap<String, Installed>,
        BTreeMap<String, String>,
        Vec<FileChange>,
    );

    #[test]
    fn plans() {
        let a = site("a", "127.0.0.1:80", None);
        let rendered = |s: &spec::Site, c: Option<&Installed>| caddy::render(s, c, None);
        let b = site("b", "127.0.0.1:81", Some("b"));
        let usable = BTreeMap::from([("b".to_owned(), cert("b"))]);
        let write = |s: &spec::Site, c: Option<&Installed>| FileChange::Write {
            file: caddy::file_name(s.name.as_str()),
            content: rendered(s, c),
        };
        let files = |items: &[(&str, String)]| -> BTreeMap<String, String> {
            items
                .iter()
                .map(|(f, c)| (f.to_string(), c.clone()))
                .collect()
        };
        let cases: Vec<Case> = vec![
            (
                "a new site",
                vec![a.clone()],
                BTreeMap::new(),
                files(&[]),
                vec![write(&a, None)],
            ),
            (
                "up to date",
                vec![a.clone()],
                BTreeMap::new(),
                files(&[("a.caddy", rendered(&a, None))]),
                vec![],
            ),
            (
                "a snippet deleted by hand is written again",
                vec![a.clone(), b.clone()],
                usable.clone(),
                files(&[("a.caddy", rendered(&a, None))]),
                vec![write(&b, Some(&cert("b")))],
            ),
            (
                "a snippet edited by hand is written again",
                vec![a.clone()],
                BTreeMap::new(),
                files(&[("a.caddy", "a.example.com {\n}\n".into())]),
                vec![write(&a, None)],
            ),
            (
                "a removed site's snippet goes",
                vec![],
                BTreeMap::new(),
                files(&[("a.caddy", rendered(&a, None))]),
                vec![FileChange::Remove {
                    file: "a.caddy".into(),
                }],
            ),
            (
                "waiting for its certificate: the old snippet stays",
                vec![b.clone()],
                BTreeMap::new(),
                files(&[("b.caddy", "old".into())]),
                vec![],
            ),
            (
                "waiting for its certificate, no old snippet: nothing yet",
                vec![b.clone()],
                BTreeMap::new(),
                files(&[]),
                vec![],
            ),
        ];
        for (what, sites, usable, observed, expected) in cases {
            let desired = Desired {
                sites,
                usable,
                allowlists: BTreeMap::new(),
            };
            assert_eq!(Sites::plan(&desired, &observed), expected, "{what}");
        }
    }

    #[test]
    fn only_sites_with_a_certificate_of_ours_are_checked_after_a_reload() {
        let desired = Desired {
            sites: vec![
                site("a", "127.0.0.1:80", None),
                site("b", "127.0.0.1:81", Some("b")),
                site("c", "127.0.0.1:82", Some("c")),
            ],
            usable: BTreeMap::from([("b".to_owned(), cert("b"))]),
            allowlists: BTreeMap::new(),
        };
        let checks = desired.checks();
        assert_eq!(checks.len(), 1);
        assert_eq!(
            (checks[0].site.as_str(), checks[0].serial.as_str()),
            ("b", "0a")
        );
    }
}
