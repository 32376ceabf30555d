//! A global rate limit's counts in Redis: one key per (policy, key), holding its GCRA
//! TAT, read and updated by one server-side script (one round trip per decision) on
//! Redis's own clock (instances' clocks may differ), expiring by itself once the bucket
//! is full again. The script runs by its digest (`EVALSHA`), loaded again wherever
//! Redis answers NOSCRIPT.

use std::time::Duration;

use sluice_config::RedisLink;

use super::local::Taken;
use crate::gate::TierResult;
use crate::redis_link::RedisClient;

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

/// One Redis deployment's connection for the global limits that name it. A decision
/// has one key, so it runs on a Cluster as on one server (redis-rs routes it by key).
pub(crate) struct RedisCounts {
    client: RedisClient,
    script: redis::Script,
}

impl RedisCounts {
    pub(crate) fn new(link: &RedisLink) -> Result<Self, String> {
        let client = RedisClient::open(link).map_err(|e| format!("rate_limit redis: {e}"))?;
        Ok(RedisCounts { client, script: redis::Script::new(GCRA_SCRIPT) })
    }

    /// One decision for `key` (interval and tolerance in µs). The script runs by its
    /// digest, and is loaded again where a node lacks it (a restart, a failover, a
    /// Cluster node not asked before).
    pub(crate) async fn decide(&self, key: &str, interval_us: u64, tolerance_us: u64) -> TierResult<Taken> {
        let mut invocation = self.script.key(key);
        invocation.arg(interval_us).arg(tolerance_us);
        let answer: TierResult<(u8, u64, u64, u64)> = self.client.run_script(&invocation).await;
        match answer {
            Ok((1, _, remaining, until_full)) => {
                Ok(Taken::Admitted { remaining, until_full: Duration::from_micros(until_full) })
            }
            Ok((_, retry_after, _, _)) => Ok(Taken::Refused { retry_after: Duration::from_micros(retry_after) }),
            Err(e) => Err(e),
        }
    }
}
