//! The emulator's authoritative DNS server (hickory-server), answering as Cloudflare's
//! authoritative servers do: A, AAAA, CNAME and TXT from the emulator's records, SOA and NS at
//! each zone's apex, NOERROR with no answer (NODATA) for a name that exists without the asked
//! type, NXDOMAIN for one that does not, both with the zone's SOA in the authority section (so
//! clients that look the zone up first, like lego, find it), and REFUSED outside its zones.

use std::net::SocketAddr;
use std::str::FromStr;

use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::Shared;

struct Handler {
    state: Shared,
}

/// The name servers every zone gets (as the API's `name_servers` says).
pub(crate) const NAME_SERVERS: [&str; 2] = ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"];

/// What the server says to one question.
struct Answer {
    answers: Vec<Record>,
    /// The zone's SOA, for the authority section of a negative answer.
    soa: Option<Record>,
    code: ResponseCode,
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_str(&format!("{name}.")).ok()
}

/// A zone's SOA record, with the values Cloudflare's servers give.
fn soa(zone: &str) -> Option<Record> {
    let rdata = SOA::new(
        fqdn(NAME_SERVERS[0])?,
        fqdn("dns.cloudflare.com")?,
        2_300_000_000,
        10_000,
        2_400,
        604_800,
        1_800,
    );
    Some(Record::from_rdata(fqdn(zone)?, 1_800, RData::SOA(rdata)))
}

impl Handler {
    fn answer(&self, name: &Name, kind: RecordType) -> Answer {
        let wanted = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let s = self.state.lock().expect("emulator lock");
        let Some(zone) = s
            .zones
            .iter()
            .filter(|z| wanted == z.name || wanted.ends_with(&format!(".{}", z.name)))
            .max_by_key(|z| z.name.len())
        else {
            return Answer {
                answers: Vec::new(),
                soa: None,
                code: ResponseCode::Refused,
            };
        };
        let apex = wanted == zone.name;
        let mut answers = Vec::new();
        if apex && matches!(kind, RecordType::SOA | RecordType::ANY) {
            answers.extend(soa(&zone.name));
        }
        if apex && matches!(kind, RecordType::NS | RecordType::ANY) {
            for ns in NAME_SERVERS.iter().filter_map(|n| fqdn(n)) {
                answers.push(Record::from_rdata(name.clone(), 86_400, RData::NS(NS(ns))));
            }
        }
        // A name exists when a record has it, a record lies below it (an empty non-terminal,
        // such as the parent of `_acme-challenge.host`), or it is the apex.
        let below = format!(".{wanted}");
        let exists = apex
            || s.records
                .iter()
                .any(|r| r.name == wanted || r.name.ends_with(&below));
        for r in s.records.iter().filter(|r| r.name == wanted) {
            let ttl = if r.ttl == 1 { 60 } else { r.ttl };
            let any = kind == RecordType::ANY;
            let rdata = match (r.kind.as_str(), kind) {
                ("A", RecordType::A) => r.content.parse().ok().map(|ip| RData::A(A(ip))),
                ("A", _) if any => r.content.parse().ok().map(|ip| RData::A(A(ip))),
                ("AAAA", RecordType::AAAA) => {
                    r.content.parse().ok().map(|ip| RData::AAAA(AAAA(ip)))
                }
                ("AAAA", _) if any => r.content.parse().ok().map(|ip| RData::AAAA(AAAA(ip))),
                ("TXT", RecordType::TXT) => Some(RData::TXT(TXT::new(vec![r.content.clone()]))),
                ("TXT", _) if any => Some(RData::TXT(TXT::new(vec![r.content.clone()]))),
                ("CNAME", _) => fqdn(&r.content).map(|n| RData::CNAME(CNAME(n))),
                _ => None,
            };
            if let Some(rdata) = rdata {
                answers.push(Record::from_rdata(name.clone(), ttl, rdata));
            }
        }
        let code = if answers.is_empty() && !exists {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        Answer {
            soa: answers.is_empty().then(|| soa(&zone.name)).flatten(),
            answers,
            code,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let answer = match request.queries.queries().first() {
            Some(q)
                if request.metadata.op_code == OpCode::Query
                    && request.metadata.message_type == MessageType::Query =>
            {
                self.answer(q.name(), q.query_type())
            }
            _ => Answer {
                answers: Vec::new(),
                soa: None,
                code: ResponseCode::Refused,
            },
        };
        metadata.response_code = answer.code;
        let response = builder.build(metadata, answer.answers.iter(), [], answer.soa.iter(), []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                Header {
                    metadata,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

/// Serves DNS on `addr` (UDP and TCP); returns the bound address. With port 0, a port free for
/// both UDP and TCP is found (a free UDP port may be taken for TCP by another test).
pub(crate) async fn serve(addr: SocketAddr, state: Shared) -> std::io::Result<SocketAddr> {
    let mut tries = 0;
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp),
            Err(e) if addr.port() == 0 && tries < 50 => {
                tries += 1;
                let _ = e;
            }
            Err(e) => return Err(e),
        }
    };
    let bound = udp.local_addr()?;
    let mut server = Server::new(Handler { state });
    server.register_socket(udp);
    server.register_listener(tcp, std::time::Duration::from_secs(5), 64);
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    Ok(bound)
}
