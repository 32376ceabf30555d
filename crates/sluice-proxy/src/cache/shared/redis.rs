//! The Redis tier (redis-rs, one multiplexed connection, made again after a failure).
//! Keys: `PREFIX:v1:KEY` for entries (with PX = the entry's lifetime), `PREFIX:v1t:TAG`
//! sets of the keys with a tag, `PREFIX:v1l:KEY` for the cross-instance fetch lock.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;

use super::{Gate, TierResult};

pub(crate) struct RedisTier {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    pub(super) coalesce_lock: bool,
    pub(super) gate: Gate,
}

fn failed(e: redis::RedisError) -> String {
    e.to_string()
}

impl RedisTier {
    pub(crate) fn new(url: &str, timeout: Duration, prefix: &str, coalesce_lock: bool) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("cache.redis.url: {e}"))?;
        Ok(RedisTier {
            client,
            connection: tokio::sync::Mutex::new(None),
            prefix: prefix.to_string(),
            coalesce_lock,
            gate: Gate::new("the shared cache tier", timeout, "serving from memory only"),
        })
    }

    /// The connection, made now if there is none (within the caller's bound).
    async fn connection(&self) -> TierResult<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let connection = self.client.get_multiplexed_async_connection().await.map_err(failed)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `cmd`; a failed command drops the connection (the next one is made fresh).
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> TierResult<T> {
        let mut connection = self.connection().await?;
        match cmd.query_async::<T>(&mut connection).await {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.connection.lock().await = None;
                }
                Err(failed(e))
            }
        }
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}:v1:{key}", self.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:v1t:{tag}", self.prefix)
    }

    pub(super) async fn get(&self, key: &str) -> TierResult<Option<Bytes>> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.entry_key(key))).await?;
        Ok(value.map(Bytes::from))
    }

    pub(super) async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration, tags: &[String]) -> TierResult<()> {
        let millis = ttl.as_millis().max(1) as u64;
        let entry_key = self.entry_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&entry_key).arg(value).arg("PX").arg(millis).ignore();
        for tag in tags {
            let tag_key = self.tag_key(tag);
            pipe.cmd("SADD").arg(&tag_key).arg(&entry_key).ignore();
            // The set lives at least as long as its newest member (GT: never shortened).
            pipe.cmd("PEXPIRE").arg(&tag_key).arg(millis).arg("GT").ignore();
            pipe.cmd("PEXPIRE").arg(&tag_key).arg(millis).arg("NX").ignore();
        }
        let mut connection = self.connection().await?;
        pipe.query_async::<()>(&mut connection).await.map_err(failed)
    }

    pub(super) async fn remove(&self, keys: &[String]) -> TierResult<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("UNLINK");
        for key in keys {
            cmd.arg(self.entry_key(key));
        }
        self.run(&cmd).await
    }

    pub(super) async fn purge_prefix(&self, host: &str, path_prefix: &str) -> TierResult<usize> {
        let pattern = format!("{}:v1:*://{}{}*", self.prefix, glob_escape(host), glob_escape(path_prefix));
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) =
                self.run(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000)).await?;
            if !keys.is_empty() {
                removed += self.run::<usize>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    pub(super) async fn purge_tags(&self, tags: &[String]) -> TierResult<usize> {
        let mut removed = 0;
        for tag in tags {
            let tag_key = self.tag_key(tag);
            let keys: Vec<String> = self.run(redis::cmd("SMEMBERS").arg(&tag_key)).await?;
            if !keys.is_empty() {
                removed += self.run::<usize>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            self.run::<usize>(redis::cmd("UNLINK").arg(&tag_key)).await?;
        }
        Ok(removed)
    }

    pub(super) async fn lock(&self, key: &str, hold: Duration) -> TierResult<bool> {
        let lock_key = format!("{}:v1l:{key}", self.prefix);
        let millis = hold.as_millis().max(1) as u64;
        let set: Option<String> =
            self.run(redis::cmd("SET").arg(lock_key).arg(1).arg("NX").arg("PX").arg(millis)).await?;
        Ok(set.is_some())
    }

    pub(super) async fn unlock(&self, key: &str) -> TierResult<()> {
        let lock_key = format!("{}:v1l:{key}", self.prefix);
        self.run::<usize>(redis::cmd("UNLINK").arg(lock_key)).await.map(|_| ())
    }
}

/// Escapes Redis glob characters, so a host or path matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
