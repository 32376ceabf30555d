//! The memcached tier, over memcached's text protocol (get, set, delete, incr, add:
//! five commands, written here rather than taking a client crate for them; see
//! ARCHITECTURE.md). Keys are `PREFIX:GENERATION:DIGEST`: memcached cannot list keys,
//! so a prefix or tag purge bumps the generation, which drops every entry of the tier
//! at once (a URL purge deletes its key). The generation is read at most once a second,
//! and again at once when another instance's prefix or tag purge is heard.
//!
//! memcached has no pub/sub: invalidations go to the other instances' memory tiers
//! through a journal, `PREFIX:jseq` (a counter) and `PREFIX:j:N` (message N, kept
//! `JOURNAL_KEEP`), which every instance reads every `spread::JOURNAL_POLL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{digest, Gate, Heard, TierResult};
use crate::cache::spread::{self, Invalidation, JOURNAL_POLL};

/// Idle connections kept.
/// Connections to the server at most, all kept for reuse: more operations at once wait
/// for one (within the tier's timeout) instead of opening a connection each (a 5 s run
/// opened 750 and left 3,927 in TIME_WAIT with a keep-8, open-more pool).
const CONNECTIONS: usize = 16;
/// Room for a stored entry's key, head and Vary values beside its body (a request head
/// is at most 64 KiB, a response head too).
const MAX_HEAD_ROOM: usize = 256 * 1024;
/// How long a read generation is used before it is read again.
const GENERATION_FOR: Duration = Duration::from_secs(1);
/// How long a journal message is kept: far beyond the poll, so that only an instance
/// that could not read the journal for this long misses one (and then empties its
/// memory tier).
const JOURNAL_KEEP: u64 = 60;
/// memcached's longest relative expiry (longer values are read as a Unix time).
const MAX_RELATIVE_EXPIRY: u64 = 30 * 24 * 3600;

/// A connection lent to one operation, holding its slot.
struct Connection {
    stream: BufStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for Connection {
    type Target = BufStream<TcpStream>;
    fn deref(&self) -> &Self::Target {
        &self.stream
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.stream
    }
}

pub(crate) struct MemcachedTier {
    address: String,
    prefix: String,
    idle: std::sync::Mutex<Vec<BufStream<TcpStream>>>,
    /// A permit per open connection (`CONNECTIONS`).
    slots: Arc<Semaphore>,
    generation: std::sync::Mutex<Option<(u64, Instant)>>,
    /// The largest value read back; a larger size announced by the server is an error,
    /// not an allocation of that size.
    max_value: usize,
    pub(super) gate: Gate,
}

impl MemcachedTier {
    pub(crate) fn new(address: &str, timeout: Duration, prefix: &str, max_object: u64) -> Self {
        MemcachedTier {
            max_value: usize::try_from(max_object).unwrap_or(usize::MAX).saturating_add(MAX_HEAD_ROOM),
            address: address.to_string(),
            prefix: prefix.to_string(),
            idle: std::sync::Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(CONNECTIONS)),
            generation: std::sync::Mutex::new(None),
            gate: Gate::new("the shared cache tier", timeout, "serving from memory only"),
        }
    }

    /// A connection of the fixed set: an idle one, or a new one while fewer than
    /// `CONNECTIONS` are open; else the first to be given back.
    async fn connection(&self) -> TierResult<Connection> {
        let slot = Arc::clone(&self.slots).acquire_owned().await.map_err(|e| e.to_string())?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let stream = match idle {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(&self.address).await.map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                BufStream::new(stream)
            }
        };
        Ok(Connection { stream, _slot: slot })
    }

    /// A connection whose exchange completed goes back for reuse. (One dropped instead,
    /// after a failure, is closed and frees its slot.)
    fn give_back(&self, connection: Connection) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(connection.stream);
    }

    async fn key(&self, key: &str) -> TierResult<String> {
        Ok(format!("{}:{}:{}", self.prefix, self.generation().await?, digest(key)))
    }

    async fn generation(&self) -> TierResult<u64> {
        if let Some((generation, read)) = *self.generation.lock().unwrap_or_else(|p| p.into_inner()) {
            if read.elapsed() < GENERATION_FOR {
                return Ok(generation);
            }
        }
        let name = format!("{}:generation", self.prefix);
        let generation = match self.get_raw(&name).await? {
            Some(value) => std::str::from_utf8(&value).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            None => 0,
        };
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, Instant::now()));
        Ok(generation)
    }

    pub(super) async fn get(&self, key: &str) -> TierResult<Option<Bytes>> {
        let key = self.key(key).await?;
        self.get_raw(&key).await
    }

    async fn get_raw(&self, key: &str) -> TierResult<Option<Bytes>> {
        let mut connection = self.connection().await?;
        connection.write_all(format!("get {key}\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
        connection.flush().await.map_err(|e| e.to_string())?;
        let line = read_line(&mut connection).await?;
        if line == "END" {
            self.give_back(connection);
            return Ok(None);
        }
        // VALUE <key> <flags> <bytes>
        let size: usize = line
            .strip_prefix("VALUE ")
            .and_then(|rest| rest.split(' ').nth(2))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected answer to get: {line:?}"))?;
        if size > self.max_value {
            return Err(format!("memcached announced a value of {size} bytes, over max_object"));
        }
        let mut value = BytesMut::zeroed(size + 2);
        connection.read_exact(&mut value).await.map_err(|e| e.to_string())?;
        value.truncate(size);
        let end = read_line(&mut connection).await?;
        if end != "END" {
            return Err(format!("unexpected end of get: {end:?}"));
        }
        self.give_back(connection);
        Ok(Some(value.freeze()))
    }

    pub(super) async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> TierResult<()> {
        let key = self.key(key).await?;
        let expiry = ttl.as_secs().clamp(1, MAX_RELATIVE_EXPIRY);
        let answer = self.store("set", &key, expiry, &value).await?;
        match answer.as_str() {
            "STORED" => Ok(()),
            // Larger than the server's item size limit (-I): not an outage.
            other if other.starts_with("SERVER_ERROR object too large") => Ok(()),
            other => Err(format!("unexpected answer to set: {other:?}")),
        }
    }

    async fn store(&self, verb: &str, key: &str, expiry: u64, value: &[u8]) -> TierResult<String> {
        let mut connection = self.connection().await?;
        let head = format!("{verb} {key} 0 {expiry} {}\r\n", value.len());
        connection.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        connection.write_all(value).await.map_err(|e| e.to_string())?;
        connection.write_all(b"\r\n").await.map_err(|e| e.to_string())?;
        connection.flush().await.map_err(|e| e.to_string())?;
        let answer = read_line(&mut connection).await?;
        self.give_back(connection);
        Ok(answer)
    }

    pub(super) async fn remove(&self, keys: &[String]) -> TierResult<usize> {
        let mut removed = 0;
        for key in keys {
            let key = self.key(key).await?;
            let answer = self.command(&format!("delete {key}\r\n")).await?;
            removed += usize::from(answer == "DELETED");
        }
        Ok(removed)
    }

    /// Drops every entry of this tier (a new generation); reports 0 purged (unknown).
    pub(super) async fn purge_everything(&self) -> TierResult<usize> {
        let name = format!("{}:generation", self.prefix);
        let answer = self.command(&format!("incr {name} 1\r\n")).await?;
        let generation = match answer.parse::<u64>() {
            Ok(generation) => generation,
            Err(_) => {
                self.store("add", &name, 0, b"1").await?;
                1
            }
        };
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, Instant::now()));
        Ok(0)
    }

    /// Appends an invalidation to the journal.
    pub(super) async fn publish(&self, message: Vec<u8>) -> TierResult<()> {
        let number = self.next_journal_number().await?;
        let answer = self.store("set", &format!("{}:j:{number}", self.prefix), JOURNAL_KEEP, &message).await?;
        match answer.as_str() {
            "STORED" => Ok(()),
            other => Err(format!("unexpected answer to set: {other:?}")),
        }
    }

    async fn next_journal_number(&self) -> TierResult<u64> {
        let name = format!("{}:jseq", self.prefix);
        for _ in 0..2 {
            if let Ok(number) = self.command(&format!("incr {name} 1\r\n")).await?.parse::<u64>() {
                return Ok(number);
            }
            // NOT_FOUND: the first message (or memcached restarted). NOT_STORED from
            // `add` means another instance made it meanwhile: incr again either way.
            self.store("add", &name, 0, b"0").await?;
        }
        Err("the journal counter could not be made".into())
    }

    /// The journal's last message number (0 when none was ever written).
    async fn journal_number(&self) -> TierResult<u64> {
        let value = self.get_raw(&format!("{}:jseq", self.prefix)).await?;
        Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok()).unwrap_or(0))
    }

    /// Reads the journal every `JOURNAL_POLL` and hears the other instances' messages,
    /// until a read fails (returns its error; the caller listens again). A message
    /// still missing one poll after its number was seen (expired, evicted, or its
    /// writer failed) is heard as `MaybeMissed`.
    pub(super) async fn listen(&self, sender: u64, heard: &mut (dyn FnMut(Heard) + Send)) -> TierResult<()> {
        let bound = self.gate.timeout() * 10;
        let mut read = within(bound, self.journal_number()).await?;
        heard(Heard::MaybeMissed);
        let mut missing: Option<u64> = None;
        loop {
            tokio::time::sleep(JOURNAL_POLL).await;
            let last = within(bound, self.journal_number()).await?;
            if last < read {
                // The counter went back: memcached restarted, and with it the tier.
                read = last;
                heard(Heard::MaybeMissed);
                continue;
            }
            while read < last {
                let number = read + 1;
                let Some(message) = within(bound, self.get_raw(&format!("{}:j:{number}", self.prefix))).await? else {
                    if missing == Some(number) {
                        heard(Heard::MaybeMissed);
                        read = last;
                    }
                    missing = Some(number);
                    break;
                };
                if let Some((from, invalidation)) = spread::decode(&message) {
                    if matches!(invalidation, Invalidation::Prefix { .. } | Invalidation::Tags(_)) {
                        self.forget_generation();
                    }
                    if from != sender {
                        heard(Heard::Invalidation(invalidation));
                    }
                }
                read = number;
            }
        }
    }

    /// The generation is read again on the next operation (another instance purged).
    fn forget_generation(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn command(&self, line: &str) -> TierResult<String> {
        let mut connection = self.connection().await?;
        connection.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        connection.flush().await.map_err(|e| e.to_string())?;
        let answer = read_line(&mut connection).await?;
        self.give_back(connection);
        Ok(answer)
    }
}

/// `op`, or an error after `bound`.
async fn within<T>(bound: Duration, op: impl std::future::Future<Output = TierResult<T>>) -> TierResult<T> {
    tokio::time::timeout(bound, op).await.map_err(|_| format!("no answer within {bound:?}"))?
}

/// One protocol line, without its CRLF; errors on EOF or an over-long line.
async fn read_line(connection: &mut BufStream<TcpStream>) -> TierResult<String> {
    let mut line = Vec::new();
    let read = (&mut *connection).take(1024).read_until(b'\n', &mut line).await.map_err(|e| e.to_string())?;
    if read == 0 || !line.ends_with(b"\r\n") {
        return Err("memcached closed the connection".into());
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| "memcached sent a line that is not text".into())
}
