//! The Cloudflare client, over HTTP, against the emulator: pagination, records, Origin CA,
//! retries on 429 and 5xx, and refused tokens.

use std::time::{Duration, Instant};

use gatehouse_controller::cloudflare::dns::NewRecord;
use gatehouse_controller::cloudflare::{ApiToken, Client, CloudflareError};
use gatehouse_testkit::cloudflare::Emulator;

const TOKEN: &str = "cf-token-for-tests";

fn setup() -> (Emulator, Client) {
    let emulator = Emulator::start();
    emulator.add_token(TOKEN);
    let client = Client::new(&emulator.api_url, ApiToken::new(TOKEN))
        .with_backoff(Duration::from_millis(20));
    (emulator, client)
}

fn a(name: &str, ip: &str) -> NewRecord {
    NewRecord {
        kind: "A".into(),
        name: name.into(),
        content: ip.into(),
        proxied: false,
        ttl: 60,
        comment: Some("gatehouse".into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zones_records_and_pages() {
    let (emulator, client) = setup();
    let zone_id = emulator.add_zone("example.com");
    emulator.add_zone("example.org");
    assert!(!client.verify_token().await.unwrap().is_empty());
    let zones = client.zones().await.unwrap();
    assert_eq!(zones.len(), 2);
    let zone = client.zone_by_name("example.com").await.unwrap().unwrap();
    assert_eq!(zone.id, zone_id);
    assert!(client.zone_by_name("nope.com").await.unwrap().is_none());

    for i in 0..120 {
        emulator.add_record(&zone_id, "A", &format!("h{i}.example.com"), "192.0.2.1");
    }
    assert_eq!(
        client.records(&zone_id).await.unwrap().len(),
        120,
        "all three pages"
    );

    let created = client
        .create_record(&zone_id, &a("www.example.com", "192.0.2.7"))
        .await
        .unwrap();
    assert_eq!(created.comment.as_deref(), Some("gatehouse"));
    let found = client
        .records_named(&zone_id, "www.example.com", Some("A"))
        .await
        .unwrap();
    assert_eq!(found, vec![created.clone()]);
    let err = client
        .create_record(&zone_id, &a("www.example.com", "192.0.2.7"))
        .await
        .unwrap_err();
    assert!(err.has_code(81058), "{err}");
    assert!(
        err.to_string()
            .contains("An identical record already exists. (code 81058)"),
        "{err}"
    );
    let updated = client
        .update_record(&zone_id, &created.id, &a("www.example.com", "192.0.2.8"))
        .await
        .unwrap();
    assert_eq!(updated.content, "192.0.2.8");
    client.delete_record(&zone_id, &created.id).await.unwrap();
    client.delete_record(&zone_id, &created.id).await.unwrap();
    assert!(
        client
            .records_named(&zone_id, "www.example.com", None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_and_5xx_bursts_are_ridden_out() {
    let (emulator, client) = setup();
    emulator.add_zone("example.com");
    emulator.rate_limit_next(3, 1);
    let started = Instant::now();
    assert_eq!(client.zones().await.unwrap().len(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "Retry-After was honoured"
    );
    assert_eq!(emulator.request_counts().1, 3);

    emulator.fail_next(5, 502);
    assert_eq!(client.zones().await.unwrap().len(), 1);
    emulator.fail_next(5, 503);
    assert!(client.verify_token().await.is_ok());

    // A storm that does not end is an error that says so.
    emulator.fail_next(1000, 500);
    let impatient = client.clone().with_backoff(Duration::from_millis(1));
    let err = impatient.zones().await.unwrap_err();
    assert!(matches!(err, CloudflareError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_revoked_token_is_refused_clearly() {
    let (emulator, _) = setup();
    let bad = Client::new(&emulator.api_url, ApiToken::new("not-a-token"));
    let err = bad.verify_token().await.unwrap_err();
    assert!(
        err.is_auth() && err.to_string().contains("Invalid API Token"),
        "{err}"
    );
    let err = bad.zones().await.unwrap_err();
    assert!(
        err.is_auth() && err.to_string().contains("Authentication error"),
        "{err}"
    );
    emulator.revoke_token(TOKEN);
    let revoked = Client::new(&emulator.api_url, ApiToken::new(TOKEN));
    assert!(revoked.zones().await.unwrap_err().is_auth());
    assert!(
        !format!("{revoked:?}").contains(TOKEN),
        "the token never shows in Debug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_ca_certificates_for_a_host_csr() {
    let (emulator, client) = setup();
    emulator.add_zone("example.com");
    let key = gatehouse_agent::identity::PendingKey::generate_for(
        gatehouse_proto::v1::KeyType::P256,
        &["www.example.com".into()],
    )
    .unwrap();
    let csr_pem = pem_csr(&key.csr_der);
    let cert = client
        .create_origin_certificate(&csr_pem, &["www.example.com".into()], 90)
        .await
        .unwrap();
    key.matches(&cert.certificate).unwrap();
    assert_eq!(cert.hostnames, ["www.example.com"]);
    client.revoke_origin_certificate(&cert.id).await.unwrap();
    assert!(emulator.certificates()[0].revoked_at.is_some());
}

fn pem_csr(der: &[u8]) -> String {
    gatehouse_controller::cloudflare::origin_ca::csr_pem(der)
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnels_from_creation_to_deletion() {
    use gatehouse_controller::cloudflare::tunnels::{IngressRule, OriginRequest};
    let (emulator, client) = setup();
    let account = emulator.account_id();
    let secret = "AQIDBAUGBwgBAgMEBQYHCAECAwQFBgcIAQIDBAUGBwg=";
    let created = client
        .create_tunnel(account, "odoo-acme", secret)
        .await
        .unwrap();
    assert!(
        !format!("{created:?}").contains(&created.token),
        "the token never prints"
    );
    assert_eq!(
        gatehouse_controller::cloudflare::tunnels::token_secret(&created.token).as_deref(),
        Some(secret),
        "the token carries the secret gatehouse chose"
    );
    let again = client
        .create_tunnel(account, "odoo-acme", secret)
        .await
        .unwrap_err();
    assert!(again.has_code(1013), "{again}");
    let found = client
        .tunnel_by_name(account, "odoo-acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.status.as_str()),
        (created.id.as_str(), "inactive")
    );
    assert_eq!(
        client.tunnel_token(account, &created.id).await.unwrap(),
        created.token
    );

    let ingress = vec![
        IngressRule {
            hostname: Some("acme.example.com".into()),
            service: "https://172.16.16.105:8069".into(),
            origin_request: OriginRequest {
                no_tls_verify: true,
                origin_server_name: Some("acme.internal".into()),
                connect_timeout: Some(5),
                ..Default::default()
            },
        },
        IngressRule {
            hostname: None,
            service: "http_status:404".into(),
            origin_request: OriginRequest::default(),
        },
    ];
    assert_eq!(
        client
            .put_tunnel_configuration(account, &created.id, &ingress)
            .await
            .unwrap(),
        1
    );
    let stored = emulator.tunnels()[0].config.clone().unwrap();
    assert_eq!(
        stored["ingress"][0]["originRequest"],
        serde_json::json!({"noTLSVerify": true, "originServerName": "acme.internal", "connectTimeout": 5})
    );
    assert!(stored["ingress"][1].get("hostname").is_none());

    // A connector holds connections: delete is refused until they are dropped.
    let connect = |token: String| {
        let url = format!("{}/connect", emulator.edge_url());
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({"token": token, "client_id": "c1"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(connect(created.token.clone()).await, 200);
    let live = client.tunnel(account, &created.id).await.unwrap();
    assert_eq!(
        (live.status.as_str(), live.connections.len()),
        ("healthy", 4)
    );
    let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let rotated = client
        .rotate_tunnel_secret(account, &created.id, &secret)
        .await
        .unwrap();
    assert_ne!(rotated, created.token);
    assert_eq!(
        connect(created.token.clone()).await,
        401,
        "the old token opens nothing"
    );
    let refused = client
        .delete_tunnel(account, &created.id)
        .await
        .unwrap_err();
    assert!(refused.has_code(1022), "{refused}");
    client
        .delete_tunnel_connections(account, &created.id)
        .await
        .unwrap();
    client.delete_tunnel(account, &created.id).await.unwrap();
    client.delete_tunnel(account, &created.id).await.unwrap();
    assert!(
        client
            .tunnel_by_name(account, "odoo-acme")
            .await
            .unwrap()
            .is_none()
    );
}
