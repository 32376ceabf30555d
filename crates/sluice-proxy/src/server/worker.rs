//! Workers: what runs the connections.
//!
//! per-core (the default, chosen by docs/BENCHMARKS.md): one OS thread per worker, each
//! with a single-threaded tokio runtime (its own event loop and timers), its own
//! listening sockets on the shared addresses (SO_REUSEPORT: the kernel spreads new
//! connections over the workers), its own idle-deadline queues, buffers and, by
//! default, upstream pools. A connection is accepted, served and closed on one thread;
//! no lock, atomic or wakeup crosses workers per request. This is nginx's and HAProxy's
//! shape.
//!
//! work-stealing: one worker on tokio's multi-threaded runtime, whose threads steal
//! each other's tasks; one listener per address, shared state between threads.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_config::{Config, ListenerConfig};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::{accept_loop, bind_listener, ServerError, Sharing};
use crate::runtime::{Process, Shared};

/// Blocking work (DNS lookups, spooling request bodies to files) runs on each runtime's
/// blocking pool, bounded to this many threads: a resolver that hangs costs threads up
/// to here, never a worker, and never thousands of threads.
pub const BLOCKING_THREADS: usize = 16;
/// After the drain, what is left on a worker's runtime gets this long to stop.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// A started worker.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    /// The runtime the worker runs on: a new snapshot is built there (its new pools
    /// start their tasks on it).
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) addrs: Vec<SocketAddr>,
    /// The listeners this worker accepts on; a reload adds and removes some.
    pub(super) listeners: Arc<Mutex<Vec<Accepting>>>,
    /// per-core: the worker's thread, and how to end its event loop.
    thread: Option<(std::thread::JoinHandle<()>, oneshot::Sender<()>)>,
}

impl Worker {
    /// Waits until the accept loops have returned (after shutdown was triggered): the
    /// listening sockets are closed.
    pub(super) async fn stopped_accepting(&mut self) {
        let tasks: Vec<_> =
            self.listeners.lock().unwrap_or_else(|p| p.into_inner()).drain(..).map(|l| l.task).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Ends a per-core worker's event loop, closing what is still open on it, and waits
    /// for its thread. Blocking.
    pub(super) fn stop(self) {
        if let Some((thread, stop)) = self.thread {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// A listener a worker accepts on: its settings (what a reload compares) and its loop.
pub(super) struct Accepting {
    pub(super) config: ListenerConfig,
    /// Where it is bound (port 0 resolved).
    pub(super) address: Option<SocketAddr>,
    pub(super) task: JoinHandle<()>,
}

/// Starts `worker_threads` per-core workers. The first binds the configured addresses;
/// the others join the same (resolved) addresses, so port 0 works.
pub(super) fn start_per_core(
    config: &Config,
    process: &Arc<Process>,
    limit: &Arc<Semaphore>,
) -> Result<(Vec<Worker>, Vec<SocketAddr>), ServerError> {
    let count = config.server.worker_threads;
    let mut workers: Vec<Worker> = Vec::with_capacity(count);
    let mut addrs: Option<Vec<SocketAddr>> = None;
    for index in 0..count {
        match spawn_thread(index, config, process, limit, addrs.as_deref(), count > 1) {
            Ok(worker) => {
                addrs.get_or_insert_with(|| worker.addrs.clone());
                workers.push(worker);
            }
            Err(e) => {
                process.shutdown.trigger();
                workers.into_iter().for_each(Worker::stop);
                return Err(e);
            }
        }
    }
    Ok((workers, addrs.unwrap_or_default()))
}

/// The work-stealing model's one worker, on the current (multi-threaded) runtime.
pub(super) fn start_here(config: &Config, process: &Process, limit: &Arc<Semaphore>) -> Result<Worker, ServerError> {
    start(0, config, process, limit, None, false)
}

/// Starts worker `index` on a thread of its own and waits until it accepts (or failed).
fn spawn_thread(
    index: usize,
    config: &Config,
    process: &Arc<Process>,
    limit: &Arc<Semaphore>,
    addrs: Option<&[SocketAddr]>,
    reuse_port: bool,
) -> Result<Worker, ServerError> {
    let thread_error = move |source| ServerError::Worker { worker: index, source };
    let (ready, started) = mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let (config, process, limit) = (config.clone(), Arc::clone(process), Arc::clone(limit));
    let addrs = addrs.map(<[SocketAddr]>::to_vec);
    let thread = std::thread::Builder::new()
        .name(format!("sluice-worker-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(BLOCKING_THREADS)
                .thread_name(format!("sluice-blocking-{index}"))
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return drop(ready.send(Err(thread_error(e)))),
            };
            runtime.block_on(async {
                let worker = start(index, &config, &process, &limit, addrs.as_deref(), reuse_port);
                let failed = worker.is_err();
                let _ = ready.send(worker);
                if !failed {
                    let _ = stopped.await;
                }
            });
            runtime.shutdown_timeout(STOP_WAIT);
        })
        .map_err(thread_error)?;
    match started.recv() {
        Ok(Ok(mut worker)) => {
            worker.thread = Some((thread, stop));
            Ok(worker)
        }
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(thread_error(std::io::Error::other("the worker thread ended while starting")))
        }
    }
}

/// Builds worker `index`'s state on the current runtime, binds its listeners and starts
/// accepting. Errors name the listener or upstream that failed.
fn start(
    index: usize,
    config: &Config,
    process: &Process,
    limit: &Arc<Semaphore>,
    addrs: Option<&[SocketAddr]>,
    reuse_port: bool,
) -> Result<Worker, ServerError> {
    let worker_id = u16::try_from(index).unwrap_or(u16::MAX);
    let shared = Arc::new(Shared::new(config, process, worker_id)?);
    let mut listeners = Vec::with_capacity(config.listeners.len());
    let sharing = match (reuse_port, addrs) {
        (false, _) => Sharing::Alone,
        (true, None) => Sharing::FirstOfProcess,
        (true, Some(_)) => Sharing::JoinProcess,
    };
    for (i, listener) in config.listeners.iter().enumerate() {
        let address = addrs.and_then(|a| a.get(i).copied()).unwrap_or(listener.address);
        listeners.push(bind_listener(listener, address, sharing, config.server.http2_stream_window)?);
    }
    let addrs = listeners.iter().filter_map(|l| l.listener.local_addr().ok()).collect();
    let sweeper = Arc::clone(&shared);
    tokio::spawn(async move { sweeper.idle.sweep(&sweeper.shutdown).await });
    let accepting = listeners
        .into_iter()
        .zip(&config.listeners)
        .map(|(bound, config)| Accepting {
            config: config.clone(),
            address: bound.listener.local_addr().ok(),
            task: tokio::spawn(accept_loop(bound, Arc::clone(&shared), Arc::clone(limit))),
        })
        .collect();
    let listeners = Arc::new(Mutex::new(accepting));
    Ok(Worker { shared, runtime: tokio::runtime::Handle::current(), addrs, listeners, thread: None })
}
