//! `isthmus_runtime_alive_tasks{runtime}`: the tasks alive on agentd's two tokio runtimes (the
//! event loop's and the adapters' `agentd-io`), read from tokio at scrape time. A count that
//! grows with time is a task leak: a connection handler, a lookup or a reconciler that never
//! ends. The soak (`tests/soak`) watches its slope.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio::runtime::Handle;

use super::family::Family;

const NAME: &str = "isthmus_runtime_alive_tasks";
const HELP: &str = "Tasks alive on each of agentd's tokio runtimes (loop: the event loop's; io: \
                    the adapters').";

/// A collector over the runtimes' handles, registered once the runtimes exist.
pub struct Runtimes {
    desc: Desc,
    runtimes: [(&'static str, Handle); 2],
}

impl Runtimes {
    pub fn new(event_loop: Handle, io: Handle) -> Runtimes {
        let desc = Desc::new(
            NAME.into(),
            HELP.into(),
            vec!["runtime".into()],
            Default::default(),
        )
        .expect("a valid metric description");
        Runtimes {
            desc,
            runtimes: [("loop", event_loop), ("io", io)],
        }
    }
}

impl Collector for Runtimes {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut tasks = Family::gauge(NAME, HELP);
        for (name, handle) in &self.runtimes {
            tasks.add(
                &[("runtime", name)],
                handle.metrics().num_alive_tasks() as f64,
            );
        }
        tasks.build().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_counts_the_tasks_alive_on_each_runtime() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let (event_loop, io) = (runtime(), runtime());
        let runtimes = Runtimes::new(event_loop.handle().clone(), io.handle().clone());
        let value = |runtimes: &Runtimes, name: &str| {
            let families = runtimes.collect();
            let metric = families[0]
                .get_metric()
                .iter()
                .find(|m| m.get_label()[0].value() == name)
                .cloned()
                .unwrap();
            metric.get_gauge().get_value()
        };
        let base = value(&runtimes, "io");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = io.spawn(async move {
            let _ = stopped.await;
        });
        assert_eq!(value(&runtimes, "io"), base + 1.0);
        let _ = stop.send(());
        io.block_on(task).unwrap();
        assert_eq!(value(&runtimes, "io"), base);
        assert_eq!(value(&runtimes, "loop"), 0.0, "nothing was spawned there");
        assert_eq!(runtimes.collect()[0].name(), NAME);
    }
}
