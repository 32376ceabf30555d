//! Running the load: one OS thread per `--threads`, each a single-threaded tokio runtime
//! that owns its share of the connections and its own [`Recorder`], like wrk's threads.
//! Nothing is shared between threads while requests run; each sends the main thread a
//! [`Tick`] once a second (for live progress) and its recorder when it is done.

mod conn;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::plan::{Plan, Stop};
use crate::record::{Interval, Recorder};
use crate::schedule::{share, Limit, Schedule};

/// One thread's counts for one second of the run, for progress.
pub struct Tick {
    /// Seconds since the run started (warm-up included), counting from 1.
    pub second: u64,
    pub warmup: bool,
    /// How long the interval was: a second, or less for the last one.
    pub length: Duration,
    pub interval: Interval,
}

/// What the run measured, all threads merged.
pub struct Outcome {
    pub recorder: Recorder,
    /// Wall time from the end of the warm-up until the last thread finished.
    pub wall: Duration,
    /// Stopped early by Ctrl-C (SIGINT).
    pub interrupted: bool,
}

enum Message {
    Tick(Tick),
    Done(Box<Recorder>),
}

/// The state a thread's connections share (single-threaded: `Rc` and `RefCell`).
struct ThreadState {
    plan: Arc<Plan>,
    schedule: RefCell<Schedule>,
    recorder: RefCell<Recorder>,
    /// Set by Ctrl-C: take no more tickets; requests in flight finish.
    stop: Arc<AtomicBool>,
}

impl ThreadState {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Runs the plan to its end; `on_tick` sees each thread's progress once a second.
/// `stop`, once set, ends the run early (see [`watch_interrupts`]).
pub fn run(plan: &Arc<Plan>, stop: &Arc<AtomicBool>, mut on_tick: impl FnMut(Tick)) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let (sender, receiver) = mpsc::channel();
    let mut handles = Vec::with_capacity(plan.threads);
    for thread in 0..plan.threads {
        let plan = Arc::clone(plan);
        let sender = sender.clone();
        let stop = Arc::clone(stop);
        let handle = std::thread::Builder::new()
            .name(format!("sluice-bench-{thread}"))
            .spawn(move || run_thread(plan, thread, start, stop, sender))
            .context("cannot start a load thread")?;
        handles.push(handle);
    }
    drop(sender);
    let mut merged = Recorder::new(start + plan.warmup);
    let mut done = 0;
    while done < plan.threads {
        match receiver.recv() {
            Ok(Message::Tick(tick)) => on_tick(tick),
            Ok(Message::Done(recorder)) => {
                merged.merge(&recorder);
                done += 1;
            }
            Err(_) => break, // a thread ended without reporting: its join below says why
        }
    }
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
    }
    let wall = Instant::now().saturating_duration_since(start + plan.warmup);
    Ok(Outcome { recorder: merged, wall, interrupted: stop.load(Ordering::Relaxed) })
}

/// For the command line: Ctrl-C sets `stop` (requests in flight finish, then the report);
/// a second one quits. A thread of its own, so that it answers whichever load threads are
/// still running; it stays for the life of the process, which ends after the run.
pub fn watch_interrupts(stop: Arc<AtomicBool>) {
    let watcher = move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_io().build() else { return };
        runtime.block_on(async {
            let Ok(mut interrupts) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) else {
                return;
            };
            while interrupts.recv().await.is_some() {
                if stop.swap(true, Ordering::Relaxed) {
                    eprintln!("sluice bench: interrupted again; quitting without a report");
                    std::process::exit(130);
                }
                eprintln!("sluice bench: interrupted; finishing the requests in flight (Ctrl-C again to quit now)");
            }
        });
    };
    // Without the watcher Ctrl-C still ends the process, only without a report.
    let _ = std::thread::Builder::new().name("sluice-bench-signals".into()).spawn(watcher);
}

fn run_thread(
    plan: Arc<Plan>,
    thread: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    sender: mpsc::Sender<Message>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    let mut recorder = local.block_on(&runtime, thread_main(plan, thread, start, stop, sender.clone()));
    recorder.samples = crate::failure::take_samples();
    // The receiver is gone only if the main thread gave up; nothing is left to tell then.
    let _ = sender.send(Message::Done(Box::new(recorder)));
    Ok(())
}

async fn thread_main(
    plan: Arc<Plan>,
    thread: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    sender: mpsc::Sender<Message>,
) -> Recorder {
    let schedule = thread_schedule(&plan, thread, start);
    let measure_from = schedule.measure_from();
    let state = Rc::new(ThreadState {
        plan: Arc::clone(&plan),
        schedule: RefCell::new(schedule),
        recorder: RefCell::new(Recorder::new(measure_from)),
        stop,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let first = (0..thread).map(|t| share(plan.connections as u64, plan.threads, t)).sum::<u64>() as usize;
    let count = share(plan.connections as u64, plan.threads, thread) as usize;
    for index in first..first + count {
        conn::spawn(&mut tasks, &state, index);
    }
    let second = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::from_std(start + second), second);
    let mut seconds = 0;
    let tick = |second: u64, length: Duration| {
        let interval = state.recorder.borrow_mut().take_interval();
        let warmup = Instant::now() < measure_from;
        // The receiver outlives the threads; a failed send only loses a progress line.
        let _ = sender.send(Message::Tick(Tick { second, warmup, length, interval }));
    };
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = ticker.tick() => {
                seconds += 1;
                tick(seconds, second);
            }
        }
    }
    // The last, partial second, unless it is only the in-flight requests finishing (a rate
    // over a few milliseconds would mislead; the final report has those requests anyway).
    let tail = Instant::now().saturating_duration_since(start + second * seconds as u32);
    if tail >= Duration::from_millis(250) {
        tick(seconds + 1, tail);
    }
    state.recorder.replace(Recorder::new(measure_from))
}

/// This thread's share of the requests, and of the rate when there is one.
fn thread_schedule(plan: &Plan, thread: usize, start: Instant) -> Schedule {
    let limit = match plan.stop {
        Stop::After(duration) => Limit::Deadline(start + plan.warmup + duration),
        Stop::Count(n) => Limit::Count(share(n, plan.threads, thread)),
    };
    match &plan.rate {
        Some(rate) => Schedule::open(start, plan.warmup, limit, rate.clone(), thread, plan.threads),
        None => Schedule::closed(start, plan.warmup, limit),
    }
}
