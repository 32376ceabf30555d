//! One way to reach Redis whatever its deployment, for the cache's shared tier and the
//! global rate limits: one server, a Cluster (redis-rs's cluster client: slots,
//! redirections, a primary's failover) or Sentinel (redis-rs's sentinel client: the
//! current primary is asked of the sentinels whenever a connection is made). TLS
//! (`rediss`, with a CA file or the system's roots), and AUTH/ACL from the URL or a
//! password file. Callers see one connection type and drop it after an I/O error;
//! the next one is made fresh (after a Sentinel failover: to the new primary).

use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{IntoConnectionInfo, RedisFuture, TlsCertificates};
use sluice_config::{RedisLink, RedisTopology};

use crate::gate::TierResult;

/// A Redis deployment to connect to, and the connection in use.
pub(crate) struct RedisClient {
    target: Target,
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// Set when a command failed or was abandoned (its caller's bound ran out): the
    /// connection may be dead (a killed or demoted primary), so the next is made anew.
    suspect: AtomicBool,
}

enum Target {
    Server(redis::Client),
    /// The cluster, and a client per seed node for subscriptions (pub/sub messages
    /// reach every node of a cluster).
    Cluster(ClusterClient, Vec<redis::Client>),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A connection to any deployment (each multiplexed: clones share it).
#[derive(Clone)]
pub(crate) enum Connection {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Connection::One(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::One(connection) => connection.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::One(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

impl RedisClient {
    /// The client for `link`; reads its password file. An error names what is wrong.
    pub(crate) fn open(link: &RedisLink) -> Result<RedisClient, String> {
        let password = match &link.password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        let certificates = match &link.ca_file {
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
            }),
            None => None,
        };
        let failed = |e: redis::RedisError| format!("Redis \"{}\": {e}", redact(&link.url));
        let info = |url: &str| -> Result<redis::ConnectionInfo, String> {
            let info = url.into_connection_info().map_err(failed)?;
            Ok(match &password {
                Some(password) => {
                    let settings = info.redis_settings().clone().set_password(password);
                    info.set_redis_settings(settings)
                }
                None => info,
            })
        };
        let server = |url: &str| -> Result<redis::Client, String> {
            match &certificates {
                Some(certificates) => redis::Client::build_with_tls(info(url)?, certificates.clone()).map_err(failed),
                None => redis::Client::open(info(url)?).map_err(failed),
            }
        };
        let target = match &link.topology {
            RedisTopology::Server(url) => Target::Server(server(url)?),
            RedisTopology::Cluster(nodes) => {
                let infos = nodes.iter().map(|node| info(node)).collect::<Result<Vec<_>, _>>()?;
                let mut builder = ClusterClient::builder(infos);
                if let Some(certificates) = &certificates {
                    builder = builder.certs(certificates.clone());
                }
                let subscribers = nodes.iter().map(|node| server(node)).collect::<Result<Vec<_>, _>>()?;
                Target::Cluster(builder.build().map_err(failed)?, subscribers)
            }
            RedisTopology::Sentinel { sentinels, service, primary } => {
                let addresses = sentinels
                    .iter()
                    .map(|url| url.as_str().into_connection_info().map(|info| info.addr().clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(failed)?;
                let primary_info = info(primary)?;
                let settings = primary_info.redis_settings();
                let mut builder = SentinelClientBuilder::new(addresses, service, SentinelServerType::Master)
                    .map_err(failed)?
                    .set_client_to_redis_db(settings.db());
                if let Some(username) = settings.username() {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = settings.password() {
                    builder = builder.set_client_to_redis_password(password);
                }
                if primary.starts_with("rediss") {
                    builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                    if let Some(certificates) = &certificates {
                        builder = builder.set_client_to_redis_certificates(certificates.clone());
                    }
                }
                Target::Sentinel(tokio::sync::Mutex::new(builder.build().map_err(failed)?))
            }
        };
        Ok(RedisClient { target, connection: tokio::sync::Mutex::new(None), suspect: AtomicBool::new(false) })
    }

    /// The connection, made now if there is none or the last one is suspect (within
    /// the caller's bound).
    pub(crate) async fn connection(&self) -> TierResult<Connection> {
        let mut slot = self.connection.lock().await;
        if self.suspect.swap(false, Ordering::AcqRel) {
            *slot = None;
        }
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let connection = match &self.target {
            Target::Server(client) => Connection::One(client.get_multiplexed_async_connection().await.map_err(text)?),
            Target::Cluster(cluster, _) => Connection::Cluster(cluster.get_async_connection().await.map_err(text)?),
            Target::Sentinel(sentinel) => {
                let primary = sentinel.lock().await.async_get_client().await.map_err(text)?;
                Connection::One(primary.get_multiplexed_async_connection().await.map_err(text)?)
            }
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `cmd`. A command that fails, except with an answer about the command itself
    /// (NOSCRIPT, WRONGTYPE...), or that is abandoned unfinished, makes the connection
    /// suspect: the next command makes a new one.
    pub(crate) async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> TierResult<T> {
        let mut connection = self.connection().await?;
        let guard = Unfinished(&self.suspect);
        let answer = cmd.query_async::<T>(&mut connection).await;
        self.finished(guard, answer)
    }

    /// `run` for a pipeline.
    pub(crate) async fn run_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> TierResult<T> {
        let mut connection = self.connection().await?;
        let guard = Unfinished(&self.suspect);
        let answer = pipe.query_async::<T>(&mut connection).await;
        self.finished(guard, answer)
    }

    /// `run` for a script invocation.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> TierResult<T> {
        let mut connection = self.connection().await?;
        let guard = Unfinished(&self.suspect);
        let answer = script.invoke_async::<T>(&mut connection).await;
        self.finished(guard, answer)
    }

    fn finished<T>(&self, guard: Unfinished<'_>, answer: redis::RedisResult<T>) -> TierResult<T> {
        std::mem::forget(guard);
        answer.map_err(|error| {
            // A server's answer about the command leaves the connection as good as it was;
            // these three say the server is not (or no more) the one to ask.
            let about_command = error.code().is_some_and(|code| !matches!(code, "READONLY" | "MASTERDOWN" | "LOADING"));
            if !about_command {
                self.suspect.store(true, Ordering::Release);
            }
            error.to_string()
        })
    }

    /// A client for a subscription: the server, the current primary, or the first
    /// cluster node that answers.
    pub(crate) async fn subscriber(&self) -> TierResult<redis::aio::PubSub> {
        match &self.target {
            Target::Server(client) => client.get_async_pubsub().await.map_err(text),
            Target::Sentinel(sentinel) => {
                let primary = sentinel.lock().await.async_get_client().await.map_err(text)?;
                primary.get_async_pubsub().await.map_err(text)
            }
            Target::Cluster(_, nodes) => {
                let mut last = String::from("no cluster node");
                for node in nodes {
                    match node.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(last)
            }
        }
    }

    /// Whether keys are spread over a cluster's slots (a multi-key command must keep
    /// its keys in one slot).
    pub(crate) fn clustered(&self) -> bool {
        matches!(self.target, Target::Cluster(..))
    }
}

/// Marks the connection suspect when dropped: a command abandoned before its answer
/// (the caller's timeout) may have left it dead or out of step.
struct Unfinished<'a>(&'a AtomicBool);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn text(error: redis::RedisError) -> String {
    error.to_string()
}

/// A password file's first line.
fn read_password(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
    match password.is_empty() {
        true => Err(format!("{}: the first line (the password) is empty", path.display())),
        false => Ok(password.to_string()),
    }
}

/// A URL with its credentials taken out, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://<redacted>{}", &url[at..]),
        _ => url.to_string(),
    }
}
