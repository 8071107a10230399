//! A real ACME server: Debian's Pebble, with its own TLS listener certificate, validation
//! ports pointed where the test's Caddy listens, and DNS from the test's DNS server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, external};
use crate::{free_port, wait_for};

/// What to configure.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// Where Pebble connects for HTTP-01 and TLS-ALPN-01 (the test's Caddy ports).
    pub http_port: u16,
    pub tls_port: u16,
    /// The DNS server Pebble resolves names with.
    pub dns: SocketAddr,
    /// Certificate lifetime in seconds (Pebble's default when `None`).
    pub validity: Option<u64>,
    /// Leave Pebble's random nonce rejection on, as real CAs reject nonces too.
    pub reject_nonces: bool,
    /// External Account Binding keys (key id, base64url HMAC); when any, EAB is required.
    pub eab: Vec<(String, String)>,
}

/// A running Pebble.
#[derive(Debug)]
pub struct Pebble {
    /// The ACME directory, `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// The management API, `https://127.0.0.1:PORT` (`/roots/0` is the issuing root).
    pub management_url: String,
    /// The CA that signed Pebble's own listener, PEM (what an ACME client trusts).
    pub listener_ca_pem: String,
    /// That CA written to a file readable by anyone (for Caddy's `ca_root`).
    pub listener_ca_file: PathBuf,
    _proc: Proc,
}

impl Pebble {
    /// Starts Pebble on free ports, its files in `dir`; `listen` picks the ACME port (0: any).
    pub fn start(dir: &Path, listen: u16, options: &PebbleOptions) -> Self {
        let bin = external("pebble", &[], "pebble");
        std::fs::create_dir_all(dir).unwrap();
        crate::caddy::open_path(dir);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Pebble listener test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let cert_file = write("cert.pem", &cert.pem());
        let key_file = write("key.pem", &key.serialize_pem());
        let listener_ca_file = write("listener-ca.pem", &ca_cert.pem());
        let port = if listen == 0 { free_port() } else { listen };
        let management = free_port();
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert_file, "privateKey": key_file,
            "httpPort": options.http_port, "tlsPort": options.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if !options.eab.is_empty() {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = options
                .eab
                .iter()
                .map(|(kid, hmac)| (kid.clone(), serde_json::Value::from(hmac.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(v) = options.validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_file = write("pebble-config.json", &config.to_string());
        let mut cmd = Command::new(bin);
        cmd.arg("-config")
            .arg(&config_file)
            .arg("-dnsserver")
            .arg(options.dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env(
                "PEBBLE_WFE_NONCEREJECT",
                if options.reject_nonces { "5" } else { "0" },
            );
        let proc = Proc::spawn("pebble", cmd, &dir.join("pebble.log"));
        wait_for("Pebble's ACME port", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self {
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            management_url: format!("https://127.0.0.1:{management}"),
            listener_ca_pem: ca_cert.pem(),
            listener_ca_file,
            _proc: proc,
        }
    }
}
