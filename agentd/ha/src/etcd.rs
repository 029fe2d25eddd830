//! [`EtcdStore`]: the pair's keys on etcd v3. Every request has the configured deadline, so a
//! store that accepts connections and never answers is [`StoreError::Unreachable`] in time.
//! Send times are read from tokio's clock, agentd's one clock.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};

use crate::{Change, Holder, MemberJson, MemberState, Snapshot, StoreConfig, StoreError};

/// etcd's default `--grpc-keepalive-min-time`.
const ETCD_MIN_PING_INTERVAL: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    config: StoreConfig,
    client: Client,
    lease: Option<Lease>,
}

struct Lease {
    id: i64,
    /// The keepalive stream; `None` after a reconnect (the next keepalive opens one).
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl EtcdStore {
    /// Connects (lazily: the first request finds out whether the store is there).
    pub async fn connect(config: StoreConfig) -> Result<EtcdStore, StoreError> {
        let client = Self::client(&config).await?;
        Ok(EtcdStore {
            config,
            client,
            lease: None,
        })
    }

    /// A new client (new connections), keeping the lease: after requests failed, the old
    /// connection may be half dead (packets dropped on the way, nothing reset), and waiting for
    /// it to recover can take longer than the lease lives.
    pub async fn reconnect(&mut self) -> Result<(), StoreError> {
        self.client = Self::client(&self.config).await?;
        if let Some(l) = self.lease.as_mut() {
            l.stream = None;
        }
        Ok(())
    }

    async fn client(config: &StoreConfig) -> Result<Client, StoreError> {
        // HTTP/2 pings no more often than etcd allows (`--grpc-keepalive-min-time`, 5 s by
        // default: a client that pings more often is sent away with "too many pings", which
        // breaks every stream). No channel-wide timeout: it would cut the watch and keepalive
        // streams; every request has its own deadline ([`deadline`]).
        let options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_keep_alive(
                ETCD_MIN_PING_INTERVAL,
                config.request_timeout.max(Duration::from_secs(1)),
            );
        deadline(
            config,
            Client::connect(config.endpoints.clone(), Some(options)),
        )
        .await
    }

    fn holder_key(&self) -> String {
        format!("{}holder", self.config.prefix)
    }

    fn members_prefix(&self) -> String {
        format!("{}members/", self.config.prefix)
    }

    fn member_key(&self, name: &str) -> String {
        format!("{}{name}", self.members_prefix())
    }

    /// Grants a new lease of the configured TTL; returns when the request was sent, from
    /// which the lease counts.
    pub async fn grant(&mut self) -> Result<Instant, StoreError> {
        let sent = tokio::time::Instant::now().into_std();
        let ttl = self.config.lease_ttl.as_secs().max(1) as i64;
        let granted = deadline(&self.config, self.client.lease_grant(ttl, None)).await?;
        let (keeper, answers) =
            deadline(&self.config, self.client.lease_keep_alive(granted.id())).await?;
        self.lease = Some(Lease {
            id: granted.id(),
            stream: Some((keeper, answers)),
        });
        Ok(sent)
    }

    /// Renews the lease; returns when the renewal was sent (the lease is valid for a TTL
    /// from then). [`StoreError::LeaseLost`] when the store no longer has it.
    pub async fn keep_alive(&mut self) -> Result<Instant, StoreError> {
        let timeout = self.config.request_timeout;
        let lease = self.lease.as_mut().ok_or(StoreError::LeaseLost)?;
        let sent = tokio::time::Instant::now().into_std();
        let Some((keeper, answers)) = lease.stream.as_mut() else {
            return self.renew_anew(sent).await;
        };
        let answer = tokio::time::timeout(timeout, async {
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(a))) if a.ttl() > 0 => Ok(sent),
            Ok(Ok(Some(_))) => {
                self.lease = None;
                Err(StoreError::LeaseLost)
            }
            // The keepalive stream broke (etcd closes it when the lease expires, and a
            // restarted connection loses it): ask about the lease itself, and open a new
            // stream if it is still there.
            Ok(Ok(None)) | Ok(Err(_)) => self.renew_anew(sent).await,
            Err(_) => Err(StoreError::Unreachable("keepalive timed out".into())),
        }
    }

    async fn renew_anew(&mut self, sent: Instant) -> Result<Instant, StoreError> {
        let id = self.lease.as_ref().ok_or(StoreError::LeaseLost)?.id;
        let ttl = deadline(&self.config, self.client.lease_time_to_live(id, None)).await?;
        if ttl.ttl() <= 0 {
            self.lease = None;
            return Err(StoreError::LeaseLost);
        }
        let (mut keeper, mut answers) =
            deadline(&self.config, self.client.lease_keep_alive(id)).await?;
        let renewed = deadline(&self.config, async {
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await?;
        self.lease = Some(Lease {
            id,
            stream: Some((keeper, answers)),
        });
        match renewed {
            Some(a) if a.ttl() > 0 => Ok(sent),
            _ => {
                self.lease = None;
                Err(StoreError::LeaseLost)
            }
        }
    }

    /// Takes the role if nobody holds it: `Ok(revision)` when won, `Err(holder)` with the
    /// member that has it.
    pub async fn campaign(&mut self) -> Result<Result<i64, Holder>, StoreError> {
        let lease = self.lease.as_ref().ok_or(StoreError::LeaseLost)?.id;
        let key = self.holder_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.config.member.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = deadline(&self.config, self.client.txn(txn)).await?;
        if resp.succeeded() {
            let revision = resp
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| StoreError::Malformed("a transaction without header".into()))?;
            return Ok(Ok(revision));
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    return Ok(Err(holder_of(kv)?));
                }
            }
        }
        // The holder went between the compare and the get: nobody holds it now.
        Err(StoreError::Malformed(
            "the role is held but the holder key is missing".into(),
        ))
    }

    /// Gives the role up, if we hold it (a compare on the value: never deletes another's).
    pub async fn resign(&mut self) -> Result<(), StoreError> {
        let key = self.holder_key();
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.config.member.clone(),
            )])
            .and_then([TxnOp::delete(key, None)]);
        deadline(&self.config, self.client.txn(txn)).await?;
        Ok(())
    }

    /// Deletes a holder key with our name on a lease that is not ours: what a previous life of
    /// this gateway held (it crashed with the role). A restarted gateway never resumes its role,
    /// and freeing it at once lets the pair elect without waiting for that lease to expire.
    /// Returns whether a key was deleted.
    pub async fn clear_stale_hold(&mut self) -> Result<bool, StoreError> {
        let lease = self.lease.as_ref().ok_or(StoreError::LeaseLost)?.id;
        let key = self.holder_key();
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, self.config.member.clone()),
                Compare::lease(key.clone(), CompareOp::NotEqual, lease),
            ])
            .and_then([TxnOp::delete(key, None)]);
        let resp = deadline(&self.config, self.client.txn(txn)).await?;
        Ok(resp.succeeded())
    }

    /// Publishes this member's state, on its lease.
    pub async fn publish(&mut self, state: &MemberState) -> Result<(), StoreError> {
        let lease = self.lease.as_ref().ok_or(StoreError::LeaseLost)?.id;
        let value = serde_json::to_string(&MemberJson::from(state))
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let key = self.member_key(&self.config.member);
        deadline(
            &self.config,
            self.client
                .put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await?;
        Ok(())
    }

    /// Reads the holder and the other members' states.
    pub async fn read(&mut self) -> Result<Snapshot, StoreError> {
        let prefix = self.config.prefix.clone();
        let resp = deadline(
            &self.config,
            self.client
                .get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut snap = Snapshot {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..Snapshot::default()
        };
        for kv in resp.kvs() {
            match self.change_of(kv.key(), Some(kv))? {
                Some(Change::Holder(h)) => snap.holder = h,
                Some(Change::Member(name, Some(state))) => snap.members.push((name, state)),
                _ => {}
            }
        }
        Ok(snap)
    }

    /// Watches the pair's keys from `revision` on.
    pub async fn watch(&mut self, revision: i64) -> Result<Watch, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        let prefix = self.config.prefix.clone();
        let stream = deadline(&self.config, self.client.watch(prefix, Some(options))).await?;
        Ok(Watch {
            stream,
            prefix: self.config.prefix.clone(),
            member: self.config.member.clone(),
        })
    }

    fn change_of(
        &self,
        key: &[u8],
        kv: Option<&etcd_client::KeyValue>,
    ) -> Result<Option<Change>, StoreError> {
        parse_change(&self.config.prefix, &self.config.member, key, kv)
    }
}

/// The pair's changes as etcd's watch reports them.
pub struct Watch {
    stream: WatchStream,
    prefix: String,
    member: String,
}

impl Watch {
    /// The next changes (a batch of one revision); `Err` when the watch broke: read again
    /// and watch from the snapshot's revision.
    pub async fn next(&mut self) -> Result<Vec<Change>, StoreError> {
        let resp = self
            .stream
            .message()
            .await
            .map_err(unreachable)?
            .ok_or_else(|| StoreError::Unreachable("watch closed".into()))?;
        if resp.canceled() {
            return Err(StoreError::Unreachable("watch canceled".into()));
        }
        let mut out = Vec::new();
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let kv = match e.event_type() {
                EventType::Put => Some(kv),
                EventType::Delete => None,
            };
            let key = e.kv().map(|k| k.key()).unwrap_or_default();
            if let Some(c) = parse_change(&self.prefix, &self.member, key, kv)? {
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// The change a key (and its value, `None` when deleted) stands for; `None` for our own
/// member key and keys this crate does not know.
fn parse_change(
    prefix: &str,
    me: &str,
    key: &[u8],
    kv: Option<&etcd_client::KeyValue>,
) -> Result<Option<Change>, StoreError> {
    let key = std::str::from_utf8(key).map_err(|e| StoreError::Malformed(e.to_string()))?;
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    if rest == "holder" {
        return Ok(Some(Change::Holder(kv.map(holder_of).transpose()?)));
    }
    let Some(name) = rest.strip_prefix("members/") else {
        return Ok(None);
    };
    if name == me {
        return Ok(None);
    }
    let state = match kv {
        None => None,
        Some(kv) => {
            let json: MemberJson = serde_json::from_slice(kv.value())
                .map_err(|e| StoreError::Malformed(format!("member {name}: {e}")))?;
            Some(MemberState::from(json))
        }
    };
    Ok(Some(Change::Member(name.to_owned(), state)))
}

fn holder_of(kv: &etcd_client::KeyValue) -> Result<Holder, StoreError> {
    Ok(Holder {
        member: kv
            .value_str()
            .map_err(|e| StoreError::Malformed(e.to_string()))?
            .to_owned(),
        revision: kv.create_revision(),
    })
}

fn unreachable(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    // A put or a transaction on a lease that expired (while we were cut off): etcd answers
    // NotFound "etcdserver: requested lease not found". The store is there; our lease is not.
    if text.contains("requested lease not found") {
        return StoreError::LeaseLost;
    }
    StoreError::Unreachable(text)
}

/// `f` within the request deadline.
async fn deadline<T>(
    config: &StoreConfig,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(config.request_timeout, f).await {
        Ok(r) => r.map_err(unreachable),
        Err(_) => Err(StoreError::Unreachable(format!(
            "no answer within {:?}",
            config.request_timeout
        ))),
    }
}
