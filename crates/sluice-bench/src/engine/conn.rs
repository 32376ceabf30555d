//! A connection's loop: take a ticket, wait until it is due (open loop), send, record;
//! reconnect after a failure. HTTP/1.1 connections carry one request at a time; an HTTP/2
//! connection carries `--streams` loops, one per concurrent stream.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::ThreadState;
use crate::connect::connect;
use crate::failure::Failure;
use crate::h1::{Answer, H1Conn};
use crate::http2;
use crate::plan::RequestSpec;
use crate::schedule::Ticket;

/// After a failed connect, a connection waits this long before the next, so a server that
/// is down yields a count of errors rather than a spinning client.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Open loop: a request taken this long after it was due counts as sent late (all
/// connections were busy); below it, the lateness is the timer's 1 ms granularity.
const LATE: Duration = Duration::from_millis(2);

/// How often a connection waiting for a due time looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// A failure, and whether it happened while connecting.
type Failed = (Failure, bool);

/// Starts connection number `index` of the run (its origin is `index` modulo the origins).
pub(super) fn spawn(tasks: &mut JoinSet<()>, state: &Rc<ThreadState>, index: usize) {
    let origin = index % state.plan.origins.len();
    if state.plan.http2 {
        let slot = Rc::new(H2Slot { sender: RefCell::new(None), connecting: tokio::sync::Mutex::new(()) });
        for stream in 0..state.plan.streams {
            let (state, slot) = (Rc::clone(state), Rc::clone(&slot));
            tasks.spawn_local(h2_stream_loop(state, slot, origin, index, index + stream));
        }
    } else {
        tasks.spawn_local(h1_loop(Rc::clone(state), origin, index));
    }
}

/// The next ticket, and the instant its latency counts from, after waiting until it is due.
async fn next_ticket(state: &ThreadState) -> Option<(Ticket, Instant)> {
    if state.stopped() {
        return None;
    }
    let free_at = Instant::now();
    let ticket = state.schedule.borrow_mut().next(free_at)?;
    if ticket.due.is_some_and(|due| free_at > due + LATE) && !ticket.warmup {
        state.recorder.borrow_mut().late += 1;
    }
    let sent_at = match ticket.due {
        Some(due) if due > free_at => {
            // In slices, so that Ctrl-C is seen during long waits (a low rate, many connections).
            let due = tokio::time::Instant::from_std(due);
            while tokio::time::Instant::now() < due {
                tokio::time::sleep_until(due.min(tokio::time::Instant::now() + STOP_CHECK)).await;
                if state.stopped() {
                    return None;
                }
            }
            Instant::now()
        }
        _ => free_at,
    };
    Some((ticket, ticket.start(free_at, sent_at)))
}

/// Records a request's end: a response (status, body bytes), a failure, or (None) a
/// timeout. True when the connect failed: the caller pauses before trying again.
fn settle(
    state: &ThreadState,
    ticket: Ticket,
    start: Instant,
    url: usize,
    outcome: Option<Result<(u16, u64), Failed>>,
) -> bool {
    let end = Instant::now();
    let mut recorder = state.recorder.borrow_mut();
    if state.plan.urls.len() > 1 {
        match &outcome {
            Some(Ok((status, _))) => {
                recorder.url_outcome(ticket.warmup, url, Some((start, end)), !(200..400).contains(status))
            }
            _ => recorder.url_outcome(ticket.warmup, url, None, true),
        }
    }
    match outcome {
        Some(Ok((status, bytes))) => recorder.response(ticket.warmup, start, end, status, bytes),
        Some(Err((failure, connecting))) => {
            recorder.failure(ticket.warmup, end, failure);
            return connecting;
        }
        None => recorder.failure(ticket.warmup, end, Failure::Timeout),
    }
    false
}

/// A per-request timeout from one timer per connection: moving a registered timer's
/// deadline later is an atomic store in tokio, where `tokio::time::timeout` would insert
/// and remove a timer-wheel entry for every request.
struct Deadline(std::pin::Pin<Box<tokio::time::Sleep>>);

impl Deadline {
    fn new() -> Deadline {
        Deadline(Box::pin(tokio::time::sleep(Duration::from_secs(3600))))
    }

    /// Runs `work`, giving up (None) after `limit`.
    async fn run<T>(&mut self, limit: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
        self.0.as_mut().reset(tokio::time::Instant::now() + limit);
        tokio::select! {
            biased;
            done = work => Some(done),
            () = self.0.as_mut() => None,
        }
    }
}

async fn h1_loop(state: Rc<ThreadState>, origin: usize, index: usize) {
    let plan = Arc::clone(&state.plan);
    let requests = &plan.requests[origin];
    let mut turn = index % requests.len();
    let mut conn: Option<H1Conn> = None;
    let mut deadline = Deadline::new();
    while let Some((ticket, start)) = next_ticket(&state).await {
        let request = &requests[turn];
        turn = (turn + 1) % requests.len();
        let outcome = deadline.run(plan.timeout, h1_request(&state, &mut conn, origin, index, request)).await;
        let keep = matches!(outcome, Some(Ok(Answer { reusable: true, .. }))) && plan.keepalive;
        if !keep && conn.take().is_some() {
            state.recorder.borrow_mut().disconnected();
        }
        let outcome = outcome.map(|result| result.map(|answer| (answer.status, answer.body_bytes)));
        if settle(&state, ticket, start, request.url, outcome) {
            tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
        }
    }
    if conn.is_some() {
        state.recorder.borrow_mut().disconnected();
    }
}

async fn h1_request(
    state: &ThreadState,
    conn: &mut Option<H1Conn>,
    origin: usize,
    index: usize,
    request: &RequestSpec,
) -> Result<Answer, Failed> {
    let conn = match conn {
        Some(conn) => conn,
        None => {
            let plan = &state.plan;
            // Boxed: the connect future (TLS handshake state included) is large, and inline it
            // would make every request's future as large, copied each time it is started.
            let connecting = Box::pin(connect(&plan.origins[origin], plan.tls.as_ref(), index));
            let stream = connecting.await.map_err(|f| (f, true))?;
            state.recorder.borrow_mut().connected();
            conn.insert(H1Conn::new(stream))
        }
    };
    conn.exchange(request).await.map_err(|f| (f, false))
}

/// One HTTP/2 connection, shared by its stream loops; the first loop to find it closed
/// reconnects while the others wait.
struct H2Slot {
    sender: RefCell<Option<http2::H2Conn>>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Slot {
    fn live(&self) -> Option<http2::H2Conn> {
        self.sender.borrow().as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn get(&self, state: &ThreadState, origin: usize, turn: usize) -> Result<http2::H2Conn, Failed> {
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        if self.sender.borrow_mut().take().is_some() {
            state.recorder.borrow_mut().disconnected();
        }
        let plan = &state.plan;
        let stream = connect(&plan.origins[origin], plan.tls.as_ref(), turn).await.map_err(|f| (f, true))?;
        let sender = http2::handshake(stream).await.map_err(|f| (f, true))?;
        state.recorder.borrow_mut().connected();
        *self.sender.borrow_mut() = Some(sender.clone());
        Ok(sender)
    }
}

async fn h2_stream_loop(state: Rc<ThreadState>, slot: Rc<H2Slot>, origin: usize, index: usize, first: usize) {
    let plan = Arc::clone(&state.plan);
    let requests = &plan.requests[origin];
    let mut turn = first % requests.len();
    let mut sender: Option<http2::H2Conn> = None;
    let mut deadline = Deadline::new();
    while let Some((ticket, start)) = next_ticket(&state).await {
        let request = &requests[turn];
        turn = (turn + 1) % requests.len();
        let exchange = async {
            let live = match sender.as_mut().filter(|s| !s.is_closed()) {
                Some(live) => live,
                // Boxed for the reason given in h1_request.
                None => sender.insert(Box::pin(slot.get(&state, origin, index)).await?),
            };
            http2::exchange(live, request).await.map_err(|f| (f, false))
        };
        let outcome = deadline.run(plan.timeout, exchange).await;
        if !matches!(outcome, Some(Ok(_))) {
            sender = None;
        }
        if settle(&state, ticket, start, request.url, outcome) {
            tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
        }
    }
}
