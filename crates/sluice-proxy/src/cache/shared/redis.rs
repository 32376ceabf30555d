//! The Redis tier: one server, a Cluster or Sentinel (`redis_link`), one multiplexed
//! connection made again after a failure. Keys, with the key's digest as a hash tag so
//! that an entry and its lock share a Cluster slot (one pipeline writes both):
//! `PREFIX:v2:{DIGEST}:KEY` for entries (PX = the entry's lifetime), `PREFIX:v2l:{DIGEST}:KEY`
//! for the cross-instance fetch lock (`fetching` while an instance fetches; `pass` for
//! `PASS_FOR` after a response that may not be stored; gone once the entry is stored),
//! and `PREFIX:v2t:TAG` sets of the entries with a tag (each in its own slot). Invalidations
//! go to every instance on the channel `PREFIX:v2:invalidations` (pub/sub, which a
//! Cluster carries to every node).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use sluice_config::RedisLink;

use super::{digest, Across, Gate, Heard, TierResult};
use crate::cache::spread;
use crate::redis_link::{Connection, RedisClient};

/// A subscription that does not answer a PING within this long is made again.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long other instances go to the origin on their own for a key whose response
/// could not be stored (the cross-instance hit-for-pass), as within one instance.
const PASS_FOR: Duration = Duration::from_secs(10);

pub(crate) struct RedisTier {
    client: RedisClient,
    prefix: String,
    pub(super) coalesce_lock: bool,
    pub(super) gate: Gate,
}

fn failed(e: redis::RedisError) -> String {
    e.to_string()
}

impl RedisTier {
    pub(crate) fn new(link: &RedisLink, timeout: Duration, prefix: &str, coalesce_lock: bool) -> Result<Self, String> {
        let client = RedisClient::open(link).map_err(|e| format!("cache.redis.url: {e}"))?;
        Ok(RedisTier {
            client,
            prefix: prefix.to_string(),
            coalesce_lock,
            gate: Gate::new("the shared cache tier", timeout, "serving from memory only"),
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> TierResult<T> {
        self.client.run(cmd).await
    }

    async fn run_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> TierResult<T> {
        self.client.run_pipe(pipe).await
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}:v2:{{{}}}:{key}", self.prefix, digest(key))
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:v2t:{tag}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}:v2l:{{{}}}:{key}", self.prefix, digest(key))
    }

    fn channel(&self) -> String {
        format!("{}:v2:invalidations", self.prefix)
    }

    pub(super) async fn get(&self, key: &str) -> TierResult<Option<Bytes>> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.entry_key(key))).await?;
        Ok(value.map(Bytes::from))
    }

    /// Stores an entry (and frees its fetch lock: the instances waiting on it find it).
    pub(super) async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration, tags: &[String]) -> TierResult<()> {
        let millis = ttl.as_millis().max(1) as u64;
        let entry_key = self.entry_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&entry_key).arg(value).arg("PX").arg(millis).ignore();
        if self.coalesce_lock {
            pipe.cmd("UNLINK").arg(self.lock_key(key)).ignore();
        }
        // A tag's set is in a slot of its own: one pipeline per slot.
        let mut pipes = vec![pipe];
        for tag in tags {
            let tag_key = self.tag_key(tag);
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&tag_key).arg(&entry_key).ignore();
            // The set lives at least as long as its newest member (GT: never shortened).
            pipe.cmd("PEXPIRE").arg(&tag_key).arg(millis).arg("GT").ignore();
            pipe.cmd("PEXPIRE").arg(&tag_key).arg(millis).arg("NX").ignore();
            pipes.push(pipe);
        }
        if !self.client.clustered() {
            // One server: one round trip for all of it.
            let mut all = redis::pipe();
            for pipe in &pipes {
                for cmd in pipe.cmd_iter() {
                    all.add_command(cmd.clone()).ignore();
                }
            }
            pipes = vec![all];
        }
        for pipe in &pipes {
            self.run_pipe::<()>(pipe).await?;
        }
        Ok(())
    }

    /// Removes `keys` (entry keys as stored): one command on one server, one per key
    /// on a Cluster (each in its own slot); how many were there.
    async fn unlink_all(&self, keys: &[String]) -> TierResult<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        if !self.client.clustered() {
            return self.run(redis::cmd("UNLINK").arg(keys)).await;
        }
        let mut removed = 0;
        for key in keys {
            removed += self.run::<usize>(redis::cmd("UNLINK").arg(key)).await?;
        }
        Ok(removed)
    }

    pub(super) async fn remove(&self, keys: &[String]) -> TierResult<usize> {
        let keys: Vec<String> = keys.iter().map(|key| self.entry_key(key)).collect();
        self.unlink_all(&keys).await
    }

    /// Removes the entries of `host` under `path_prefix`: a SCAN of the server, or of
    /// every primary of a Cluster.
    pub(super) async fn purge_prefix(&self, host: &str, path_prefix: &str) -> TierResult<usize> {
        let pattern = format!("{}:v2:{{*}}:*://{}{}*", self.prefix, glob_escape(host), glob_escape(path_prefix));
        let nodes = match self.client.clustered() {
            true => self.primaries().await?.into_iter().map(Some).collect(),
            false => vec![None],
        };
        let mut removed = 0;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = match &node {
                    None => self.run(&scan).await?,
                    Some(address) => self.run_on(scan, address).await?,
                };
                removed += self.unlink_all(&keys).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// A Cluster's primaries, as (host, port), from CLUSTER NODES.
    async fn primaries(&self) -> TierResult<Vec<(String, u16)>> {
        let nodes: String = self.run(&redis::cmd("CLUSTER").arg("NODES").clone()).await?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let address = fields.nth(1)?;
                let flags = fields.next()?;
                if !flags.split(',').any(|flag| flag == "master") || flags.contains("fail") {
                    return None;
                }
                let address = address.split(['@', ',']).next()?;
                let (host, port) = address.rsplit_once(':')?;
                Some((host.to_string(), port.parse().ok()?))
            })
            .collect())
    }

    /// Runs `cmd` on one node of the Cluster.
    async fn run_on<T: redis::FromRedisValue>(&self, cmd: redis::Cmd, (host, port): &(String, u16)) -> TierResult<T> {
        let Connection::Cluster(mut cluster) = self.client.connection().await? else {
            return Err("not a cluster".into());
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
        let value = cluster.route_command(cmd, routing).await.map_err(failed)?;
        redis::from_redis_value(value).map_err(|e| e.to_string())
    }

    pub(super) async fn purge_tags(&self, tags: &[String]) -> TierResult<usize> {
        let mut removed = 0;
        for tag in tags {
            let tag_key = self.tag_key(tag);
            let keys: Vec<String> = self.run(redis::cmd("SMEMBERS").arg(&tag_key)).await?;
            removed += self.unlink_all(&keys).await?;
            self.run::<usize>(redis::cmd("UNLINK").arg(&tag_key)).await?;
        }
        Ok(removed)
    }

    /// Tries to take the fetch lock of `key` for `hold`, in one round trip that also
    /// tells what holds it otherwise (SET NX GET, Redis 7).
    pub(super) async fn lock(&self, key: &str, hold: Duration) -> TierResult<Across> {
        let millis = hold.as_millis().max(1) as u64;
        let held: Option<String> = self
            .run(redis::cmd("SET").arg(self.lock_key(key)).arg("fetching").arg("NX").arg("GET").arg("PX").arg(millis))
            .await?;
        Ok(across(held.as_deref()))
    }

    /// Frees the fetch lock of `key`: with `pass`, other instances go to the origin on
    /// their own for a while (the response may not be stored); else at once.
    pub(super) async fn unlock(&self, key: &str, pass: bool) -> TierResult<()> {
        let lock_key = self.lock_key(key);
        if pass {
            let millis = PASS_FOR.as_millis() as u64;
            self.run::<()>(redis::cmd("SET").arg(lock_key).arg("pass").arg("PX").arg(millis)).await
        } else {
            self.run::<usize>(redis::cmd("UNLINK").arg(lock_key)).await.map(|_| ())
        }
    }

    /// The entry of `key` if stored, and otherwise the state of its fetch lock, in
    /// one round trip.
    pub(super) async fn poll(&self, key: &str) -> TierResult<(Option<Bytes>, Across)> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.entry_key(key)).cmd("GET").arg(self.lock_key(key));
        let (entry, held): (Option<Vec<u8>>, Option<String>) = self.run_pipe(&pipe).await?;
        Ok((entry.map(Bytes::from), across(held.as_deref())))
    }

    /// Sends an invalidation to every instance listening.
    pub(super) async fn publish(&self, message: Vec<u8>) -> TierResult<()> {
        self.run::<usize>(redis::cmd("PUBLISH").arg(self.channel()).arg(message)).await.map(|_| ())
    }

    /// Hears the other instances' invalidations until the subscription fails (then
    /// returns its error; the caller listens again). Each new subscription is heard
    /// as `MaybeMissed` first: messages sent while there was none are lost.
    pub(super) async fn listen(&self, sender: u64, heard: &mut (dyn FnMut(Heard) + Send)) -> TierResult<()> {
        let limit = self.gate.timeout() * 10;
        let subscribed = tokio::time::timeout(limit, async {
            let mut pubsub = self.client.subscriber().await?;
            pubsub.subscribe(self.channel()).await.map_err(failed)?;
            Ok::<_, String>(pubsub)
        });
        let pubsub = subscribed.await.map_err(|_| format!("no answer within {limit:?}"))??;
        heard(Heard::MaybeMissed);
        let (mut sink, mut messages) = pubsub.split();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Err("the subscription ended".into()) };
                    match spread::decode(message.get_payload_bytes()) {
                        Some((from, invalidation)) if from != sender => heard(Heard::Invalidation(invalidation)),
                        _ => {}
                    }
                }
                () = tokio::time::sleep(PING_EVERY) => {
                    match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(failed(e)),
                        Err(_) => return Err(format!("no answer to PING within {limit:?}")),
                    }
                }
            }
        }
    }
}

/// What a fetch lock's value says.
fn across(held: Option<&str>) -> Across {
    match held {
        None => Across::Free,
        Some("pass") => Across::Pass,
        Some(_) => Across::Fetching,
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
