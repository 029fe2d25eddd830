//! RFC 2136 dynamic updates, signed with TSIG (RFC 8945), to the primary server of a zone
//! (BIND, Knot, PowerDNS, …).
//!
//! A replace is **one** UPDATE message, which the server applies atomically or not at all:
//! the prerequisite section holds the set exactly as it was read (§2.4.2 "RRset exists (value
//! dependent)", or §2.4.3 "RRset does not exist" when it was absent), the update section
//! deletes the set and adds each new value. Resolvers never see the name without an answer in
//! between, and a change made by somebody else since the read fails the prerequisite
//! (NXRRSET/YXRRSET) and comes back as [`FailureKind::Conflict`] instead of being overwritten.
//!
//! Messages are built, signed and checked here with `hickory-proto`; `hickory-net` carries them
//! (UDP, then TCP when the reply is truncated or the message is too large for UDP). The reply
//! is parsed and its TSIG checked by this module rather than inside the transport, because
//! hickory's own verifier turns every error reply to a signed request (unknown key, bad
//! signature, which are unsigned by the RFC) into one opaque "signature" error; here the
//! operator is told which of them it was. Only a NOERROR reply must carry a valid signature to
//! count as success; an error reply, signed or not, can only make the caller read again or
//! retry, so it is believed as it is.
//!
//! Over UDP the transport sends the same signed bytes again when no reply comes within its
//! retry interval. If the first copy was applied and only its reply was lost, the second fails
//! its prerequisite: a [`FailureKind::Conflict`] whose re-read finds the new value already
//! there, so the caller's next decision is "nothing to do".

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hickory_net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsRequestSender, FirstAnswer};
use hickory_net::{DnsStreamHandle, NetError};
use hickory_proto::op::update_message::UpdateMessage;
use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, Edns, Message, MessageType, OpCode, Query, ResponseCode,
    SerialMessage,
};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm as HickoryTsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as HickoryType, TSigner};
use zeroize::Zeroizing;

use crate::{ActionResult, BoxFut, DnsBackend, Failure, FailureKind, RRset, RecordRef, RecordType};

/// The TSIG fudge: how far apart the clocks of agentd and the server may be (seconds) for a
/// signed message to be accepted. BIND checks with the fudge of the *request*; 300 s is the
/// RFC 8945 recommendation and what nsupdate sends, and a failover must not fail because a
/// gateway's clock drifted a minute while NTP was unreachable.
pub const TSIG_FUDGE: u16 = 300;

/// The largest message sent over UDP. Without EDNS a server takes 512 bytes; a larger UPDATE
/// (many values) goes over TCP straight away.
const MAX_UDP_MESSAGE: usize = 512;

/// The UDP payload size announced in queries (EDNS), the DNS flag day 2020 value: answers
/// larger than that come truncated and are asked again over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// How the server is reached and how requests are signed.
#[derive(Debug, Clone)]
pub struct Rfc2136Settings {
    /// The primary server of the zone (the one that accepts updates).
    pub server: SocketAddr,
    /// The zone, absolute (`fo.example.com.`): the zone section of every UPDATE.
    pub zone: String,
    /// The TSIG key; `None` sends unsigned updates (for servers that allow them by address).
    pub key: Option<TsigKey>,
    /// The bound on one operation (all attempts, UDP and TCP).
    pub timeout: Duration,
}

/// A TSIG HMAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    /// The name in key files and configs (`hmac-sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// Parse `hmac-sha256` (also with BIND's trailing dot or any case).
    pub fn parse(text: &str) -> Option<TsigAlgorithm> {
        match text
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .as_str()
        {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }

    fn to_hickory(self) -> HickoryTsigAlgorithm {
        match self {
            TsigAlgorithm::HmacSha256 => HickoryTsigAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384 => HickoryTsigAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512 => HickoryTsigAlgorithm::HmacSha512,
        }
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TSIG key: its name (absolute, as the server knows it), algorithm and the decoded secret.
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TsigKey {
    /// Read a key file: either what `tsig-keygen` prints (`key "name" { algorithm hmac-sha256;
    /// secret "base64"; };`, name and algorithm taken from it) or a bare base64 secret, for
    /// which `name` and `algorithm` must be given. Given values must agree with the file's.
    /// Errors never quote the secret.
    pub fn from_key_file(
        text: &str,
        name: Option<&str>,
        algorithm: Option<TsigAlgorithm>,
    ) -> Result<TsigKey, String> {
        use base64::Engine as _;
        let (file_name, file_alg, secret_b64) = if text.contains("secret") {
            let file_name = between(text, "key", "{")
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .ok_or("the key file has no `key \"NAME\" {` line")?;
            let alg_text =
                between(text, "algorithm", ";").ok_or("the key file has no algorithm")?;
            let alg = TsigAlgorithm::parse(alg_text).ok_or_else(|| {
                format!(
                    "algorithm {:?} is not supported (hmac-sha256, hmac-sha384, hmac-sha512)",
                    alg_text.trim()
                )
            })?;
            let secret = between(text, "secret", ";")
                .ok_or("the key file has no secret")?
                .trim()
                .trim_matches('"');
            (Some(file_name), Some(alg), secret.to_string())
        } else {
            (None, None, text.trim().to_string())
        };
        let secret_b64 = Zeroizing::new(secret_b64);
        let name = match (file_name, name) {
            (Some(f), Some(n)) if absolute(&f) != absolute(n) => {
                return Err(format!(
                    "the key file names key {f:?} but the config says {n:?}"
                ))
            }
            (Some(f), _) => f,
            (None, Some(n)) => n.to_string(),
            (None, None) => return Err("a bare secret needs the key name (tsig_key_name)".into()),
        };
        let algorithm = match (file_alg, algorithm) {
            (Some(f), Some(a)) if f != a => {
                return Err(format!(
                    "the key file says algorithm {f} but the config says {a}"
                ))
            }
            (Some(f), _) => f,
            (None, Some(a)) => a,
            (None, None) => TsigAlgorithm::HmacSha256,
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_b64.as_bytes())
            .map_err(|_| "the TSIG secret is not valid base64".to_string())?;
        if secret.is_empty() {
            return Err("the TSIG secret is empty".into());
        }
        Ok(TsigKey {
            name: absolute(&name),
            algorithm,
            secret: Zeroizing::new(secret),
        })
    }
}

/// The text after `start` (as a word) up to the next `end`.
fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let i = text.find(start)? + start.len();
    let rest = &text[i..];
    let j = rest.find(end)?;
    Some(&rest[..j])
}

/// `name` with a trailing dot, lowercase.
fn absolute(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

/// An RFC 2136 provider for one zone on one primary server.
pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    zone_text: String,
    key_name: Option<String>,
    signer: Option<TSigner>,
    timeout: Duration,
    clock_offset: i64,
}

impl fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone_text)
            .field("key_name", &self.key_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Rfc2136 {
    /// Check the settings (an absolute zone, a usable key) and build the provider. Nothing is
    /// sent until the first operation.
    pub fn new(settings: Rfc2136Settings) -> Result<Rfc2136, Failure> {
        let bad = |m: String| Failure::new(FailureKind::Rejected, m);
        let zone = parse_absolute(&settings.zone)
            .map_err(|e| bad(format!("zone {:?}: {e}", settings.zone)))?;
        let (signer, key_name) = match &settings.key {
            None => (None, None),
            Some(key) => {
                let name = parse_absolute(&key.name)
                    .map_err(|e| bad(format!("TSIG key name {:?}: {e}", key.name)))?;
                let signer = TSigner::new(
                    key.secret.to_vec(),
                    key.algorithm.to_hickory(),
                    name.clone(),
                    TSIG_FUDGE,
                )
                .map_err(|e| bad(format!("TSIG key {}: {e}", key.name)))?;
                (Some(signer), Some(name.to_ascii()))
            }
        };
        Ok(Rfc2136 {
            server: settings.server,
            zone_text: zone.to_ascii(),
            zone,
            key_name,
            signer,
            timeout: settings.timeout,
            clock_offset: 0,
        })
    }

    /// The UPDATE that replaces `seen` by `new` (unsigned; see [`Rfc2136::replace`]).
    pub fn update_message(
        &self,
        rec: &RecordRef,
        seen: Option<&RRset>,
        new: &RRset,
    ) -> ActionResult<Message> {
        let name = self.name_in_zone(&rec.name)?;
        let rtype = hickory_type(rec.rtype);
        let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Update);
        message.metadata.recursion_desired = false;
        let mut zone = Query::query(self.zone.clone(), HickoryType::SOA);
        zone.set_query_class(DNSClass::IN);
        message.add_zone(zone);

        match seen.filter(|s| !s.values.is_empty()) {
            // §2.4.2: RRset exists (value dependent): the whole set, class IN, TTL 0. The
            // server compares it with the set it holds as sets.
            Some(seen) => {
                for value in &seen.values {
                    let rdata = rdata(rec, value)?;
                    message.add_pre_requisite(Record::from_rdata(name.clone(), 0, rdata));
                }
            }
            // §2.4.3: RRset does not exist: class NONE, TTL 0, no data.
            None => {
                let mut absent = Record::update0(name.clone(), 0, rtype);
                absent.dns_class = DNSClass::NONE;
                message.add_pre_requisite(absent);
            }
        }

        // §2.5.2: delete the RRset (class ANY, TTL 0, no data), then §2.5.1: add each value.
        let mut delete = Record::update0(name.clone(), 0, rtype);
        delete.dns_class = DNSClass::ANY;
        message.add_update(delete);
        for value in &new.values {
            let rdata = rdata(rec, value)?;
            message.add_update(Record::from_rdata(name.clone(), new.ttl, rdata));
        }
        Ok(message)
    }

    fn name_in_zone(&self, name: &str) -> ActionResult<Name> {
        let parsed = parse_absolute(name)
            .map_err(|e| Failure::new(FailureKind::Rejected, format!("name {name:?}: {e}")))?;
        if !self.zone.zone_of(&parsed) {
            return Err(Failure::new(
                FailureKind::Rejected,
                format!("not in zone {}", self.zone_text),
            ));
        }
        Ok(parsed)
    }

    async fn do_replace(
        &self,
        rec: &RecordRef,
        seen: Option<&RRset>,
        new: &RRset,
    ) -> ActionResult<()> {
        let (message, verifier) = self.signed_update(rec, seen, new)?;
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::new(FailureKind::Rejected, format!("encoding: {e}")))?;
        let reply = self.exchange(message, bytes).await?;
        self.update_reply(rec, &reply, verifier)
    }

    /// The UPDATE that replaces `seen` by `new`, signed when there is a key, and the verifier
    /// of its reply's signature.
    pub(crate) fn signed_update(
        &self,
        rec: &RecordRef,
        seen: Option<&RRset>,
        new: &RRset,
    ) -> ActionResult<(Message, Option<hickory_proto::rr::TSigVerifier>)> {
        let mut message = self.update_message(rec, seen, new)?;
        let verifier = match &self.signer {
            Some(signer) => message
                .finalize(signer, self.now())
                .map_err(|e| Failure::new(FailureKind::Rejected, format!("signing: {e}")))?,
            None => None,
        };
        Ok((message, verifier))
    }

    /// The raw reply to an UPDATE of `rec`, parsed and mapped to success or a typed failure.
    pub(crate) fn update_reply(
        &self,
        rec: &RecordRef,
        reply: &[u8],
        verifier: Option<hickory_proto::rr::TSigVerifier>,
    ) -> ActionResult<()> {
        let parsed = Message::from_vec(reply)
            .map_err(|e| self.unavailable(format!("a reply that does not parse: {e}")))?;
        self.check_update_reply(rec, &parsed, reply, verifier)
    }

    /// Map the reply to an UPDATE to success or a typed failure.
    fn check_update_reply(
        &self,
        rec: &RecordRef,
        reply: &Message,
        bytes: &[u8],
        verifier: Option<hickory_proto::rr::TSigVerifier>,
    ) -> ActionResult<()> {
        let key = self.key_name.as_deref().unwrap_or("(none)");
        // A TSIG error says more than the rcode (NOTAUTH for all three).
        if let Some(tsig) = reply.signature() {
            match &tsig.data.error {
                Some(TsigError::BadKey) => return Err(self.auth(format!(
                    "the server does not know the key name {key} (or not with algorithm {}): BADKEY",
                    self.algorithm_text()
                ))),
                Some(TsigError::BadSig) => return Err(self.auth(
                    "bad signature: the TSIG secret differs from the server's (BADSIG)".to_string(),
                )),
                Some(TsigError::BadTime) => {
                    let skew = server_time(&tsig.data.other)
                        .map(|t| format!(", server time is {}s off ours", t as i64 - self.now() as i64))
                        .unwrap_or_default();
                    return Err(self.auth(format!(
                        "bad time: the clocks of agentd and the server differ by more than the fudge of {TSIG_FUDGE}s (BADTIME{skew}): fix NTP"
                    )));
                }
                Some(other) => return Err(self.auth(format!("TSIG error {other:?}"))),
                None => {}
            }
        }
        let rcode = reply.metadata.response_code;
        if rcode == ResponseCode::NoError {
            // Success counts only when the server proves it is the one that applied it.
            if let Some(mut verifier) = verifier {
                if reply.signature().is_none() {
                    return Err(self.auth(
                        "the server's NOERROR reply is not signed (TSIG signature record not found)".to_string(),
                    ));
                }
                verifier.verify(bytes).map_err(|e| {
                    self.auth(format!(
                        "the server's reply fails TSIG verification ({e}): is the secret of {key} the same on both sides?"
                    ))
                })?;
            }
            return Ok(());
        }
        let unsigned = if verifier.is_some() && reply.signature().is_none() {
            " (unsigned reply)"
        } else {
            ""
        };
        let code = format!("{}: {}", rcode_name(rcode), rcode.to_str());
        Err(match rcode {
            ResponseCode::NXRRSet | ResponseCode::YXRRSet | ResponseCode::NXDomain | ResponseCode::YXDomain => Failure::new(
                FailureKind::Conflict,
                format!("it changed since it was read (prerequisite failed: {code}){unsigned}"),
            ),
            ResponseCode::NotAuth if self.signer.is_some() => self.auth(format!(
                "NOTAUTH{unsigned}: the server does not accept key {key} for zone {} (unknown key name, wrong secret, or the server is not authoritative)",
                self.zone_text
            )),
            ResponseCode::NotAuth => self.auth(format!(
                "NOTAUTH: the server is not authoritative for zone {} or wants a TSIG key",
                self.zone_text
            )),
            ResponseCode::Refused => Failure::new(
                FailureKind::Rejected,
                format!(
                    "refused{unsigned}: does update-policy grant key {key} the name {} type {}?",
                    rec.name, rec.rtype
                ),
            ),
            ResponseCode::NotZone => Failure::new(
                FailureKind::Rejected,
                format!("NOTZONE: the server says the name is not in zone {}", self.zone_text),
            ),
            ResponseCode::ServFail => self.unavailable(format!("SERVFAIL{unsigned}")),
            _ => Failure::new(FailureKind::Rejected, format!("{code}{unsigned}")),
        })
    }

    async fn do_read(&self, rec: &RecordRef) -> ActionResult<Option<RRset>> {
        let name = self.name_in_zone(&rec.name)?;
        let rtype = hickory_type(rec.rtype);
        let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        message.set_edns(edns);
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::new(FailureKind::Rejected, format!("encoding: {e}")))?;
        let reply = self.exchange(message, bytes).await?;
        self.read_reply(&name, rtype, &reply)
    }

    /// The set of `name` and `rtype` in the raw reply to a query; `None`: there is none.
    pub(crate) fn read_reply(
        &self,
        name: &Name,
        rtype: HickoryType,
        reply: &[u8],
    ) -> ActionResult<Option<RRset>> {
        let reply = Message::from_vec(reply)
            .map_err(|e| self.unavailable(format!("a reply that does not parse: {e}")))?;
        match reply.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Ok(None),
            ResponseCode::ServFail => return Err(self.unavailable("SERVFAIL".to_string())),
            code => {
                return Err(Failure::new(
                    FailureKind::Rejected,
                    format!("reading: {}", rcode_name(code)),
                ))
            }
        }
        let mut ttl = None::<u32>;
        let mut values = Vec::new();
        for record in &reply.answers {
            if record.record_type() != rtype || record.name != *name {
                continue; // a CNAME on the way, or the target's records
            }
            let value = match &record.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::CNAME(c) => canonical_name(&c.0),
                _ => continue,
            };
            ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
            values.push(value);
        }
        Ok(ttl.map(|ttl| RRset::new(ttl, values)))
    }

    /// Send one message and return the raw reply: UDP first (unless too large), TCP when the
    /// reply is truncated; everything within the timeout.
    async fn exchange(&self, message: Message, bytes: Vec<u8>) -> ActionResult<Vec<u8>> {
        let id = message.metadata.id;
        let work = async {
            if bytes.len() <= MAX_UDP_MESSAGE {
                let reply = self.udp(message).await?;
                if !reply_truncated(&reply) {
                    return Ok(reply);
                }
                tracing::debug!(server = %self.server, "truncated reply over UDP: asking again over TCP");
            }
            self.tcp(id, bytes).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                Err(self.unavailable(format!("no answer within {} ms", self.timeout.as_millis())))
            }
        }
    }

    async fn udp(&self, message: Message) -> ActionResult<Vec<u8>> {
        // No signer on the stream: the message is signed already, and the reply is checked by
        // the caller (see the module comment). The stream keeps the message ID and sends the
        // same bytes again on its retries.
        let mut stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::new())
            .with_timeout(Some(self.timeout))
            .build();
        let mut options = DnsRequestOptions::default();
        options.use_edns = message.edns.is_some();
        options.recursion_desired = false;
        let response = stream
            .send_message(DnsRequest::new(message, options))
            .first_answer()
            .await
            .map_err(|e| self.net_failure("UDP", e))?;
        Ok(response.into_buffer())
    }

    async fn tcp(&self, id: u16, bytes: Vec<u8>) -> ActionResult<Vec<u8>> {
        let (connect, mut handle) =
            TcpClientStream::<AsyncIoTokioAsStd<tokio::net::TcpStream>>::new(
                self.server,
                None,
                Some(self.timeout),
                TokioRuntimeProvider::new(),
            );
        let mut stream = connect.await.map_err(|e| self.net_failure("TCP", e))?;
        handle
            .send(SerialMessage::new(bytes, self.server))
            .map_err(|e| self.net_failure("TCP", e))?;
        while let Some(reply) = stream.next().await {
            let reply = reply.map_err(|e| self.net_failure("TCP", e))?;
            let (reply, _) = reply.into_parts();
            if reply.get(..2) == Some(&id.to_be_bytes()[..]) {
                return Ok(reply);
            }
        }
        Err(self.unavailable("the TCP connection closed without a reply".to_string()))
    }

    fn net_failure(&self, transport: &str, e: NetError) -> Failure {
        let text = e.to_string();
        if text.contains("timed out") || text.contains("timeout") {
            self.unavailable(format!(
                "no answer over {transport} within {} ms",
                self.timeout.as_millis()
            ))
        } else {
            self.unavailable(format!("{transport}: {text}"))
        }
    }

    /// Every failure names the set and the server: `gw.fo.test. A at 10.1.0.53:53: …`.
    fn context(&self, rec: &RecordRef, e: Failure) -> Failure {
        Failure::new(e.kind, format!("{rec} at {}: {}", self.server, e.message))
    }

    /// Sign as if the clock were `seconds` off (tests of the fudge and of BADTIME: there is no
    /// other way to skew one process's clock without faking the whole machine's).
    #[doc(hidden)]
    pub fn with_clock_offset(mut self, seconds: i64) -> Rfc2136 {
        self.clock_offset = seconds;
        self
    }

    fn now(&self) -> u64 {
        unix_now().saturating_add_signed(self.clock_offset)
    }

    fn unavailable(&self, what: String) -> Failure {
        Failure::new(FailureKind::Unavailable, what)
    }

    fn auth(&self, what: String) -> Failure {
        Failure::new(FailureKind::Auth, what)
    }

    fn algorithm_text(&self) -> &'static str {
        self.signer
            .as_ref()
            .map(|s| match s.algorithm() {
                HickoryTsigAlgorithm::HmacSha384 => "hmac-sha384",
                HickoryTsigAlgorithm::HmacSha512 => "hmac-sha512",
                _ => "hmac-sha256",
            })
            .unwrap_or("none")
    }
}

impl DnsBackend for Rfc2136 {
    fn read<'a>(&'a self, rec: &'a RecordRef) -> BoxFut<'a, ActionResult<Option<RRset>>> {
        Box::pin(async move { self.do_read(rec).await.map_err(|e| self.context(rec, e)) })
    }

    /// One atomic UPDATE conditional on `seen`, signed with the key (fudge [`TSIG_FUDGE`]).
    fn replace<'a>(
        &'a self,
        rec: &'a RecordRef,
        seen: Option<&'a RRset>,
        new: &'a RRset,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(async move {
            self.do_replace(rec, seen, new)
                .await
                .map_err(|e| self.context(rec, e))
        })
    }

    fn describe(&self) -> String {
        format!("rfc2136 {} zone {}", self.server, self.zone_text)
    }
}

/// The RFC mnemonic of an rcode (`NXRRSET`), which operators find in server logs.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

fn hickory_type(t: RecordType) -> HickoryType {
    match t {
        RecordType::A => HickoryType::A,
        RecordType::Aaaa => HickoryType::AAAA,
        RecordType::Cname => HickoryType::CNAME,
    }
}

/// The record data for one value of `rec`, from its canonical text.
fn rdata(rec: &RecordRef, value: &str) -> ActionResult<RData> {
    let bad = |what: &str| {
        Failure::new(
            FailureKind::Rejected,
            format!("value {value:?} is not {what}"),
        )
    };
    Ok(match rec.rtype {
        RecordType::A => RData::A(A(
            Ipv4Addr::from_str(value).map_err(|_| bad("an IPv4 address"))?
        )),
        RecordType::Aaaa => RData::AAAA(AAAA(
            Ipv6Addr::from_str(value).map_err(|_| bad("an IPv6 address"))?,
        )),
        RecordType::Cname => RData::CNAME(CNAME(
            parse_absolute(value).map_err(|_| bad("an absolute name"))?,
        )),
    })
}

/// A name that must be absolute (end with a dot).
fn parse_absolute(text: &str) -> Result<Name, String> {
    if !text.ends_with('.') {
        return Err("must be absolute (end with a dot)".into());
    }
    Name::from_ascii(text).map_err(|e| e.to_string())
}

fn canonical_name(name: &Name) -> String {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n.to_ascii()
}

fn reply_truncated(reply: &[u8]) -> bool {
    reply.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// The server time in a BADTIME reply's "other data" (48-bit seconds).
fn server_time(other: &[u8]) -> Option<u64> {
    let b: [u8; 6] = other.try_into().ok()?;
    Some(b.iter().fold(0u64, |t, &x| t << 8 | u64::from(x)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random message ID (RFC 5452: IDs must not be guessable).
fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // ring's system random; an all-zero ID if the OS has no randomness is still a valid ID.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::update_message::UpdateMessage;

    fn provider(key: bool) -> Rfc2136 {
        Rfc2136::new(Rfc2136Settings {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "fo.test.".into(),
            key: key.then(|| TsigKey {
                name: "failover-key.".into(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: Zeroizing::new(vec![7; 32]),
            }),
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    fn gw() -> RecordRef {
        RecordRef {
            name: "gw.fo.test.".into(),
            rtype: RecordType::A,
        }
    }

    #[test]
    fn the_update_requires_the_old_values_deletes_the_set_and_adds_the_new_ones() {
        let seen = RRset::new(60, vec!["192.0.2.1".into(), "192.0.2.2".into()]);
        let new = RRset::new(30, vec!["198.51.100.7".into()]);
        let m = provider(true)
            .update_message(&gw(), Some(&seen), &new)
            .unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Update);
        assert_eq!(m.zones().len(), 1);
        assert_eq!(m.zones()[0].query_type(), HickoryType::SOA);
        assert_eq!(m.zones()[0].name().to_ascii(), "fo.test.");
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 2);
        for (r, v) in pre.iter().zip(["192.0.2.1", "192.0.2.2"]) {
            assert_eq!((r.dns_class, r.ttl), (DNSClass::IN, 0));
            assert_eq!(r.data, RData::A(A(v.parse().unwrap())));
        }
        let up = m.updates();
        assert_eq!(up.len(), 2);
        assert_eq!((up[0].dns_class, up[0].ttl), (DNSClass::ANY, 0));
        assert_eq!(up[0].data, RData::Update0(HickoryType::A));
        assert_eq!((up[1].dns_class, up[1].ttl), (DNSClass::IN, 30));
        assert_eq!(up[1].data, RData::A(A("198.51.100.7".parse().unwrap())));
    }

    #[test]
    fn an_absent_set_is_required_to_be_absent() {
        let new = RRset::new(30, vec!["198.51.100.7".into()]);
        let m = provider(false).update_message(&gw(), None, &new).unwrap();
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 1);
        assert_eq!((pre[0].dns_class, pre[0].ttl), (DNSClass::NONE, 0));
        assert_eq!(pre[0].data, RData::Update0(HickoryType::A));
    }

    #[test]
    fn names_outside_the_zone_and_bad_values_are_rejected_before_sending() {
        let p = provider(false);
        let new = RRset::new(30, vec!["198.51.100.7".into()]);
        let other = RecordRef {
            name: "gw.other.test.".into(),
            rtype: RecordType::A,
        };
        let e = p.update_message(&other, None, &new).unwrap_err();
        assert_eq!(e.kind, FailureKind::Rejected);
        assert!(e.message.contains("not in zone fo.test."), "{e}");
        let bad = RRset::new(30, vec!["2001:db8::1".into()]);
        let e = p.update_message(&gw(), None, &bad).unwrap_err();
        assert!(e.message.contains("not an IPv4 address"), "{e}");
        let cname = RecordRef {
            name: "www.fo.test.".into(),
            rtype: RecordType::Cname,
        };
        let e = p
            .update_message(&cname, None, &RRset::new(30, vec!["gw.fo.test".into()]))
            .unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
    }

    #[test]
    fn signed_updates_carry_a_fudge_of_300_seconds() {
        let p = provider(true);
        let mut m = p
            .update_message(&gw(), None, &RRset::new(30, vec!["192.0.2.9".into()]))
            .unwrap();
        m.finalize(p.signer.as_ref().unwrap(), unix_now()).unwrap();
        let bytes = m.to_vec().unwrap();
        let back = Message::from_vec(&bytes).unwrap();
        let tsig = back.signature().unwrap();
        assert_eq!(tsig.data.fudge, 300);
        assert_eq!(tsig.name.to_ascii(), "failover-key.");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = TsigKey {
            name: "k.".into(),
            algorithm: TsigAlgorithm::HmacSha512,
            secret: Zeroizing::new(b"very-secret-bytes".to_vec()),
        };
        let text = format!("{key:?} {:?}", provider(true));
        assert!(!text.contains("very-secret"), "{text}");
        assert!(!text.contains("[7, 7"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn key_files_from_tsig_keygen_and_bare_secrets_are_read() {
        let file = "key \"failover-key\" {\n\talgorithm hmac-sha384;\n\tsecret \"c2VjcmV0LWJ5dGVz\";\n};\n";
        let k = TsigKey::from_key_file(file, None, None).unwrap();
        assert_eq!(k.name, "failover-key.");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha384);
        assert_eq!(&k.secret[..], b"secret-bytes");
        let e = TsigKey::from_key_file(file, Some("other-key"), None).unwrap_err();
        assert!(e.contains("other-key"), "{e}");
        let k = TsigKey::from_key_file("c2VjcmV0LWJ5dGVz\n", Some("bare-key"), None).unwrap();
        assert_eq!(
            (k.name.as_str(), k.algorithm),
            ("bare-key.", TsigAlgorithm::HmacSha256)
        );
        let e = TsigKey::from_key_file("not base64 !!", Some("k"), None).unwrap_err();
        assert!(!e.contains("!!"), "{e}");
    }

    #[test]
    fn describe_names_the_server_and_the_zone() {
        assert_eq!(
            provider(false).describe(),
            "rfc2136 127.0.0.1:53 zone fo.test."
        );
    }
}
