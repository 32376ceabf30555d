//! Span export (`[tracing]`): each sampled request's record becomes a server span with
//! a client span per upstream try, queued to one exporter thread that batches them and
//! POSTs them to an OpenTelemetry collector over OTLP/HTTP.
//!
//! As with the access log, a request never waits: its record box goes through a
//! bounded queue (a copy in a recycled box when the access log takes the record too),
//! one non-blocking push; a full queue drops the span and counts it. The exporter
//! hands the boxes back to the workers' stock, as the access log's writer does. The exporter thread polls the queue (no wake-up per span), sends a
//! batch when it is full or `flush_interval` has passed, and drops (and counts) a batch
//! the collector does not take within `timeout`: tracing never holds memory or
//! requests hostage to a slow collector.
//!
//! Written here rather than with the `opentelemetry` SDK: the SDK builds a live span
//! object per request (attributes boxed, a context pushed and popped), where sluice
//! already has the whole request in its outcome record when it ends; and its OTLP
//! exporter brings a second HTTP stack (reqwest or tonic) and protobuf code generation
//! to a build that has hyper already. The JSON encoding is OTLP/HTTP's standard one.

// The boxes are the point: records travel as pointers through the queue and back.
#![allow(clippy::vec_box)]

mod collector;
mod span;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::TracingConfig;

use super::{recycle, Outcome};
use collector::Collector;
use span::Resource;

/// How long a flush at shutdown waits for the exporter thread.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// How often the exporter thread looks at the queue, at most.
const POLL: Duration = Duration::from_millis(50);
/// A failing collector is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

enum Message {
    Span(Box<Outcome>),
    /// Send everything queued before this, then say so.
    Flush(mpsc::Sender<()>),
}

/// Spans by what became of them, since start (for the metrics).
#[derive(Default)]
pub(crate) struct ExportStats {
    /// Taken by the collector (a 2xx answer).
    pub(crate) exported: AtomicU64,
    /// Dropped because the queue was full. (Counts are of spans: a request's own and
    /// one per upstream try.)
    pub(crate) dropped: AtomicU64,
    /// Lost with an export the collector refused, or that failed or timed out.
    pub(crate) failed: AtomicU64,
}

/// The sending side; the exporter thread ends once this is dropped and the queue is sent.
pub(crate) struct SpanExport {
    queue: SyncSender<Message>,
    pub(crate) sample_ratio: f64,
    pub(crate) stats: Arc<ExportStats>,
}

impl SpanExport {
    /// Starts the exporter thread. The collector is first reached with the first batch.
    pub(crate) fn start(config: &TracingConfig) -> io::Result<Self> {
        let (queue, spans) = mpsc::sync_channel(config.queue);
        let stats = Arc::new(ExportStats::default());
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string());
        let exporter = Exporter {
            collector: Collector::new(config)?,
            resource: Resource { service_name: config.service_name.clone(), host_name },
            batch: Vec::with_capacity(config.batch_size),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            body: Vec::new(),
            stats: Arc::clone(&stats),
            reported: None,
        };
        std::thread::Builder::new().name("sluice-otlp".into()).spawn(move || exporter.run(spans))?;
        Ok(SpanExport { queue, sample_ratio: config.sample_ratio, stats })
    }

    /// Queues a sampled record without waiting; a full queue drops its spans (counted).
    pub(crate) fn send(&self, outcome: Box<Outcome>) {
        let spans = span::spans_of(&outcome);
        if let Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) =
            self.queue.try_send(Message::Span(outcome))
        {
            self.stats.dropped.fetch_add(spans, Ordering::Relaxed);
            if let Message::Span(outcome) = message {
                recycle::keep(outcome);
            }
        }
    }

    /// Waits (a bounded time) until every span queued so far was sent: at shutdown.
    pub(crate) fn flush(&self) {
        let (done, sent) = mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = sent.recv_timeout(FLUSH_WAIT);
        }
    }
}

struct Exporter {
    collector: Collector,
    resource: Resource,
    batch: Vec<Box<Outcome>>,
    batch_size: usize,
    flush_interval: Duration,
    /// The encoded batch, reused.
    body: Vec<u8>,
    stats: Arc<ExportStats>,
    /// When a failure was last logged.
    reported: Option<Instant>,
}

impl Exporter {
    fn run(mut self, spans: Receiver<Message>) {
        let poll = self.flush_interval.min(POLL);
        let mut last_export = Instant::now();
        loop {
            let mut flushed = Vec::new();
            let open = loop {
                match spans.try_recv() {
                    Ok(Message::Span(span)) => {
                        self.batch.push(span);
                        if self.batch.len() >= self.batch_size {
                            self.export();
                            last_export = Instant::now();
                        }
                    }
                    Ok(Message::Flush(done)) => flushed.push(done),
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            let due = last_export.elapsed() >= self.flush_interval || !flushed.is_empty() || !open;
            if due && !self.batch.is_empty() {
                self.export();
                last_export = Instant::now();
            }
            for done in flushed {
                let _ = done.send(());
            }
            if !open {
                return;
            }
            std::thread::sleep(poll);
        }
    }

    /// Sends the batch; it is gone either way (counted as exported or failed).
    fn export(&mut self) {
        self.body.clear();
        span::encode(&self.resource, &self.batch, &mut self.body);
        let spans = self.batch.iter().map(|record| span::spans_of(record)).sum::<u64>();
        recycle::give_back(&mut self.batch);
        match self.collector.post(&self.body) {
            Ok(()) => {
                self.stats.exported.fetch_add(spans, Ordering::Relaxed);
                if self.reported.take().is_some() {
                    tracing::info!("the OTLP collector takes spans again");
                }
            }
            Err(why) => {
                self.stats.failed.fetch_add(spans, Ordering::Relaxed);
                if !matches!(self.reported, Some(at) if at.elapsed() < REPORT_EVERY) {
                    let lost = self.stats.failed.load(Ordering::Relaxed);
                    tracing::warn!(collector = %self.collector, error = %why, spans_lost_total = lost, "span export failed; spans are dropped");
                    self.reported = Some(Instant::now());
                }
            }
        }
    }
}
