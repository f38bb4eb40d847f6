//! A function's execution environments, scaled the way Lambda scales them.
//!
//! An invocation goes to an idle environment (the one that finished last, so the warmest), else
//! to a new one while fewer than `max_concurrency` exist (that invocation is its cold start),
//! else it waits for the first environment to free up. Lambda would throttle instead of waiting;
//! the local stack's callers (the HTTP API, the pollers) would only retry, so waiting is the
//! kinder equivalent. An environment idle for `idle_timeout` is shut down, except the last one,
//! which stays warm.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::StreamExt as _;
use tokio::task::JoinHandle;

use super::actor::{refuse_queued, Actor, Command};
use super::report::ReportLog;
use super::{FunctionSpec, FunctionStatus};

/// How often idle environments are looked for, at most.
const REAP_EVERY: Duration = Duration::from_secs(1);

struct Slot {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    busy: bool,
    idle_since: Instant,
}

impl Slot {
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.commands);
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "an execution environment's task failed");
        }
    }
}

pub(crate) struct Pool {
    pub(crate) spec: Arc<FunctionSpec>,
    pub(crate) status: Arc<Mutex<FunctionStatus>>,
    pub(crate) reports: ReportLog,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) stop: oneshot::Receiver<()>,
}

enum Wake {
    Command(Command),
    Done(u64),
    Reap,
    Stop,
}

struct State {
    slots: Vec<Slot>,
    waiting: VecDeque<Command>,
    next_id: u64,
    done: mpsc::UnboundedSender<u64>,
}

impl Pool {
    pub(crate) async fn run(mut self) {
        let (done, mut finished) = mpsc::unbounded();
        let mut state = State {
            slots: Vec::new(),
            waiting: VecDeque::new(),
            next_id: 1,
            done,
        };
        let reap_every = REAP_EVERY.min(self.spec.idle_timeout);
        let mut reaper = tokio::time::interval(reap_every);
        reaper.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                biased;
                _ = &mut self.stop => Wake::Stop,
                slot = finished.next() => slot.map_or(Wake::Stop, Wake::Done),
                command = self.commands.next() => command.map_or(Wake::Stop, Wake::Command),
                _ = reaper.tick() => Wake::Reap,
            };
            match wake {
                Wake::Stop => break,
                Wake::Command(command) => self.dispatch(&mut state, command),
                Wake::Done(id) => {
                    if let Some(slot) = state.slots.iter_mut().find(|s| s.id == id) {
                        slot.busy = false;
                        slot.idle_since = Instant::now();
                    }
                    self.update_busy(&state);
                    if let Some(command) = state.waiting.pop_front() {
                        self.dispatch(&mut state, command);
                    }
                }
                Wake::Reap => self.reap(&mut state).await,
            }
        }
        state.waiting.drain(..).for_each(Command::refuse);
        futures::future::join_all(state.slots.drain(..).map(Slot::shut_down)).await;
        refuse_queued(&mut self.commands);
    }

    fn status(&self) -> std::sync::MutexGuard<'_, FunctionStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, state: &mut State, command: Command) {
        let warmest = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .max_by_key(|(_, s)| s.idle_since)
            .map(|(index, _)| index);
        let index = match warmest {
            Some(index) => index,
            None if state.slots.len() < self.spec.max_concurrency.max(1) as usize => {
                let slot = self.start_slot(state);
                state.slots.push(slot);
                state.slots.len() - 1
            }
            None => {
                state.waiting.push_back(command);
                return;
            }
        };
        let slot = &mut state.slots[index];
        slot.busy = true;
        if let Err(err) = slot.commands.unbounded_send(command) {
            // The environment's loop has ended (only on shutdown): fail the invocation.
            err.into_inner().refuse();
            slot.busy = false;
        }
        self.update_busy(state);
    }

    fn start_slot(&self, state: &mut State) -> Slot {
        let id = state.next_id;
        state.next_id += 1;
        let (commands, commands_rx) = mpsc::unbounded();
        let (stop, stop_rx) = oneshot::channel();
        let actor = Actor {
            slot: id,
            spec: Arc::clone(&self.spec),
            status: Arc::clone(&self.status),
            reports: self.reports.clone(),
            commands: commands_rx,
            stop: stop_rx,
            env: None,
            done: state.done.clone(),
            spawned_before: false,
        };
        self.status().environments_started += 1;
        Slot {
            id,
            commands,
            stop: Some(stop),
            task: tokio::spawn(actor.run()),
            busy: false,
            idle_since: Instant::now(),
        }
    }

    fn update_busy(&self, state: &State) {
        let busy = state.slots.iter().filter(|s| s.busy).count() as u32;
        let mut status = self.status();
        status.busy = busy;
        status.peak_busy = status.peak_busy.max(busy);
        status.waiting = state.waiting.len() as u32;
    }

    /// Shuts down environments idle for `idle_timeout`, keeping the warmest one.
    async fn reap(&self, state: &mut State) {
        let idle_timeout = self.spec.idle_timeout;
        let warmest = state
            .slots
            .iter()
            .filter(|s| !s.busy)
            .max_by_key(|s| s.idle_since)
            .map(|s| s.id);
        let keep_one = state.slots.iter().all(|s| !s.busy);
        let (expired, kept): (Vec<Slot>, Vec<Slot>) = state.slots.drain(..).partition(|s| {
            !s.busy
                && s.idle_since.elapsed() >= idle_timeout
                && !(keep_one && Some(s.id) == warmest)
        });
        state.slots = kept;
        if expired.is_empty() {
            return;
        }
        self.status().scaled_in += expired.len() as u64;
        futures::future::join_all(expired.into_iter().map(Slot::shut_down)).await;
    }
}
