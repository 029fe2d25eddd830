//! The scheduler: every target probe on its own grid, a bounded number at once.
//!
//! [`TargetProbes`] runs each job in its own task at `first run + k × interval`; a run that is
//! late (waiting for a permit, or a slow consumer) skips the ticks it missed rather than firing
//! them in a burst. First runs are spread over the first interval by a hash of the job's name,
//! so that a thousand probes do not fire together and a probe keeps its phase across restarts.
//! At most [`MAX_IN_FLIGHT`] checks run at once. `replace` (config reload) leaves an unchanged
//! job's task and grid alone, restarts a changed one and stops a removed one; dropping the
//! handle stops all. Each outcome goes out on the results channel as a [`ProbeResult`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::trace;

use super::super::job::{Job, JobKey};
use super::tls::forget_trust;
use super::{run_job, Outcome, MAX_IN_FLIGHT};

/// The config refuses shorter intervals; the scheduler clamps too so that no input can make it
/// spin (and `tokio::time::interval` panics on zero).
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// A check that runs less than daily is not a health check; the cap keeps deadline arithmetic far
/// from overflowing.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the scheduler sends per run: the probe's name, the outcome, and when the run finished
/// (tokio's clock, so that paused-time tests see it; `into_std()` converts).
pub type ProbeResult = (JobKey, Outcome, Instant);

type RunFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
/// Runs one check: [`run_job`] in the daemon, something instant in the scheduler's tests.
type Runner = Arc<dyn Fn(Arc<Job>) -> RunFuture + Send + Sync>;

/// Runs every job at its probe's interval and sends each outcome on `results`.
/// Dropping it stops every probe task.
pub struct TargetProbes {
    scheduled: BTreeMap<JobKey, Scheduled>,
    results: mpsc::Sender<ProbeResult>,
    permits: Arc<Semaphore>,
    runner: Runner,
}

/// A job and the task that runs it; dropping it aborts the task.
struct Scheduled {
    job: Job,
    task: JoinHandle<()>,
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TargetProbes {
    /// Starts a task per job on the current runtime. If `results` closes, the tasks end.
    pub fn start(jobs: &[Job], results: mpsc::Sender<ProbeResult>) -> Self {
        let runner: Runner =
            Arc::new(|job: Arc<Job>| -> RunFuture { Box::pin(async move { run_job(&job).await }) });
        Self::start_with(jobs, results, MAX_IN_FLIGHT, runner)
    }

    fn start_with(
        jobs: &[Job],
        results: mpsc::Sender<ProbeResult>,
        max_in_flight: usize,
        runner: Runner,
    ) -> Self {
        let mut this = TargetProbes {
            scheduled: BTreeMap::new(),
            results,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            runner,
        };
        this.replace(jobs);
        this
    }

    /// Runs `probes` from now on (config reload). A probe whose name and settings are unchanged
    /// keeps its task and its grid; a changed one starts over; a removed one stops. The system's
    /// trusted CAs are read again at the next https check.
    pub fn replace(&mut self, jobs: &[Job]) {
        forget_trust();
        let mut next = BTreeMap::new();
        for job in jobs {
            let key = job.key();
            let kept = self.scheduled.remove(&key).filter(|s| s.job == *job);
            let scheduled = kept.unwrap_or_else(|| self.spawn(job));
            // A repeated name (the config refuses them) replaces the earlier one, which stops.
            next.insert(key, scheduled);
        }
        // Whatever is left was removed or changed: dropping aborts it.
        self.scheduled = next;
    }

    /// The jobs being run.
    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.scheduled.keys().map(JobKey::to_string)
    }

    fn spawn(&self, job: &Job) -> Scheduled {
        let interval = job.probe.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let first = Instant::now() + first_offset(&job.key().to_string(), interval);
        let task = tokio::spawn(schedule(
            Arc::new(job.clone()),
            first,
            interval,
            Arc::clone(&self.permits),
            self.results.clone(),
            Arc::clone(&self.runner),
        ));
        Scheduled {
            job: job.clone(),
            task,
        }
    }
}

/// One probe's life: run at `first`, then every `interval`; a run that is late (waiting for a
/// permit, or a slow consumer) skips the ticks it missed rather than firing them in a burst.
async fn schedule(
    job: Arc<Job>,
    first: Instant,
    interval: Duration,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<ProbeResult>,
    runner: Runner,
) {
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return; // never closed; nothing to run without permits anyway
        };
        let outcome = runner(Arc::clone(&job)).await;
        drop(permit);
        if results
            .send((job.key(), outcome, Instant::now()))
            .await
            .is_err()
        {
            trace!(probe = %job.key(), "probe results closed: stopping");
            return;
        }
    }
}

/// Where in its first interval a probe first runs: a hash of the name scaled to the interval.
/// Spreads many probes evenly, and a probe keeps its phase across restarts.
fn first_offset(name: &str, interval: Duration) -> Duration {
    let fnv = isthmus_core::fnv::fnv1a_64(name.as_bytes());
    // FNV-1a alone leaves the high bits of names that differ only at the end ("db-1", "db-2")
    // close together, and the scaling below uses the high bits: mix them (MurmurHash3's fmix64).
    let mut hash = fnv;
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    let nanos = u128::from(hash).saturating_mul(interval.as_nanos()) >> 64;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    fn every(name: &str, interval: Duration) -> Job {
        let mut p = tcp("127.0.0.1:1");
        p.name = name.to_string();
        p.interval = interval;
        p.timeout = interval;
        p.into()
    }

    /// A runner that passes at once and counts runs in flight (max seen in `peak`), taking `takes`.
    fn fake_runner(takes: Duration, peak: Arc<AtomicUsize>) -> Runner {
        let in_flight = Arc::new(AtomicUsize::new(0));
        Arc::new(move |_probe| -> RunFuture {
            let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
            Box::pin(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Outcome::new(Reason::Ok, takes)
            })
        })
    }

    fn drain(rx: &mut mpsc::Receiver<ProbeResult>) -> Vec<(String, Instant)> {
        let mut got = Vec::new();
        while let Ok((key, _, at)) = rx.try_recv() {
            got.push((key.to_string(), at));
        }
        got
    }

    fn times_of(results: &[(String, Instant)], name: &str) -> Vec<Instant> {
        results
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, at)| *at)
            .collect()
    }

    fn assert_gaps(times: &[Instant], gap: Duration) {
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], gap, "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_probes_every_50ms_report_ten_times_each_in_half_a_second() {
        let (tx, mut rx) = mpsc::channel(1024);
        let t0 = Instant::now();
        let probes = [every("a", ms(50)), every("b", ms(50)), every("c", ms(50))];
        let _running =
            TargetProbes::start_with(&probes, tx, 64, fake_runner(ms(0), Arc::default()));
        tokio::time::sleep(ms(600)).await;
        let results: Vec<_> = drain(&mut rx)
            .into_iter()
            .filter(|(_, at)| *at < t0 + ms(500))
            .collect();
        for name in ["a", "b", "c"] {
            let times = times_of(&results, name);
            assert_eq!(times.len(), 10, "{name}: {times:?}");
            assert!(times[0] - t0 < ms(50));
            assert_gaps(&times, ms(50));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replace_keeps_unchanged_schedules_restarts_changed_ones_and_stops_removed_ones() {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut running = TargetProbes::start_with(
            &[every("a", ms(50)), every("b", ms(50)), every("c", ms(50))],
            tx,
            64,
            fake_runner(ms(0), Arc::default()),
        );
        // Not a multiple of the interval: a restarted "a" would land off its old grid.
        tokio::time::sleep(ms(133)).await;
        running.replace(&[every("a", ms(50)), every("c", ms(100)), every("d", ms(50))]);
        let replaced_at = Instant::now();
        tokio::time::sleep(ms(500)).await;
        let results = drain(&mut rx);

        let a = times_of(&results, "a");
        assert!(a.len() >= 12, "{a:?}");
        assert_gaps(&a, ms(50));
        assert!(times_of(&results, "b").iter().all(|t| *t <= replaced_at));
        let c_after: Vec<_> = times_of(&results, "c")
            .into_iter()
            .filter(|t| *t > replaced_at)
            .collect();
        assert_eq!(c_after.len(), 5, "{c_after:?}");
        assert_gaps(&c_after, ms(100));
        assert_eq!(times_of(&results, "d").len(), 10);
        assert_eq!(running.names().collect::<Vec<_>>(), ["a", "c", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_every_probe() {
        let (tx, mut rx) = mpsc::channel(1024);
        let running = TargetProbes::start_with(
            &[every("a", ms(50)), every("b", ms(50))],
            tx,
            64,
            fake_runner(ms(10), Arc::default()),
        );
        tokio::time::sleep(ms(200)).await;
        drop(running);
        let dropped_at = Instant::now();
        // Every sender is gone once the aborted tasks are: the channel ends.
        let rest = tokio::time::timeout(ms(1000), async {
            let mut rest = Vec::new();
            while let Some((_, _, at)) = rx.recv().await {
                rest.push(at);
            }
            rest
        })
        .await
        .expect("the probe tasks did not stop");
        assert!(rest.iter().all(|at| *at <= dropped_at));
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_run_at_once() {
        let (tx, mut rx) = mpsc::channel(1024);
        let peak = Arc::new(AtomicUsize::new(0));
        let probes: Vec<Job> = (0..5).map(|i| every(&format!("p{i}"), ms(50))).collect();
        let _running = TargetProbes::start_with(&probes, tx, 2, fake_runner(ms(30), peak.clone()));
        tokio::time::sleep(ms(500)).await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        // 2 slots × 500 ms / 30 ms per run: the slots stay busy while the probes are behind.
        let n = drain(&mut rx).len();
        assert!((30..=34).contains(&n), "{n}");
    }

    #[test]
    fn first_runs_spread_over_the_first_interval() {
        let interval = Duration::from_secs(1);
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let offset = first_offset(&format!("probe-{i}"), interval);
            assert!(offset < interval);
            buckets[(offset.as_millis() / 100) as usize] += 1;
        }
        // 100 expected per 100 ms; a clump would show as a bucket far above it.
        assert!(
            buckets.iter().all(|n| (50..=150).contains(n)),
            "{buckets:?}"
        );
        assert_eq!(first_offset("db", interval), first_offset("db", interval));
        assert_eq!(first_offset("db", Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn real_probes_run_at_about_their_rate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let probes: Vec<Job> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let mut p = every(name, ms(50));
                p.probe.target = target.clone();
                p
            })
            .collect();
        let (tx, mut rx) = mpsc::channel(1024);
        let running = TargetProbes::start(&probes, tx);
        tokio::time::sleep(ms(500)).await;
        drop(running);
        let mut results = Vec::new();
        while let Some(r) = rx.recv().await {
            results.push(r);
        }
        for name in ["a", "b", "c"] {
            let mine: Vec<_> = results.iter().filter(|(k, _, _)| k.probe == name).collect();
            // 10 on an idle machine; a loaded CI machine may skip a tick or two.
            assert!((6..=11).contains(&mine.len()), "{name}: {}", mine.len());
            assert!(mine.iter().all(|(_, o, _)| o.reason == Reason::Ok));
        }
    }
}
