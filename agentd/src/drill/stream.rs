//! The drill's own dense probe stream: ICMP echoes to the peer's tunnel address over each link,
//! every `interval`, from a socket bound to the link's interface and inner address (so each
//! echo crosses that link's tunnel, whatever the routes say). An adapter task on the I/O
//! runtime; it hands the loop batches of [`Sample`]s, each echo once: answered (with its round
//! trip) or lost (no reply within [`LOST_AFTER`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::daemon::input::Input;
use crate::probe::target::icmp::EchoSocket;

/// An echo without reply for this long is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(1);
/// How often results go to the loop.
const BATCH_EVERY: Duration = Duration::from_millis(100);

/// One link of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLink {
    pub name: String,
    pub interface: String,
    pub local: IpAddr,
    pub peer: IpAddr,
}

pub enum StreamCmd {
    /// Start (or restart) the stream of drill `drill` on `links`.
    Start {
        drill: u64,
        links: Vec<StreamLink>,
        interval: Duration,
    },
    Stop,
}

/// One echo's fate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Index into the links of [`StreamCmd::Start`].
    pub link: usize,
    pub sent: std::time::Instant,
    /// `None`: lost.
    pub rtt: Option<Duration>,
}

/// What the stream tells the loop.
pub struct StreamReport {
    pub drill: u64,
    pub samples: Vec<Sample>,
    /// Links whose socket could not be opened, with the error (once).
    pub errors: Vec<(usize, String)>,
}

/// The adapter: one task per link while a stream runs.
pub async fn run(mut rx: mpsc::UnboundedReceiver<StreamCmd>, inputs: mpsc::Sender<Input>) {
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    while let Some(cmd) = rx.recv().await {
        for t in tasks.drain(..) {
            t.abort();
        }
        if let StreamCmd::Start {
            drill,
            links,
            interval,
        } = cmd
        {
            for (i, link) in links.into_iter().enumerate() {
                tasks.push(tokio::spawn(stream(
                    drill,
                    i,
                    link,
                    interval,
                    inputs.clone(),
                )));
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

async fn stream(
    drill: u64,
    index: usize,
    link: StreamLink,
    interval: Duration,
    inputs: mpsc::Sender<Input>,
) {
    let socket = match EchoSocket::open(link.peer, Some(link.local), Some(&link.interface)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let _ = inputs
                .send(Input::Drill(StreamReport {
                    drill,
                    samples: Vec::new(),
                    errors: vec![(index, format!("{}: {e}", link.name))],
                }))
                .await;
            return;
        }
    };
    // Sent and not yet answered: nonce → send time.
    let mut in_flight: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut batch: Vec<Sample> = Vec::new();
    let mut nonce: u64 = 1;
    let mut send = tokio::time::interval(interval);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(BATCH_EVERY);
    let (replies_tx, mut replies) = mpsc::unbounded_channel::<(u64, Instant)>();
    let receiver = {
        let socket = socket.clone();
        tokio::spawn(async move {
            while let Ok(n) = socket.recv().await {
                if replies_tx.send((n, Instant::now())).is_err() {
                    return;
                }
            }
        })
    };
    let _receiver = AbortOnDrop(receiver);
    loop {
        tokio::select! {
            biased;
            Some((n, at)) = replies.recv() => {
                if let Some(sent) = in_flight.remove(&n) {
                    batch.push(Sample { link: index, sent: sent.into_std(), rtt: Some(at - sent) });
                }
            }
            _ = send.tick() => {
                let now = Instant::now();
                // A send the kernel refuses (no route, link down) is an echo lost like any other.
                let _ = socket.send(nonce as u16, nonce).await;
                in_flight.insert(nonce, now);
                nonce += 1;
            }
            _ = flush.tick() => {
                let now = Instant::now();
                while let Some((&n, &sent)) = in_flight.first_key_value() {
                    if now.saturating_duration_since(sent) < LOST_AFTER {
                        break;
                    }
                    in_flight.remove(&n);
                    batch.push(Sample { link: index, sent: sent.into_std(), rtt: None });
                }
                if !batch.is_empty() {
                    let samples = std::mem::take(&mut batch);
                    let report = StreamReport { drill, samples, errors: Vec::new() };
                    if inputs.send(Input::Drill(report)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
