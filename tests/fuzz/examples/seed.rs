//! Writes the seeds of the corpora (`cargo run -p isthmus-fuzz --example seed`): real inputs
//! made by the encoders of the code under test, and the example configs. Existing files are
//! kept; the fuzzer's own finds are added by `tests/fuzz/run` and minimized with `cargo fuzz
//! cmin`.

use std::fs;
use std::path::Path;

use isthmus_core::wire::{Kind, Packet, Tail, Tlv, V1, V2};
use isthmus_core::{AnswerPin, CheckState, Health, PeerChecks, View};
use isthmus_offload::{VnetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(format!("seed-{name}")), data).expect("seed file");
}

fn probes() {
    let view = View {
        health: Health::Up,
        pinned: true,
        draining: false,
        priority: 1,
        fingerprint: 0xdead_beef,
        rx_loss_ppm: Some(1200),
    };
    let base = Packet {
        version: V2,
        kind: Kind::Request,
        seq: 7,
        sent_us: 1_700_000_000_000_000,
        view,
        speaks_v2: true,
        speaks_pmtu: true,
        tail: Tail::default(),
    };
    let v1 = Packet {
        version: V1,
        tail: Tail::default(),
        ..base.clone()
    };
    let full = Packet {
        kind: Kind::Reply,
        tail: Tail {
            pad_to: Some(300),
            confirms_size: Some(1400),
            path_mtu: Some(8920),
            checks: Some(PeerChecks {
                link: Some(CheckState::Pass),
                dns: vec![
                    (42, vec![CheckState::Pass, CheckState::Fail]),
                    (7, vec![CheckState::Unknown]),
                ],
            }),
            drill: Some("db-east".into()),
            answer_pins: vec![AnswerPin {
                group: 42,
                answer: 1,
            }],
            ha: Some(isthmus_core::HaAnnounce {
                role: isthmus_core::AnnouncedRole::Active,
                revision: 12,
            }),
            other: vec![Tlv {
                code: 0x42,
                value: b"future".to_vec(),
            }],
        },
        ..base.clone()
    };
    let mtu_probe = Packet {
        kind: Kind::MtuProbe,
        tail: Tail {
            pad_to: Some(1400),
            ..Tail::default()
        },
        ..base.clone()
    };
    let mtu_ack = Packet {
        kind: Kind::MtuAck,
        tail: Tail {
            confirms_size: Some(1400),
            ..Tail::default()
        },
        ..base.clone()
    };
    for (name, p) in [
        ("v1", v1),
        ("v2", base),
        ("v2-full", full),
        ("v2-mtu-probe", mtu_probe),
        ("v2-mtu-ack", mtu_ack),
    ] {
        write("probe", name, &isthmus_fuzz::probe::encode(&p));
    }
}

/// A TCP super-packet as the kernel hands it to a TUN read with TSO on.
fn super_packet(v6: bool, payload: usize, mss: u16) -> Vec<u8> {
    let tcp_len = 20 + payload;
    let mut ip = if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        h.extend_from_slice(&[6, 64]);
        h.extend_from_slice(&[0xfd; 16]);
        h.extend_from_slice(&[0xfe; 16]);
        h
    } else {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1]);
        h
    };
    let mut tcp = vec![0x9c, 0x40, 0x01, 0xbb];
    tcp.extend_from_slice(&1000u32.to_be_bytes());
    tcp.extend_from_slice(&2000u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    ip.extend_from_slice(&tcp);
    ip.extend((0..payload).map(|i| i as u8));
    let hdr = VnetHdr {
        flags: 0,
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: 0,
        gso_size: mss,
        csum_start: 0,
        csum_offset: 0,
    };
    let mut read = hdr.to_bytes().to_vec();
    read.extend_from_slice(&ip);
    read
}

fn offload() {
    write("offload", "tcp4-tso", &super_packet(false, 3000, 1000));
    write("offload", "tcp6-tso", &super_packet(true, 2500, 1200));
    write("offload", "tcp4-short", &super_packet(false, 40, 1400));
    let mut single = VnetHdr::NONE.to_bytes().to_vec();
    single.extend_from_slice(&super_packet(false, 100, 1400)[VnetHdr::LEN..]);
    write("offload", "tcp4-alone", &single);
}

fn configs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for e in fs::read_dir(dir).expect("config/") {
        let path = e.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        write("config", &name, &fs::read(&path).expect("example config"));
    }
}

/// Answers as Route 53 and EC2 write them (the shapes moto and the AWS documentation show).
fn aws() {
    let list = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets><ResourceRecordSet><Name>gw.fo.test.</Name><Type>A</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.9</Value></ResourceRecord><ResourceRecord><Value>198.51.100.7</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"#;
    let change = r#"<?xml version="1.0" encoding="UTF-8"?>
<ChangeResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeInfo><Id>/change/C2682N5HXP0BZ4</Id><Status>PENDING</Status><SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>"#;
    let invalid = r#"<?xml version="1.0"?>
<InvalidChangeBatch xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Messages><Message>Tried to delete resource record set [name='gw.fo.test.', type='A'] but it was not found</Message></Messages><RequestId>b25f48e8-84fd-11e6-80d9-574e0c4664cb</RequestId></InvalidChangeBatch>"#;
    let r53_error = r#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
    let describe = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId><routeTableSet><item><routeTableId>rtb-0fuzz</routeTableId><vpcId>vpc-1</vpcId><routeSet><item><destinationCidrBlock>10.1.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><state>active</state><origin>CreateRouteTable</origin></item><item><destinationCidrBlock>10.2.0.0/16</destinationCidrBlock><networkInterfaceId>eni-0123456789abcdef0</networkInterfaceId><state>active</state></item><item><destinationIpv6CidrBlock>fd00:2::/64</destinationIpv6CidrBlock><instanceId>i-0abc</instanceId><state>blackhole</state></item><item><destinationPrefixListId>pl-1</destinationPrefixListId><gatewayId>vpce-1</gatewayId></item></routeSet></item></routeTableSet></DescribeRouteTablesResponse>"#;
    let ec2_error = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidRoute.NotFound</Code><Message>no route with destination-cidr-block 10.2.0.0/16 in route table rtb-0fuzz</Message></Error></Errors><RequestID>x</RequestID></Response>"#;
    let ret = r#"<CreateRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><return>true</return></CreateRouteResponse>"#;
    for (name, body) in [
        ("route53-list", list),
        ("route53-change", change),
        ("route53-invalid-batch", invalid),
        ("route53-error", r53_error),
        ("ec2-describe", describe),
        ("ec2-error", ec2_error),
        ("ec2-return", ret),
    ] {
        write("aws", name, body.as_bytes());
    }
}

/// Answers as the OCI APIs write them (the shapes of the API reference and the test stub).
fn oci() {
    let rrset = r#"{"items":[{"domain":"gw.fo.test","recordHash":"a1","isProtected":false,"rdata":"192.0.2.9","rrsetVersion":"3","rtype":"A","ttl":30},{"domain":"gw.fo.test","recordHash":"a2","isProtected":false,"rdata":"2001:db8::9","rrsetVersion":"3","rtype":"AAAA","ttl":60},{"domain":"gw.fo.test","rdata":"Target.Fo.Test","rtype":"CNAME","ttl":60}]}"#;
    let table = r#"{"id":"ocid1.routetable.oc1..fuzz","displayName":"gw","lifecycleState":"AVAILABLE","routeRules":[{"cidrBlock":"10.1.0.0/16","destination":"10.1.0.0/16","destinationType":"CIDR_BLOCK","networkEntityId":"ocid1.internetgateway.oc1..a"},{"destination":"10.2.0.0/16","destinationType":"CIDR_BLOCK","networkEntityId":"ocid1.privateip.oc1..b"},{"cidrBlock":"10.3.7.0/24","networkEntityId":"ocid1.drg.oc1..c"},{"destination":"all-iad-services-in-oracle-services-network","destinationType":"SERVICE_CIDR_BLOCK","networkEntityId":"ocid1.servicegateway.oc1..d"}]}"#;
    let error = r#"{"code":"NotAuthenticated","message":"The required information to complete authentication was not provided or was incorrect."}"#;
    let conflict = r#"{"code":"PreconditionFailed","message":"The resource has been modified (etag mismatch)"}"#;
    for (name, body) in [
        ("dns-rrset", rrset),
        ("route-table", table),
        ("error", error),
        ("precondition-failed", conflict),
    ] {
        write("oci", name, body.as_bytes());
    }
}

/// DNS replies as a server sends them: answers to a query, and answers to an UPDATE.
fn dns() {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    let name = |n: &str| Name::from_ascii(n).expect("a name");
    let reply = |op: OpCode, code: ResponseCode, answers: Vec<Record>| {
        let mut m = Message::new(0x1234, MessageType::Response, op);
        m.metadata.response_code = code;
        m.metadata.authoritative = true;
        m.add_query(Query::query(name("gw.fo.test."), RecordType::A));
        for a in answers {
            m.add_answer(a);
        }
        m.to_vec().expect("a message")
    };
    let a = |ip: [u8; 4]| {
        Record::from_rdata(
            name("gw.fo.test."),
            30,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    };
    let aaaa = Record::from_rdata(
        name("gw.fo.test."),
        30,
        RData::AAAA(AAAA::from(std::net::Ipv6Addr::LOCALHOST)),
    );
    let cname = Record::from_rdata(
        name("www.fo.test."),
        60,
        RData::CNAME(CNAME(name("gw.fo.test."))),
    );
    let soa = Record::from_rdata(
        name("fo.test."),
        60,
        RData::SOA(SOA::new(
            name("ns1.fo.test."),
            name("admin.fo.test."),
            2026010101,
            3600,
            600,
            86400,
            60,
        )),
    );
    let seeds = [
        (
            "query-a",
            reply(
                OpCode::Query,
                ResponseCode::NoError,
                vec![cname, a([192, 0, 2, 9]), a([198, 51, 100, 7]), aaaa],
            ),
        ),
        (
            "query-nxdomain",
            reply(OpCode::Query, ResponseCode::NXDomain, vec![soa.clone()]),
        ),
        (
            "update-noerror",
            reply(OpCode::Update, ResponseCode::NoError, vec![]),
        ),
        (
            "update-nxrrset",
            reply(OpCode::Update, ResponseCode::NXRRSet, vec![]),
        ),
        (
            "update-notauth",
            reply(OpCode::Update, ResponseCode::NotAuth, vec![soa]),
        ),
        (
            "update-refused",
            reply(OpCode::Update, ResponseCode::Refused, vec![]),
        ),
    ];
    for (n, bytes) in seeds {
        write("dns", n, &bytes);
    }
}

/// Requests as `wg` writes them, and what it never would.
fn uapi() {
    let set = "set=1\nprivate_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\nlisten_port=51820\npublic_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nendpoint=[abcd:23::33%2]:51820\nallowed_ip=192.168.4.4/32\n\n";
    for (name, req) in [
        ("get", "get=1\n\n"),
        ("get-twice", "get=1\n\nget=1\n\n"),
        ("set", set),
        ("set-then-get", &format!("{set}get=1\n\n")),
        ("unknown", "version=1\n\n"),
        ("get-without-blank", "get=1\nget=1\n"),
    ] {
        write("uapi", name, req.as_bytes());
    }
}

/// Chunks for the receive path (`isthmus_agentd::fuzzing::wireguard`): `[mode, len, bytes]`,
/// mode 0 sealed by the peer, else raw.
fn wireguard() {
    let chunk = |mode: u8, bytes: &[u8]| {
        let mut c = vec![mode];
        c.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        c.extend_from_slice(bytes);
        c
    };
    // Wire-sized segments of one flow from an allowed source, as the peer's split made them.
    let mut read = super_packet(false, 4000, 1000);
    read[VnetHdr::LEN + 12..VnetHdr::LEN + 16].copy_from_slice(&[10, 2, 0, 1]);
    let hdr = VnetHdr::parse(&read).expect("a header");
    let mut segments = Vec::new();
    isthmus_offload::split(&hdr, &mut read[VnetHdr::LEN..], |s| {
        segments.push(s.to_vec())
    })
    .expect("a valid super-packet");
    let train: Vec<u8> = segments.iter().flat_map(|s| chunk(0, s)).collect();
    write("wireguard", "tcp-train", &train);
    // A packet from a source the peer may not use (10.1.0.1), then a keepalive.
    let mut foreign = segments[0].clone();
    foreign[12..16].copy_from_slice(&[10, 1, 0, 1]);
    let mut mixed = chunk(0, &foreign);
    mixed.extend(chunk(0, &[]));
    mixed.extend(chunk(0, &segments[1]));
    write("wireguard", "foreign-source", &mixed);
    // Raw datagrams of each message type, as a scanner sends them.
    let mut raw = Vec::new();
    for (kind, len) in [(1u8, 148usize), (2, 92), (3, 64), (4, 48), (4, 2000)] {
        let mut d = vec![0u8; len];
        d[0] = kind;
        raw.extend(chunk(1, &d));
    }
    write("wireguard", "raw-messages", &raw);
}

/// Requests as netctl sends them (first byte: 0 root, 1 a user without access).
fn control() {
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: agentd\r\nx-isthmus-client: netctl/0.1.0\r\n\r\n")
    };
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: agentd\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let seeds = [
        ("status", 0, get("/v1/status")),
        ("status-denied", 1, get("/v1/status")),
        ("links", 0, get("/v1/links")),
        ("routes", 0, get("/v1/routes")),
        ("events", 0, get("/v1/events?since=0&limit=10")),
        ("probes", 0, get("/v1/probes")),
        ("actions", 0, get("/v1/actions")),
        ("version", 0, get("/v1/version")),
        ("drill-get", 0, get("/v1/drill")),
        ("reload", 0, post("/v1/reload", "")),
        (
            "failover",
            0,
            post(
                "/v1/groups/oci-vcn/failover",
                r#"{"to": "internet", "reason": "maintenance"}"#,
            ),
        ),
        ("failback", 0, post("/v1/groups/oci-vcn/failback", "")),
        ("drain", 0, post("/v1/links/interconnect/drain", "")),
        ("undrain", 0, post("/v1/links/interconnect/undrain", "")),
        (
            "drill-start",
            0,
            post(
                "/v1/drill",
                r#"{"group": "oci-vcn", "hold_ms": 1000, "rto_target_ms": 500, "reason": "test"}"#,
            ),
        ),
        ("drill-abort", 0, post("/v1/drill/abort", "")),
    ];
    for (name, who, req) in seeds {
        let mut data = vec![who];
        data.extend_from_slice(req.as_bytes());
        write("control", name, &data);
    }
}

fn main() {
    control();
    probes();
    uapi();
    wireguard();
    offload();
    configs();
    aws();
    oci();
    dns();
}
