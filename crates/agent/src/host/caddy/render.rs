//! A site's Caddyfile snippet, and the one import line the main Caddyfile gets: pure text.

use std::fmt::Write as _;
use std::path::Path;

use gatehouse_proto::spec::{Site, SiteTls};

use crate::host::certs::Installed;

/// The snippet file name of a site.
pub fn file_name(site: &str) -> String {
    format!("{site}.caddy")
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn path_token(path: &Path) -> String {
    quote(&path.display().to_string())
}

/// Renders a site's snippet. `cert` is the installed certificate when the site uses files;
/// `allowed`, when the site uses allowlists, the only client addresses it lets in: Caddy's
/// `remote_ip`, the TCP peer, so no forwarded header can choose it.
pub fn render(site: &Site, cert: Option<&Installed>, allowed: Option<&[String]>) -> String {
    let mut out = format!(
        "# Managed by gatehouse: site {}. Edits here are overwritten.\n",
        site.name
    );
    let addresses: Vec<String> = site
        .domains
        .iter()
        .map(|d| format!("https://{d}:{}", site.port))
        .collect();
    let _ = writeln!(out, "{} {{", addresses.join(", "));
    match (&site.tls, cert) {
        (SiteTls::Certificate(_), Some(c)) => {
            let _ = writeln!(
                out,
                "\ttls {} {}",
                path_token(&c.cert_path),
                path_token(&c.key_path)
            );
        }
        (SiteTls::Certificate(_), None) => {}
        (SiteTls::CaddyInternal, _) => out.push_str("\ttls internal\n"),
        (
            SiteTls::CaddyManaged {
                acme_ca,
                acme_ca_root,
            },
            _,
        ) => {
            if acme_ca.is_some() || acme_ca_root.is_some() {
                out.push_str("\ttls {\n");
                if let Some(ca) = acme_ca {
                    let _ = writeln!(out, "\t\tca {ca}");
                }
                if let Some(root) = acme_ca_root {
                    let _ = writeln!(out, "\t\tca_root {}", quote(root));
                }
                out.push_str("\t}\n");
            }
        }
    }
    if !site.headers.is_empty() {
        out.push_str("\theader {\n");
        for (name, value) in &site.headers {
            let _ = writeln!(out, "\t\t{} {}", name.as_str(), quote(value.as_str()));
        }
        out.push_str("\t}\n");
    }
    if let Some(cidrs) = allowed {
        gate(&mut out, cidrs, &site.trusted_proxies);
    }
    let upstreams: Vec<String> = site.upstreams.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "\treverse_proxy {}", upstreams.join(" "));
    out.push_str("}\n");
    out
}

/// The allowlist gate: 403 to every client outside `cidrs` (everyone when it is empty).
///
/// The client is the TCP peer, except that a peer in `proxies` names it in `CF-Connecting-IP`
/// (which Cloudflare and cloudflared set, overwriting what the client sent). Caddy 2.6 has no
/// `client_ip`, and its `remote_ip forwarded` believes the first `X-Forwarded-For` from anyone:
/// so the gate first makes that header say exactly what it must (the proxy's
/// `CF-Connecting-IP`, or nothing for any other peer, which then counts as itself).
fn gate(out: &mut String, cidrs: &[String], proxies: &[ipnet::IpNet]) {
    if cidrs.is_empty() {
        out.push_str("\trespond \"Forbidden\" 403\n");
        return;
    }
    let allowed = cidrs.join(" ");
    if proxies.is_empty() {
        let _ = writeln!(out, "\t@gatehouse_denied not remote_ip {allowed}");
        out.push_str("\trespond @gatehouse_denied \"Forbidden\" 403\n");
        return;
    }
    let proxies: Vec<String> = proxies.iter().map(ToString::to_string).collect();
    let proxies = proxies.join(" ");
    out.push_str("\troute {\n");
    let _ = writeln!(out, "\t\t@gatehouse_proxy remote_ip {proxies}");
    out.push_str(
        "\t\trequest_header @gatehouse_proxy X-Forwarded-For {http.request.header.CF-Connecting-IP}\n",
    );
    let _ = writeln!(out, "\t\t@gatehouse_direct not remote_ip {proxies}");
    out.push_str("\t\trequest_header @gatehouse_direct -X-Forwarded-For\n");
    let _ = writeln!(
        out,
        "\t\t@gatehouse_denied not remote_ip forwarded {allowed}"
    );
    out.push_str("\t\trespond @gatehouse_denied \"Forbidden\" 403\n");
    out.push_str("\t}\n");
}

/// The line that makes the main Caddyfile read gatehouse's snippets.
pub fn import_line(sites_dir: &Path) -> String {
    format!("import {}/*.caddy", sites_dir.display())
}

/// The Caddyfile with gatehouse's import line, added once at the end; a missing Caddyfile
/// becomes one that only imports the snippets.
pub fn with_import(caddyfile: Option<&str>, sites_dir: &Path) -> String {
    let line = import_line(sites_dir);
    match caddyfile {
        Some(text) if text.lines().any(|l| l.trim() == line) => text.to_owned(),
        Some(text) => {
            let mut out = text.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "\n# Added by gatehouse: its sites live in {}, one file per site.\n{line}\n",
                sites_dir.display()
            ));
            out
        }
        None => format!(
            "# Created by gatehouse. Add your own sites below; gatehouse only manages the files\n\
             # in {}.\n{line}\n",
            sites_dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::v1;

    fn site(tls: v1::site_tls::Mode, port: u32) -> Site {
        let mut spec = v1::SiteSpec {
            name: "www".into(),
            domains: vec!["www.example.com".into(), "example.com".into()],
            upstreams: vec!["127.0.0.1:8080".into(), "[::1]:8081".into()],
            tls: Some(v1::SiteTls { mode: Some(tls) }),
            port,
            ..Default::default()
        };
        spec.response_headers.insert(
            "Strict-Transport-Security".into(),
            "max-age=63072000".into(),
        );
        spec.response_headers
            .insert("X-Frame-Options".into(), "DENY".into());
        Site::try_from(&spec).unwrap()
    }

    fn installed() -> Installed {
        Installed {
            name: "www".into(),
            revision: 0,
            domains: vec![],
            key_type: 0,
            serial: "01".into(),
            not_before: 0,
            not_after: 0,
            sha256: "0123456789abcdef".into(),
            cert_path: "/etc/gatehouse/tls/sites/www-0123456789ab.crt".into(),
            key_path: "/etc/gatehouse/tls/sites/www-0123456789ab.key".into(),
        }
    }

    #[test]
    fn golden_site_with_certificate_files() {
        let s = site(v1::site_tls::Mode::Certificate("www".into()), 0);
        assert_eq!(
            render(&s, Some(&installed()), None),
            include_str!("../../../tests/golden/site-files.caddy")
        );
    }

    #[test]
    fn golden_site_managed_by_caddy() {
        let s = site(
            v1::site_tls::Mode::CaddyManaged(v1::CaddyManaged {
                acme_ca: "https://127.0.0.1:14000/dir".into(),
                acme_ca_root: "/etc/gatehouse/pebble.pem".into(),
            }),
            8443,
        );
        assert_eq!(
            render(&s, None, None),
            include_str!("../../../tests/golden/site-caddy-managed.caddy")
        );
        let s = site(v1::site_tls::Mode::CaddyInternal(true), 8443);
        assert_eq!(
            render(&s, None, None),
            include_str!("../../../tests/golden/site-caddy-internal.caddy")
        );
    }

    #[test]
    fn an_allowlisted_site_answers_403_to_every_other_client() {
        let s = site(v1::site_tls::Mode::CaddyInternal(true), 8443);
        let some = render(
            &s,
            None,
            Some(&["203.0.113.7/32".to_owned(), "2001:db8::/64".to_owned()]),
        );
        assert!(
            some.contains("\t@gatehouse_denied not remote_ip 203.0.113.7/32 2001:db8::/64\n")
                && some.contains("\trespond @gatehouse_denied \"Forbidden\" 403\n"),
            "{some}"
        );
        let mut behind = s.clone();
        behind.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        let proxied = render(&behind, None, Some(&["203.0.113.7/32".to_owned()]));
        assert!(
            proxied.contains(
                "\troute {\n\t\t@gatehouse_proxy remote_ip 127.0.0.1/32\n\t\trequest_header \
                 @gatehouse_proxy X-Forwarded-For {http.request.header.CF-Connecting-IP}\n\t\t\
                 @gatehouse_direct not remote_ip 127.0.0.1/32\n\t\trequest_header \
                 @gatehouse_direct -X-Forwarded-For\n\t\t@gatehouse_denied not remote_ip \
                 forwarded 203.0.113.7/32\n\t\trespond @gatehouse_denied \"Forbidden\" 403\n\t}\n"
            ),
            "{proxied}"
        );
        let none = render(&s, None, Some(&[]));
        assert!(none.contains("\trespond \"Forbidden\" 403\n"), "{none}");
        assert!(!render(&s, None, None).contains("403"));
    }

    #[test]
    fn the_import_line_is_added_once_and_the_users_blocks_stay() {
        let dir = Path::new("/etc/caddy/gatehouse.d");
        let user = "{\n\temail me@example.com\n}\nmine.example.com {\n\trespond \"hi\"\n}";
        let once = with_import(Some(user), dir);
        assert!(once.starts_with(user));
        assert_eq!(
            once.matches("import /etc/caddy/gatehouse.d/*.caddy")
                .count(),
            1
        );
        assert_eq!(with_import(Some(&once), dir), once);
        let fresh = with_import(None, dir);
        assert!(fresh.contains("import /etc/caddy/gatehouse.d/*.caddy"));
    }
}
