//! The emulator's authoritative DNS server (hickory-server): A, AAAA, CNAME and TXT answers
//! from the emulator's records, so Pebble and clients resolve names and see DNS-01 challenges.

use std::net::SocketAddr;
use std::str::FromStr;

use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::Shared;

struct Handler {
    state: Shared,
}

impl Handler {
    /// The answers for `name`/`kind` and whether any zone of the emulator holds the name.
    fn answers(&self, name: &Name, kind: RecordType) -> (Vec<Record>, bool) {
        let fqdn = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let s = self.state.lock().expect("emulator lock");
        let in_zone = s
            .zones
            .iter()
            .any(|z| fqdn == z.name || fqdn.ends_with(&format!(".{}", z.name)));
        let mut out = Vec::new();
        for r in s.records.iter().filter(|r| r.name == fqdn) {
            let ttl = if r.ttl == 1 { 60 } else { r.ttl };
            let rdata = match (r.kind.as_str(), kind) {
                ("A", RecordType::A) => r.content.parse().ok().map(|ip| RData::A(A(ip))),
                ("AAAA", RecordType::AAAA) => {
                    r.content.parse().ok().map(|ip| RData::AAAA(AAAA(ip)))
                }
                ("TXT", RecordType::TXT) => Some(RData::TXT(TXT::new(vec![r.content.clone()]))),
                ("CNAME", _) => Name::from_str(&format!("{}.", r.content))
                    .ok()
                    .map(|n| RData::CNAME(CNAME(n))),
                _ => None,
            };
            if let Some(rdata) = rdata {
                out.push(Record::from_rdata(name.clone(), ttl, rdata));
            }
        }
        (out, in_zone)
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
        let (answers, in_zone) = match request.queries.queries().first() {
            Some(q)
                if request.metadata.op_code == OpCode::Query
                    && request.metadata.message_type == MessageType::Query =>
            {
                self.answers(q.name(), q.query_type())
            }
            _ => (Vec::new(), false),
        };
        if !in_zone {
            metadata.response_code = ResponseCode::Refused;
        } else if answers.is_empty() {
            metadata.response_code = ResponseCode::NXDomain;
        }
        let response = builder.build(metadata, answers.iter(), [], [], []);
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
