//! Pool logic on paused time with fake connections: no sockets, no real waiting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_config::PoolSettings;

use super::cap::{CloseIdle, ConnectionCap, RECLAIM_IDLE};
use super::exclusive::ExclusivePool;
use super::shared::SharedPool;
use super::{BoxFuture, Connector, QueueWait};
use crate::upstream::UpstreamError;

/// Opens fake connections after `delay`, counting them; fails while `down` is set;
/// while `moved` is set, the connections it made before are to a gone address.
#[derive(Default)]
struct Fake {
    opened: AtomicUsize,
    down: AtomicBool,
    moved: AtomicBool,
    delay: Duration,
    stream_limit: usize,
}

struct FakeConn {
    closed: Arc<AtomicBool>,
    stream_limit: usize,
    made_after_move: bool,
}

impl Connector for Arc<Fake> {
    type Conn = FakeConn;

    fn connect(&self) -> BoxFuture<'_, Result<FakeConn, UpstreamError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if self.down.load(Ordering::Relaxed) {
                let source = std::io::ErrorKind::ConnectionRefused.into();
                return Err(UpstreamError::Connect { endpoint: "fake".into(), source });
            }
            self.opened.fetch_add(1, Ordering::Relaxed);
            let made_after_move = self.moved.load(Ordering::Relaxed);
            Ok(FakeConn { closed: Arc::new(AtomicBool::new(false)), stream_limit: self.stream_limit, made_after_move })
        })
    }

    fn is_closed(conn: &FakeConn) -> bool {
        conn.closed.load(Ordering::Relaxed)
    }

    fn is_current(&self, conn: &FakeConn) -> bool {
        !self.moved.load(Ordering::Relaxed) || conn.made_after_move
    }

    fn stream_limit(conn: &FakeConn) -> usize {
        conn.stream_limit.max(1)
    }
}

fn settings(max_connections: usize) -> PoolSettings {
    PoolSettings { max_connections, max_idle: max_connections, ..PoolSettings::default() }
}

/// The default queue_timeout.
const QUEUE_TIMEOUT: Duration = sluice_config::defaults::QUEUE_TIMEOUT;

/// A request's wait in line, with the default queue_timeout.
fn line() -> QueueWait {
    QueueWait::new(QUEUE_TIMEOUT)
}

fn fake(stream_limit: usize) -> Arc<Fake> {
    Arc::new(Fake { delay: Duration::from_millis(5), stream_limit, ..Fake::default() })
}

#[tokio::test(start_paused = true)]
async fn steady_load_reuses_connections_instead_of_churning() {
    let connector = fake(1);
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(256)));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                for _ in 0..20 {
                    let conn = pool.checkout(&mut line()).await.expect("a connection");
                    tokio::time::sleep(Duration::from_millis(1)).await; // the request
                    pool.release(conn);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    // 200 concurrent requests need 200 connections, once; 4,000 requests reuse them.
    assert_eq!(connector.opened.load(Ordering::Relaxed), 200);
    assert_eq!(pool.stats.reused.load(Ordering::Relaxed), 4_000 - 200);
}

#[tokio::test(start_paused = true)]
async fn a_small_idle_cap_churns_which_is_why_it_is_not_the_default() {
    let connector = fake(1);
    let small = PoolSettings { max_idle: 64, ..settings(256) };
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), small));
    let held: Vec<_> = checkout_n(&pool, 200).await;
    for conn in held {
        pool.release(conn); // only 64 fit back
    }
    let again = checkout_n(&pool, 200).await;
    assert_eq!(connector.opened.load(Ordering::Relaxed), 200 + 136, "136 connections closed and reopened");
    drop(again);
}

/// `n` connections checked out one after another (and held).
async fn checkout_n(pool: &ExclusivePool<Arc<Fake>>, n: usize) -> Vec<super::exclusive::Pooled<FakeConn>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.checkout(&mut line()).await.expect("a connection"));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_trimmed_by_age_down_to_min_idle() {
    let connector = fake(1);
    let aging = PoolSettings { min_idle: 2, idle_timeout: Duration::from_secs(60), ..settings(16) };
    let pool = ExclusivePool::new(Arc::clone(&connector), "fake".into(), aging);
    let held = checkout_n(&pool, 10).await;
    for conn in held {
        pool.release(conn);
    }
    assert_eq!(pool.counts(), (10, 10));
    tokio::time::advance(Duration::from_secs(30)).await;
    pool.maintain_once().await;
    assert_eq!(pool.counts(), (10, 10), "younger than idle_timeout: kept");
    tokio::time::advance(Duration::from_secs(31)).await;
    pool.maintain_once().await;
    // All ten expired; min_idle opens two fresh ones.
    assert_eq!(pool.counts(), (2, 2));
    assert_eq!(connector.opened.load(Ordering::Relaxed), 12);
}

#[tokio::test(start_paused = true)]
async fn workers_pools_share_one_cap_and_take_each_others_idle_connections() {
    let connector = fake(1);
    let cap = ConnectionCap::new(2);
    let pool = |cap: &Arc<ConnectionCap>| {
        let pool =
            Arc::new(ExclusivePool::with_cap(Arc::clone(&connector), "fake".into(), settings(2), Arc::clone(cap)));
        let member: std::sync::Weak<dyn CloseIdle> = Arc::downgrade(&pool) as _;
        cap.join(pool.id(), member);
        pool
    };
    let (first, second) = (pool(&cap), pool(&cap));
    let held = checkout_n(&first, 2).await;
    for conn in held {
        first.release(conn); // idle on the first worker
    }
    let started = tokio::time::Instant::now();
    let conn = second.checkout(&mut line()).await.expect("room made, not a queue timeout");
    assert_eq!(
        started.elapsed(),
        RECLAIM_IDLE + connector.delay,
        "the second worker waited until the first's connections were unused for RECLAIM_IDLE, then connected"
    );
    assert_eq!(first.counts(), (1, 1), "the first worker's oldest idle connection was closed");
    assert_eq!(second.counts(), (0, 1));
    assert_eq!(cap.permits.available_permits(), 0, "2 open in all");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 3);
    let busy = first.checkout(&mut line()).await.expect("its remaining idle one");
    let refused = second.checkout(&mut line()).await;
    assert!(matches!(refused, Err(UpstreamError::QueueTimeout { .. })), "the cap holds across workers");
    drop((conn, busy));
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_request_waits_for_a_release_or_times_out_in_line() {
    let connector = fake(1);
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(2)));
    let a = pool.checkout(&mut line()).await.expect("a");
    let b = pool.checkout(&mut line()).await.expect("b");
    let waiting = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.checkout(&mut line()).await.map(|conn| pool.release(conn)) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    pool.release(a);
    waiting.await.expect("task").expect("got the released connection");
    let started = tokio::time::Instant::now();
    let c = pool.checkout(&mut line()).await.expect("idle again");
    let refused = pool.checkout(&mut line()).await;
    assert!(matches!(refused, Err(UpstreamError::QueueTimeout { .. })));
    assert_eq!(started.elapsed(), QUEUE_TIMEOUT);
    assert_eq!(connector.opened.load(Ordering::Relaxed), 2);
    drop((b, c));
}

#[tokio::test(start_paused = true)]
async fn streams_fill_a_connection_to_the_peer_limit_before_another_opens() {
    let connector = fake(3);
    let pool = SharedPool::new(Arc::clone(&connector), "fake".into(), settings(2));
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(pool.checkout(&mut line()).await.expect("a stream"));
    }
    assert_eq!(connector.opened.load(Ordering::Relaxed), 2, "3 streams each on 2 connections");
    let first = Arc::as_ptr(&streams[0].conn);
    assert!(streams[..3].iter().all(|s| Arc::as_ptr(&s.conn) == first), "packed onto the oldest first");
    // Both full, max_connections reached: the 7th waits, then is refused.
    assert!(matches!(pool.checkout(&mut line()).await, Err(UpstreamError::QueueTimeout { .. })));
    // A stream ending makes room on its connection.
    streams.remove(4);
    let again = pool.checkout(&mut line()).await.expect("room again");
    assert_ne!(Arc::as_ptr(&again.conn), first);
    assert_eq!(connector.opened.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_first_requests_opens_one_connection() {
    let connector = fake(100);
    let pool = Arc::new(SharedPool::new(Arc::clone(&connector), "fake".into(), settings(8)));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.checkout(&mut line()).await.map(drop) })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("a stream");
    }
    assert_eq!(connector.opened.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retired_connection_keeps_its_permit_until_its_last_stream_ends() {
    let connector = fake(10);
    let limited = PoolSettings { max_requests: 2, ..settings(1) };
    let pool = Arc::new(SharedPool::new(Arc::clone(&connector), "fake".into(), limited));
    let s1 = pool.checkout(&mut line()).await.expect("s1");
    let s2 = pool.checkout(&mut line()).await.expect("s2");
    assert_eq!(pool.counts().1, 1);
    // The connection has carried max_requests: it takes no third stream, and while its
    // two streams run, no second connection may open (max_connections = 1).
    let third = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.checkout(&mut line()).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!third.is_finished());
    drop(s1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!third.is_finished(), "one stream still runs on the retired connection");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 1);
    drop(s2);
    third.await.expect("task").expect("a new connection after the old one closed");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 2);
    assert_eq!(pool.counts().1, 1, "never more open than max_connections");
}

#[tokio::test(start_paused = true)]
async fn min_idle_counts_http2_connections_and_closed_ones_are_replaced() {
    let connector = fake(100);
    let warm = PoolSettings { min_idle: 2, ..settings(8) };
    let pool = SharedPool::new(Arc::clone(&connector), "fake".into(), warm);
    pool.maintain_once().await;
    assert_eq!(pool.counts(), (2, 2));
    let stream = pool.checkout(&mut line()).await.expect("a stream");
    stream.conn.conn.closed.store(true, Ordering::Relaxed);
    drop(stream);
    pool.maintain_once().await;
    assert_eq!(pool.counts(), (2, 2), "the closed one was replaced");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn connect_failures_are_counted_and_reported() {
    let connector = fake(1);
    connector.down.store(true, Ordering::Relaxed);
    let pool = ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(4));
    assert!(matches!(pool.checkout(&mut line()).await, Err(UpstreamError::Connect { .. })));
    assert_eq!(pool.stats.connect_failures.load(Ordering::Relaxed), 1);
    assert_eq!(pool.counts().1, 0, "a failed connect holds no permit");
}

#[tokio::test(start_paused = true)]
async fn connections_to_an_address_the_name_no_longer_resolves_to_drain() {
    let connector = fake(1);
    let pool = ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(4));
    let (a, b) = (pool.checkout(&mut line()).await.expect("a"), pool.checkout(&mut line()).await.expect("b"));
    pool.release(a);
    connector.moved.store(true, Ordering::Relaxed); // the DNS answer changed
    pool.release(b); // back from a request: not kept
    assert_eq!(pool.counts(), (1, 1), "the busy one closed at release");
    let fresh = pool.checkout(&mut line()).await.expect("a connection to the new address");
    assert!(fresh.conn.made_after_move, "the idle one to the gone address was not reused");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 3);
    assert_eq!(pool.counts(), (0, 1), "and it was closed");
}

/// Starts `n` requests that wait in line at `pool` one after another (each starts
/// waiting before the next), each recording its number when it gets a connection
/// and then holding it for 1 ms.
async fn waiters_in_line(
    pool: &Arc<ExclusivePool<Arc<Fake>>>,
    n: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<std::sync::Mutex<Vec<usize>>>) {
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (pool, served) = (Arc::clone(pool), Arc::clone(&served));
        tasks.push(tokio::spawn(async move {
            let conn = pool.checkout(&mut line()).await.expect("served in turn");
            served.lock().expect("lock").push(i);
            tokio::time::sleep(Duration::from_millis(1)).await;
            pool.release(conn);
        }));
        tokio::time::sleep(Duration::from_millis(1)).await; // the next one comes later
    }
    (tasks, served)
}

#[tokio::test(start_paused = true)]
async fn a_released_connection_goes_to_the_oldest_waiter_not_to_a_newcomer() {
    let connector = fake(1);
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(1)));
    let held = pool.checkout(&mut line()).await.expect("the one connection");
    let (waiters, served) = waiters_in_line(&pool, 5).await;
    pool.release(held);
    // A request arriving right after the release finds nothing free: the connection
    // was handed to the oldest waiter, not left idle for whoever asks first.
    let newcomer = pool.checkout(&mut QueueWait::none()).await;
    assert!(matches!(newcomer, Err(UpstreamError::QueueTimeout { .. })), "no jumping the line");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    assert_eq!(*served.lock().expect("lock"), vec![0, 1, 2, 3, 4], "served in the order they came");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 1, "one connection, handed on five times");
    assert_eq!(pool.counts(), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_connection_closed_at_release_makes_room_for_the_oldest_waiter() {
    let connector = fake(1);
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(1)));
    let held = pool.checkout(&mut line()).await.expect("the one connection");
    let (waiters, served) = waiters_in_line(&pool, 3).await;
    held.conn.closed.store(true, Ordering::Relaxed); // the upstream closed it meanwhile
    pool.release(held);
    let newcomer = pool.checkout(&mut QueueWait::none()).await;
    assert!(matches!(newcomer, Err(UpstreamError::QueueTimeout { .. })), "its permit went to the line");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    assert_eq!(*served.lock().expect("lock"), vec![0, 1, 2]);
    assert_eq!(connector.opened.load(Ordering::Relaxed), 2, "the oldest waiter opened a new one");
}

#[tokio::test(start_paused = true)]
async fn waiters_that_gave_up_leave_nothing_behind() {
    let connector = fake(1);
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(1)));
    let held = pool.checkout(&mut line()).await.expect("the one connection");
    // 100 requests time out in line (nothing is released for queue_timeout), and
    // 100 more are cancelled while waiting (their clients went away).
    let timed_out: Vec<_> = (0..100)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.checkout(&mut line()).await.map(drop) })
        })
        .collect();
    let cancelled: Vec<_> = (0..100)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.checkout(&mut line()).await.map(drop) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    cancelled.iter().for_each(|task| task.abort());
    for task in timed_out {
        assert!(matches!(task.await.expect("task"), Err(UpstreamError::QueueTimeout { .. })));
    }
    // The connection goes to the next live waiter, not to a gone one.
    let (waiters, served) = waiters_in_line(&pool, 2).await;
    pool.release(held);
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    assert_eq!(*served.lock().expect("lock"), vec![0, 1]);
    assert_eq!(pool.counts(), (1, 1), "nothing lost: the one connection is idle again");
}

#[tokio::test(start_paused = true)]
async fn an_ended_stream_passes_its_slot_to_the_oldest_waiter() {
    let connector = fake(2);
    let pool = Arc::new(SharedPool::new(Arc::clone(&connector), "fake".into(), settings(1)));
    let (a, b) = (pool.checkout(&mut line()).await.expect("a"), pool.checkout(&mut line()).await.expect("b"));
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (pool, served) = (Arc::clone(&pool), Arc::clone(&served));
        waiters.push(tokio::spawn(async move {
            let stream = pool.checkout(&mut line()).await.expect("a slot in turn");
            served.lock().expect("lock").push(i);
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(stream);
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(a);
    let newcomer = pool.checkout(&mut QueueWait::none()).await;
    assert!(matches!(newcomer, Err(UpstreamError::QueueTimeout { .. })), "the freed slot went to the line");
    drop(b);
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    assert_eq!(*served.lock().expect("lock"), vec![0, 1, 2, 3], "served in the order they came");
    assert_eq!(connector.opened.load(Ordering::Relaxed), 1);
    assert_eq!(pool.counts(), (1, 1), "both slots free again");
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_in_line_once_over_all_its_tries() {
    let connector = fake(1);
    let pool = Arc::new(ExclusivePool::new(Arc::clone(&connector), "fake".into(), settings(1)));
    let held = pool.checkout(&mut line()).await.expect("the one connection");
    let started = tokio::time::Instant::now();
    let mut wait = line();
    assert!(pool.checkout(&mut wait).await.is_err());
    assert!(pool.checkout(&mut wait).await.is_err(), "a second try has no time left in line");
    assert_eq!(started.elapsed(), QUEUE_TIMEOUT);
    let stats = &pool.stats;
    assert_eq!(stats.queued.load(Ordering::Relaxed), 2, "two tries in line");
    assert_eq!(stats.queue_timeouts.load(Ordering::Relaxed), 2, "both refused by the line");
    assert_eq!(stats.queue_wait_us.load(Ordering::Relaxed), QUEUE_TIMEOUT.as_micros() as u64, "one wait, not two");
    assert_eq!(stats.waiting.load(Ordering::Relaxed), 0);
    drop(held);
}
