//! SIGHUP: reads the configuration again. Flows whose settings did not
//! change keep running untouched; removed flows stop reading and drain;
//! changed flows drain, then start again with the new settings (so the new
//! reading starts where the old one's confirmations ended, and nothing is
//! sent twice); new flows start. An invalid file changes nothing.
//!
//! Nothing here waits: a stopped flow drains in a task of the daemon's
//! `draining` set, and a flow to start fetches its shard map in its
//! `starting` set; the serve loop finishes each when it is done, and a stop
//! meanwhile finds both.

use super::flows::{RunningFlow, first_map, start_flow};
use super::systemd::notify_systemd;
use super::watch::add_watches;
use super::{Daemon, wanted};
use crate::config::{FlowSettings, Settings};
use crate::kinesis::shards::ShardMap;

impl Daemon {
    pub(super) fn reload(&mut self) {
        tracing::info!("reload begins");
        notify_systemd(&[
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::Status("reloading the configuration"),
        ]);
        let new = match Settings::load(&self.current.source) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "configuration rejected; the running one stays");
                notify_systemd(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status(
                        "running (reload rejected: invalid configuration)",
                    ),
                ]);
                return;
            }
        };
        let restart = self.current.needs_restart(&new);
        if !restart.is_empty() {
            tracing::warn!(
                settings = restart.join(", "),
                "these settings changed and take effect at the next restart; the rest of the reload is applied"
            );
        }
        // Metadata newly asked for is fetched at once (records read before
        // it arrives go without it).
        self.env.wanted.send_if_modified(|w| {
            let new = wanted(&new.flows);
            std::mem::replace(w, new) != new
        });
        let (changed, removed) = self.retire_flows(&new.flows);
        let mut added = 0;
        for f in &new.flows {
            let known = self.flows.iter().any(|k| k.settings.name == f.name);
            if !known && !self.pending.contains(&f.name) {
                added += 1;
                self.begin_start(f.clone());
            }
        }
        add_watches(self.watcher.as_mut(), &new.flows);
        self.current = Settings {
            flows: new.flows,
            shutdown_grace: new.shutdown_grace,
            ..self.current.clone()
        };
        tracing::info!(
            added,
            removed,
            changed,
            unchanged = self.flows.len(),
            "configuration reloaded"
        );
        notify_systemd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("running"),
        ]);
    }

    /// Stops the running flows that `new` changes or removes (they drain in
    /// `draining`); keeps the rest. Returns (changed, removed).
    fn retire_flows(&mut self, new: &[FlowSettings]) -> (usize, usize) {
        let deadline = tokio::time::Instant::now() + self.current.shutdown_grace;
        let (mut changed, mut removed) = (0, 0);
        let mut kept = Vec::new();
        for running in std::mem::take(&mut self.flows) {
            match new.iter().find(|f| f.name == running.settings.name) {
                Some(f) if *f == running.settings => {
                    kept.push(running);
                    continue;
                }
                Some(_) => changed += 1,
                None => removed += 1,
            }
            // The cut is set now; the drain goes on beside the serve loop.
            running.stop();
            self.pending.insert(running.settings.name.clone());
            self.draining.spawn(drain(running, deadline));
        }
        // The watcher's callback gets the hints of the flows that remain.
        *self.watched.lock().unwrap_or_else(|p| p.into_inner()) = kept
            .iter()
            .map(|f| (f.hint.clone(), f.wakes.clone()))
            .collect();
        self.flows = kept;
        (changed, removed)
    }

    /// A flow a reload stopped has drained: a flow of its name in the
    /// current settings starts now.
    pub(super) fn drained(&mut self, name: String) {
        match self.current.flows.iter().find(|f| f.name == name) {
            Some(f) => self.begin_start(f.clone()),
            None => {
                self.pending.remove(&name);
            }
        }
    }

    /// Fetches `flow`'s first shard map beside the serve loop.
    fn begin_start(&mut self, flow: FlowSettings) {
        self.pending.insert(flow.name.clone());
        let client = self.env.client.kinesis.clone();
        self.starting.spawn(async move {
            let map = first_map(client, flow.clone()).await;
            (flow, map)
        });
    }

    /// `flow`'s first map is known: it starts, unless a later reload changed
    /// it meanwhile (then its new settings fetch their own) or removed it.
    pub(super) fn map_ready(&mut self, flow: FlowSettings, map: Option<ShardMap>) {
        match self.current.flows.iter().find(|f| f.name == flow.name) {
            Some(now) if *now == flow => {
                self.pending.remove(&flow.name);
                let running = start_flow(&self.env, &flow, map, &self.watched);
                tracing::info!(flow = %flow.name, "flow started with the reloaded settings");
                self.flows.push(running);
            }
            Some(now) => self.begin_start(now.clone()),
            None => {
                self.pending.remove(&flow.name);
            }
        }
    }
}

/// Drains a flow a reload stopped, within the grace it had then.
async fn drain(running: RunningFlow, deadline: tokio::time::Instant) -> String {
    let name = running.settings.name.clone();
    if !running.drain(deadline).await {
        tracing::warn!(flow = %name, "a flow the reload stopped did not drain in time; its records not yet confirmed stay unconfirmed");
    }
    name
}
