//! The access log: finished records go through a bounded queue to one writer thread,
//! which formats and writes them. A request never waits for it: when the queue is
//! full the record is dropped and counted, and the writer says how many it missed.
//! With the default queue of 65,536 and a 20 ms write interval, lines are dropped only
//! above ~3 million requests a second, or when the disk stalls.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use sluice_config::{AccessLogConfig, LogDestination, LogFormat};

use super::{format, Outcome};

/// How long a flush at shutdown waits for the writer thread.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// How often the writer thread wakes to write what queued up.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// What goes through the queue.
enum Message {
    Line(Box<Outcome>),
    /// Write everything before this, then say so.
    Flush(mpsc::Sender<()>),
}

/// The sending side; the thread ends once this is dropped and the queue is written.
pub(crate) struct AccessLog {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the destination (appending) and starts the writer thread.
    pub(crate) fn start(config: &AccessLogConfig) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match &config.destination {
            LogDestination::Stderr => Box::new(io::stderr()),
            LogDestination::File(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (queue, lines) = mpsc::sync_channel(config.queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer { out, batch: Vec::with_capacity(BATCH_BYTES + 4096), format: config.format };
        let seen = Arc::clone(&dropped);
        std::thread::Builder::new().name("sluice-access-log".into()).spawn(move || writer.run(lines, &seen))?;
        Ok(AccessLog { queue, dropped })
    }

    /// Queues a record without waiting; a full queue drops it (counted).
    pub(crate) fn send(&self, outcome: Box<Outcome>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(Message::Line(outcome))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (a bounded time) until every line queued so far is written: at shutdown,
    /// so that the last requests are not lost with the process.
    pub(crate) fn flush(&self) {
        let (done, written) = mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Lines are formatted straight into this many bytes, then written in one call.
const BATCH_BYTES: usize = 256 * 1024;

struct Writer {
    out: Box<dyn Write + Send>,
    /// Formatted lines not yet written.
    batch: Vec<u8>,
    format: LogFormat,
}

impl Writer {
    /// Wakes every `WRITE_INTERVAL`, writes what queued up meanwhile (formatted here,
    /// off the request path) and flushes it. Senders never wake this thread: a request
    /// does one non-blocking push, no system call, where a blocking receive would cost
    /// a futex wake-up per line. A line is on disk within about `WRITE_INTERVAL`.
    fn run(mut self, lines: Receiver<Message>, dropped: &AtomicU64) {
        let mut reported = 0;
        let mut failing = false;
        let mut done = Vec::new();
        loop {
            let mut flushed = Vec::new();
            let open = loop {
                match lines.try_recv() {
                    Ok(Message::Line(outcome)) => {
                        self.format(&outcome);
                        done.push(outcome);
                        if self.batch.len() >= BATCH_BYTES {
                            failing = self.write_batch(failing);
                        }
                    }
                    Ok(Message::Flush(done)) => flushed.push(done),
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            super::recycle::give_back(&mut done);
            failing = self.write_batch(failing);
            for done in flushed {
                let _ = done.send(());
            }
            let missed = dropped.load(Ordering::Relaxed);
            if missed > reported {
                tracing::warn!(dropped_total = missed, "access log queue was full; lines were dropped");
                reported = missed;
            }
            if !open {
                return;
            }
            std::thread::sleep(WRITE_INTERVAL);
        }
    }

    fn format(&mut self, outcome: &Outcome) {
        match self.format {
            LogFormat::Json => format::json_line(outcome, &mut self.batch),
            LogFormat::Combined => format::combined_line(outcome, &mut self.batch),
            LogFormat::CombinedPlain => format::combined_plain_line(outcome, &mut self.batch),
        }
        self.batch.push(b'\n');
    }

    /// Writes the batch out; returns whether writing is failing (so a broken disk is
    /// reported once, not per batch). A batch that cannot be written is lost.
    fn write_batch(&mut self, failing: bool) -> bool {
        if self.batch.is_empty() {
            return failing;
        }
        let written = self.out.write_all(&self.batch).and_then(|()| self.out.flush());
        self.batch.clear();
        match written {
            Ok(()) => {
                if failing {
                    tracing::info!("access log writes work again");
                }
                false
            }
            Err(e) => self.report(e, failing),
        }
    }

    fn report(&self, error: io::Error, failing: bool) -> bool {
        if !failing {
            tracing::error!(%error, "cannot write the access log; lines are lost until it works again");
        }
        true
    }
}
