//! The memcached tier, over memcached's text protocol (get, set, delete, incr, add:
//! five commands, written here rather than taking a client crate for them; see
//! ARCHITECTURE.md). Keys are `PREFIX:GENERATION:DIGEST`: memcached cannot list keys,
//! so a prefix or tag purge bumps the generation, which drops every entry of the tier
//! at once (a URL purge deletes its key). The generation is read at most once a second.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use super::{digest, Gate, TierResult};

/// Idle connections kept.
const IDLE_CONNECTIONS: usize = 8;
/// Room for a stored entry's key, head and Vary values beside its body (a request head
/// is at most 64 KiB, a response head too).
const MAX_HEAD_ROOM: usize = 256 * 1024;
/// How long a read generation is used before it is read again.
const GENERATION_FOR: Duration = Duration::from_secs(1);
/// memcached's longest relative expiry (longer values are read as a Unix time).
const MAX_RELATIVE_EXPIRY: u64 = 30 * 24 * 3600;

pub(crate) struct MemcachedTier {
    address: String,
    prefix: String,
    idle: std::sync::Mutex<Vec<BufStream<TcpStream>>>,
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
            generation: std::sync::Mutex::new(None),
            gate: Gate::new("memcached", timeout),
        }
    }

    async fn connection(&self) -> TierResult<BufStream<TcpStream>> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(connection) => Ok(connection),
            None => {
                let stream = TcpStream::connect(&self.address).await.map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                Ok(BufStream::new(stream))
            }
        }
    }

    /// A connection whose exchange completed goes back for reuse.
    fn give_back(&self, connection: BufStream<TcpStream>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
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

    async fn command(&self, line: &str) -> TierResult<String> {
        let mut connection = self.connection().await?;
        connection.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        connection.flush().await.map_err(|e| e.to_string())?;
        let answer = read_line(&mut connection).await?;
        self.give_back(connection);
        Ok(answer)
    }
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
