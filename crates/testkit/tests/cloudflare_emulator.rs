//! The emulator against the reference shapes in ../shared/cloudflare, its DNS server, and its
//! fault injection.

use std::time::Duration;

use gatehouse_testkit::cloudflare::Emulator;
use gatehouse_testkit::cloudflare_schema as schema;
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789";

struct Api {
    emulator: Emulator,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn new() -> Self {
        let emulator = Emulator::start();
        emulator.add_token(TOKEN);
        Self {
            emulator,
            client: reqwest::Client::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// A request; returns status, headers and JSON body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!("{}{path}", self.emulator.api_url);
        let mut req = self
            .client
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.rt.block_on(async {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.json().await.unwrap())
        })
    }

    /// A request whose answer must match the reference schema of `op` for its status.
    fn conformant(&self, method: &str, op: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, json) = self.call(method, path, body, TOKEN);
        let schema = schema::response_schema(method, op, status)
            .unwrap_or_else(|| panic!("no reference schema for {method} {op} {status}"));
        if status < 300 {
            schema::check(&json, &schema)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{json:#}"));
        } else {
            assert_eq!(json["success"], false);
            assert!(json["result"].is_null());
            assert!(
                json["errors"][0]["code"].as_u64().unwrap() >= 1000,
                "{json}"
            );
        }
        (status, json)
    }
}

fn csr(ecc: bool, hostnames: &[&str]) -> String {
    let key = if ecc {
        rcgen::KeyPair::generate().unwrap()
    } else {
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap()
    };
    let names: Vec<String> = hostnames.iter().map(|h| (*h).to_owned()).collect();
    rcgen::CertificateParams::new(names)
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

#[test]
fn every_answer_follows_the_reference_shapes() {
    let api = Api::new();
    let zone = api.emulator.add_zone("example.com");
    api.emulator.add_zone("other.org");

    let (_, zones) = api.conformant("GET", "/zones", "/zones?name=example.com", None);
    assert_eq!(zones["result"].as_array().unwrap().len(), 1);
    assert_eq!(zones["result_info"]["total_count"], 1);
    api.conformant("GET", "/zones/{zone_id}", &format!("/zones/{zone}"), None);
    let (s, missing) = api.conformant("GET", "/zones/{zone_id}", "/zones/0000", None);
    assert_eq!(s, 404);
    assert_eq!(missing["errors"][0]["code"], 7003);

    let records = "/zones/{zone_id}/dns_records";
    let one = "/zones/{zone_id}/dns_records/{dns_record_id}";
    let path = format!("/zones/{zone}/dns_records");
    let (_, a) = api.conformant("POST", records, &path, Some(json!({"type": "A", "name": "www.example.com", "content": "192.0.2.1", "proxied": true, "ttl": 1, "comment": "managed"})));
    let id = a["result"]["id"].as_str().unwrap().to_owned();
    assert_eq!(a["result"]["proxied"], true);
    api.conformant(
        "POST",
        records,
        &path,
        Some(json!({"type": "TXT", "name": "_acme-challenge.www", "content": "token", "ttl": 60})),
    );
    // Duplicates and conflicts, as Cloudflare answers them.
    let (s, dup) = api.conformant(
        "POST",
        records,
        &path,
        Some(json!({"type": "A", "name": "www.example.com", "content": "192.0.2.1"})),
    );
    assert_eq!((s, dup["errors"][0]["code"].as_u64()), (400, Some(81058)));
    let (s, cname) = api.conformant(
        "POST",
        records,
        &path,
        Some(json!({"type": "CNAME", "name": "www.example.com", "content": "x.example.net"})),
    );
    assert_eq!((s, cname["errors"][0]["code"].as_u64()), (400, Some(81053)));
    // A name outside the zone is relative to it, as Cloudflare takes it.
    let (_, relative) = api.conformant(
        "POST",
        records,
        &path,
        Some(json!({"type": "A", "name": "rel", "content": "192.0.2.1"})),
    );
    assert_eq!(relative["result"]["name"], "rel.example.com");
    let (s, _) = api.conformant(
        "POST",
        records,
        &path,
        Some(json!({"type": "A", "name": "x", "content": "not-an-ip"})),
    );
    assert_eq!(s, 400);

    // Filters and pagination.
    for i in 0..7 {
        api.conformant(
            "POST",
            records,
            &path,
            Some(json!({"type": "A", "name": format!("h{i}.example.com"), "content": "192.0.2.9"})),
        );
    }
    let (_, page) = api.conformant(
        "GET",
        records,
        &format!("{path}?type=A&content=192.0.2.9&per_page=5&page=2"),
        None,
    );
    assert_eq!(page["result"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["result_info"],
        json!({"page": 2, "per_page": 5, "count": 2, "total_count": 7, "total_pages": 2})
    );
    let (_, by_name) = api.conformant(
        "GET",
        records,
        &format!("{path}?name=www.example.com"),
        None,
    );
    assert_eq!(by_name["result"].as_array().unwrap().len(), 1);

    let (_, got) = api.conformant("GET", one, &format!("{path}/{id}"), None);
    assert_eq!(got["result"]["content"], "192.0.2.1");
    let (_, patched) = api.conformant(
        "PATCH",
        one,
        &format!("{path}/{id}"),
        Some(json!({"content": "192.0.2.2"})),
    );
    assert_eq!(patched["result"]["name"], "www.example.com");
    let (_, put) = api.conformant(
        "PUT",
        one,
        &format!("{path}/{id}"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.3", "proxied": false})),
    );
    assert_eq!(put["result"]["proxied"], false);
    api.conformant("DELETE", one, &format!("{path}/{id}"), None);
    let (s, gone) = api.conformant("GET", one, &format!("{path}/{id}"), None);
    assert_eq!((s, gone["errors"][0]["code"].as_u64()), (404, Some(81044)));

    // Origin CA.
    let (_, cert) = api.conformant("POST", "/certificates", "/certificates", Some(json!({"csr": csr(true, &["www.example.com"]), "hostnames": ["www.example.com", "*.example.com"], "request_type": "origin-ecc", "requested_validity": 90})));
    let cert_id = cert["result"]["id"].as_str().unwrap().to_owned();
    assert!(
        cert["result"]["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let (s, _) = api.conformant("POST", "/certificates", "/certificates", Some(json!({"csr": csr(false, &["a.example.com"]), "hostnames": ["a.example.com"], "request_type": "origin-ecc"})));
    assert_eq!(s, 400, "an RSA key with origin-ecc");
    let (s, _) = api.conformant("POST", "/certificates", "/certificates", Some(json!({"csr": csr(true, &["a.example.com"]), "hostnames": ["a.example.com"], "request_type": "origin-ecc", "requested_validity": 10})));
    assert_eq!(s, 400, "a validity that is not offered");
    let (_, list) = api.conformant(
        "GET",
        "/certificates",
        &format!("/certificates?zone_id={zone}"),
        None,
    );
    assert_eq!(list["result"].as_array().unwrap().len(), 1);
    api.conformant(
        "GET",
        "/certificates/{certificate_id}",
        &format!("/certificates/{cert_id}"),
        None,
    );
    let (_, revoked) = api.conformant(
        "DELETE",
        "/certificates/{certificate_id}",
        &format!("/certificates/{cert_id}"),
        None,
    );
    assert!(revoked["result"]["revoked_at"].is_string());
    assert!(api.emulator.certificates()[0].revoked_at.is_some());

    let (_, verify) = api.conformant("GET", "/user/tokens/verify", "/user/tokens/verify", None);
    assert_eq!(verify["result"]["status"], "active");
}

#[test]
fn bad_tokens_rate_limits_and_server_errors() {
    let api = Api::new();
    let (status, _, body) = api.call("GET", "/zones", None, "wrong");
    assert_eq!(status, 403);
    assert_eq!(body["errors"][0]["code"], 10000);
    let (status, _, body) = api.call("GET", "/user/tokens/verify", None, "wrong");
    assert_eq!(
        (status, body["errors"][0]["code"].as_u64()),
        (401, Some(1000))
    );
    api.emulator.revoke_token(TOKEN);
    let (status, _, _) = api.call("GET", "/zones", None, TOKEN);
    assert_eq!(status, 403);

    let api = Api::new();
    api.emulator.rate_limit_next(2, 7);
    for _ in 0..2 {
        let (status, headers, body) = api.call("GET", "/zones", None, TOKEN);
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(body["errors"][0]["code"], 971);
    }
    assert_eq!(api.call("GET", "/zones", None, TOKEN).0, 200);
    api.emulator.fail_next(1, 503);
    assert_eq!(api.call("GET", "/zones", None, TOKEN).0, 503);
    assert_eq!(api.call("GET", "/zones", None, TOKEN).0, 200);
    assert_eq!(api.emulator.request_counts(), (5, 2));
    api.emulator.set_delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    api.call("GET", "/zones", None, TOKEN);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Asks the emulator's DNS server over UDP.
/// Sends one question to the emulator's DNS server; the answer.
fn ask(
    emulator: &Emulator,
    name: &str,
    kind: hickory_proto::rr::RecordType,
) -> hickory_proto::op::Message {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    use std::str::FromStr;
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_str(name).unwrap(), kind));
    message.metadata.recursion_desired = false;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .send_to(&message.to_vec().unwrap(), emulator.dns_addr)
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// The response code and the answers' data.
fn query(
    emulator: &Emulator,
    name: &str,
    kind: hickory_proto::rr::RecordType,
) -> (hickory_proto::op::ResponseCode, Vec<String>) {
    let answer = ask(emulator, name, kind);
    let data = answer.answers.iter().map(|r| r.data.to_string()).collect();
    (answer.metadata.response_code, data)
}

/// The record types in the authority section of the answer.
fn authority(emulator: &Emulator, name: &str, kind: hickory_proto::rr::RecordType) -> Vec<String> {
    ask(emulator, name, kind)
        .authorities
        .iter()
        .map(|r| r.record_type().to_string())
        .collect()
}

#[test]
fn the_dns_server_answers_from_the_records() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    let emulator = Emulator::start();
    let zone = emulator.add_zone("example.com");
    emulator.add_record(&zone, "A", "www.example.com", "192.0.2.10");
    emulator.add_record(&zone, "AAAA", "www.example.com", "2001:db8::10");
    emulator.add_record(
        &zone,
        "TXT",
        "_acme-challenge.example.com",
        "challenge-token",
    );
    assert_eq!(
        query(&emulator, "www.example.com.", RecordType::A),
        (ResponseCode::NoError, vec!["192.0.2.10".into()])
    );
    assert_eq!(
        query(&emulator, "WWW.example.com.", RecordType::AAAA).1,
        vec!["2001:db8::10".to_owned()]
    );
    let (code, txt) = query(&emulator, "_acme-challenge.example.com.", RecordType::TXT);
    assert_eq!(code, ResponseCode::NoError);
    assert!(txt[0].contains("challenge-token"), "{txt:?}");
    assert_eq!(
        query(&emulator, "nope.example.com.", RecordType::A).0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        query(&emulator, "www.elsewhere.net.", RecordType::A).0,
        ResponseCode::Refused
    );

    // As Cloudflare's servers: SOA and NS at the apex, NODATA for a name without the type
    // (also an empty non-terminal), NXDOMAIN for none, the SOA in the authority of both.
    let (code, soa) = query(&emulator, "example.com.", RecordType::SOA);
    assert_eq!(code, ResponseCode::NoError);
    assert!(
        soa[0].starts_with("ada.ns.cloudflare.com. dns.cloudflare.com."),
        "{soa:?}"
    );
    let (_, mut ns) = query(&emulator, "example.com.", RecordType::NS);
    ns.sort();
    assert_eq!(ns, ["ada.ns.cloudflare.com.", "bob.ns.cloudflare.com."]);
    for name in ["www.example.com.", "example.com."] {
        assert_eq!(
            query(&emulator, name, RecordType::TXT),
            (ResponseCode::NoError, vec![]),
            "{name}: NODATA, not NXDOMAIN"
        );
        assert_eq!(authority(&emulator, name, RecordType::TXT), ["SOA"]);
    }
    emulator.add_record(&zone, "TXT", "_acme-challenge.deep.example.com", "t");
    assert_eq!(
        query(&emulator, "deep.example.com.", RecordType::A),
        (ResponseCode::NoError, vec![]),
        "an empty non-terminal exists"
    );
    assert_eq!(
        authority(&emulator, "nope.example.com.", RecordType::A),
        ["SOA"]
    );
}

/// What a connector sends the edge (the cloudflared stand-in does the same).
fn edge(api: &Api, path: &str, body: Value) -> u16 {
    let url = format!("{}/{path}", api.emulator.edge_url());
    api.rt.block_on(async {
        api.client
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn tunnels_follow_the_reference_shapes_and_the_lifecycle_rules() {
    use base64::Engine;
    let api = Api::new();
    let account = api.emulator.account_id();
    let all = "/accounts/{account_id}/cfd_tunnel";
    let one = "/accounts/{account_id}/cfd_tunnel/{tunnel_id}";
    let base = format!("/accounts/{account}/cfd_tunnel");
    let (_, created) = api.conformant(
        "POST",
        all,
        &base,
        Some(json!({"name": "odoo-acme", "config_src": "cloudflare"})),
    );
    let id = created["result"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["result"]["status"], "inactive");
    assert_eq!(created["result"]["remote_config"], true);
    let (s, dup) = api.conformant("POST", all, &base, Some(json!({"name": "odoo-acme"})));
    assert_eq!((s, dup["errors"][0]["code"].as_u64()), (409, Some(1013)));
    let (_, listed) = api.conformant("GET", all, &format!("{base}?name=odoo-acme"), None);
    assert_eq!(listed["result"].as_array().unwrap().len(), 1);

    // The token is base64 JSON {a, t, s}.
    let (_, token) = api.conformant(
        "GET",
        &format!("{one}/token"),
        &format!("{base}/{id}/token"),
        None,
    );
    let token = token["result"].as_str().unwrap().to_owned();
    let decoded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&token)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (decoded["a"].as_str(), decoded["t"].as_str()),
        (Some(account), Some(id.as_str()))
    );
    assert_eq!(created["result"]["token"], token.as_str());

    // The whole ingress, validated as cloudflared validates it.
    let config = format!("{base}/{id}/configurations");
    let ingress = json!({"config": {"ingress": [
        {"hostname": "acme.example.com", "service": "http://172.16.16.105:8069", "originRequest": {}},
        {"service": "http_status:404"},
    ]}});
    let (_, put) = api.conformant(
        "PUT",
        &format!("{one}/configurations"),
        &config,
        Some(ingress.clone()),
    );
    assert_eq!(put["result"]["version"], 1);
    let (_, got) = api.conformant("GET", &format!("{one}/configurations"), &config, None);
    assert_eq!(got["result"]["config"], ingress["config"]);
    let (s, bad) = api.conformant(
        "PUT",
        &format!("{one}/configurations"),
        &config,
        Some(json!({"config": {"ingress": [{"hostname": "a.example.com:80", "service": "http://x"}, {"service": "http_status:404"}]}})),
    );
    assert_eq!(s, 400, "{bad}");

    // A connector with the token opens 4 connections; the tunnel is healthy.
    assert_eq!(
        edge(
            &api,
            "connect",
            json!({"token": token, "client_id": "c1", "client_version": "2026.1.0"})
        ),
        200
    );
    let (_, healthy) = api.conformant("GET", one, &format!("{base}/{id}"), None);
    assert_eq!(healthy["result"]["status"], "healthy");
    assert_eq!(
        healthy["result"]["connections"].as_array().unwrap().len(),
        4
    );
    api.conformant(
        "GET",
        &format!("{one}/connections"),
        &format!("{base}/{id}/connections"),
        None,
    );

    // Rotation: the old token opens nothing new; the open connections stay.
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let (_, rotated) = api.conformant(
        "PATCH",
        one,
        &format!("{base}/{id}"),
        Some(json!({"tunnel_secret": secret})),
    );
    assert_ne!(rotated["result"]["token"], token.as_str());
    assert_eq!(
        edge(&api, "connect", json!({"token": token, "client_id": "c2"})),
        401
    );
    assert_eq!(
        rotated["result"]["connections"].as_array().unwrap().len(),
        4
    );

    // Delete is refused while connections are active, then works.
    let (s, refused) = api.conformant("DELETE", one, &format!("{base}/{id}"), None);
    assert_eq!(
        (s, refused["errors"][0]["code"].as_u64()),
        (400, Some(1022))
    );
    let (s, _, _) = api.call("DELETE", &format!("{base}/{id}/connections"), None, TOKEN);
    assert_eq!(s, 200);
    let (_, deleted) = api.conformant("DELETE", one, &format!("{base}/{id}"), None);
    assert!(deleted["result"]["deleted_at"].is_string());
    let (s, _) = api.conformant("GET", one, &format!("{base}/{id}"), None);
    assert_eq!(s, 404);
    // The name is free again.
    api.conformant("POST", all, &base, Some(json!({"name": "odoo-acme"})));
}

#[test]
fn lists_follow_the_reference_shapes_and_bulk_operations_run_one_at_a_time() {
    let api = Api::new();
    let account = api.emulator.account_id();
    api.emulator
        .set_bulk_delay(std::time::Duration::from_millis(300));
    let rules = format!("/accounts/{account}/rules/lists");
    let (_, created) = api.conformant(
        "POST",
        "/accounts/{account_id}/rules/lists",
        &rules,
        Some(json!({"name": "gatehouse_home", "kind": "ip", "description": "managed"})),
    );
    let id = created["result"]["id"].as_str().unwrap().to_owned();
    let (s, _) = api.conformant(
        "POST",
        "/accounts/{account_id}/rules/lists",
        &rules,
        Some(json!({"name": "Bad Name", "kind": "ip"})),
    );
    assert_eq!(s, 400);
    let items = "/accounts/{account_id}/rules/lists/{list_id}/items";
    let (_, op) = api.conformant(
        "POST",
        items,
        &format!("{rules}/{id}/items"),
        Some(json!([{"ip": "203.0.113.7", "comment": "gatehouse:home"}, {"ip": "2001:db8::/64"}])),
    );
    let op = op["result"]["operation_id"].as_str().unwrap().to_owned();
    // A second write while the first is pending: 429.
    let (s, _, _) = api.call(
        "POST",
        &format!("{rules}/{id}/items"),
        Some(json!([{"ip": "198.51.100.1"}])),
        TOKEN,
    );
    assert_eq!(s, 429);
    let bulk = "/accounts/{account_identifier}/rules/lists/bulk_operations/{operation_id}";
    let (_, pending) = api.conformant("GET", bulk, &format!("{rules}/bulk_operations/{op}"), None);
    assert_eq!(pending["result"]["status"], "pending");
    let done = gatehouse_testkit::wait_for(
        "the bulk operation",
        std::time::Duration::from_secs(10),
        || {
            let (_, v) =
                api.conformant("GET", bulk, &format!("{rules}/bulk_operations/{op}"), None);
            (v["result"]["status"] == "completed").then_some(v)
        },
    );
    assert!(done["result"]["completed"].is_string());
    // The 2024 schema types an item as a bare string; the shape Cloudflare answers (and the
    // reference example, rules-list-items-get-response.json) is an object.
    let (_, _, listed) = api.call("GET", &format!("{rules}/{id}/items"), None, TOKEN);
    assert!(listed["result_info"]["cursors"].is_object(), "{listed}");
    let listed = listed["result"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    for field in ["id", "ip", "comment", "created_on", "modified_on"] {
        assert!(listed[0].get(field).is_some(), "{field} in {:?}", listed[0]);
    }
    // A single IPv6 address is refused: only /4 to /64.
    let (s, _, _) = api.call(
        "POST",
        &format!("{rules}/{id}/items"),
        Some(json!([{"ip": "2001:db8::1"}])),
        TOKEN,
    );
    assert_eq!(s, 400);
    // Deletes go by item id.
    let item = listed[0]["id"].as_str().unwrap();
    let (_, op) = api.conformant(
        "DELETE",
        items,
        &format!("{rules}/{id}/items"),
        Some(json!({"items": [{"id": item}]})),
    );
    assert!(op["result"]["operation_id"].is_string());
    gatehouse_testkit::wait_for("the delete", std::time::Duration::from_secs(10), || {
        (api.emulator.rules_list_items("gatehouse_home").len() == 1).then_some(())
    });

    let gateway = format!("/accounts/{account}/gateway/lists");
    let (_, g) = api.conformant(
        "POST",
        "/accounts/{account_id}/gateway/lists",
        &gateway,
        Some(
            json!({"name": "gatehouse-home", "type": "IP", "description": "managed",
                    "items": [{"value": "192.0.2.0/24", "description": "office"}]}),
        ),
    );
    let gid = g["result"]["id"].as_str().unwrap().to_owned();
    let (_, patched) = api.conformant(
        "PATCH",
        "/accounts/{account_id}/gateway/lists/{list_id}",
        &format!("{gateway}/{gid}"),
        Some(
            json!({"append": [{"value": "198.51.100.7", "description": "vpn"}],
                    "remove": ["192.0.2.0/24"]}),
        ),
    );
    assert_eq!(patched["result"]["count"], 1);
    let (_, gitems) = api.conformant(
        "GET",
        "/accounts/{account_id}/gateway/lists/{list_id}/items",
        &format!("{gateway}/{gid}/items"),
        None,
    );
    assert_eq!(gitems["result"][0][0]["value"], "198.51.100.7");
}
