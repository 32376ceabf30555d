//! A global rate limit's counts in Redis: one key per (policy, key), holding its GCRA
//! TAT, read and updated by one server-side script (one round trip per decision) on
//! Redis's own clock (instances' clocks may differ), expiring by itself once the bucket
//! is full again. The script is loaded once per connection (`SCRIPT LOAD`) and run by
//! its digest; after a Redis restart it is loaded again.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::local::Taken;
use crate::gate::TierResult;

/// KEYS[1]: the key; ARGV[1]: interval (µs); ARGV[2]: tolerance (µs).
/// Returns {admitted (0|1), retry_after_us, remaining, until_full_us}.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - tolerance > now then
  return {0, tat - tolerance - now, 0, tat - now}
end
local new = tat + interval
redis.call('SET', KEYS[1], new, 'PX', math.ceil((new - now) / 1000) + 1)
local remaining = math.floor((now + tolerance - new) / interval) + 1
if remaining < 0 then remaining = 0 end
return {1, 0, remaining, new - now}
";

/// One Redis server's connection for the global limits that name it.
pub(crate) struct RedisCounts {
    client: redis::Client,
    /// The connection and the script's digest on it.
    connection: tokio::sync::Mutex<Option<(MultiplexedConnection, String)>>,
}

impl RedisCounts {
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("rate_limit redis \"{url}\": {e}"))?;
        Ok(RedisCounts { client, connection: tokio::sync::Mutex::new(None) })
    }

    async fn connection(&self) -> TierResult<(MultiplexedConnection, String)> {
        let mut slot = self.connection.lock().await;
        if let Some(ready) = &*slot {
            return Ok(ready.clone());
        }
        let mut connection = self.client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        let digest: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(GCRA_SCRIPT)
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some((connection.clone(), digest.clone()));
        Ok((connection, digest))
    }

    /// One decision for `key` (interval and tolerance in µs).
    pub(crate) async fn decide(&self, key: &str, interval_us: u64, tolerance_us: u64) -> TierResult<Taken> {
        let (mut connection, digest) = self.connection().await?;
        let answer: Result<(u8, u64, u64, u64), redis::RedisError> = redis::cmd("EVALSHA")
            .arg(&digest)
            .arg(1)
            .arg(key)
            .arg(interval_us)
            .arg(tolerance_us)
            .query_async(&mut connection)
            .await;
        match answer {
            Ok((1, _, remaining, until_full)) => {
                Ok(Taken::Admitted { remaining, until_full: Duration::from_micros(until_full) })
            }
            Ok((_, retry_after, _, _)) => Ok(Taken::Refused { retry_after: Duration::from_micros(retry_after) }),
            Err(e) => {
                // A restarted Redis has lost the script (NOSCRIPT) or the connection:
                // the next decision makes both again.
                *self.connection.lock().await = None;
                Err(e.to_string())
            }
        }
    }
}
