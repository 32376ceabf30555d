//! The upstream layer: groups of endpoints, their connection pools, and sending one
//! request with failover. Balancing, health state and retry budgets hang here.

mod connect;
mod pool;

use std::io;
use std::sync::Arc;

use crate::proxy::RequestBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use sluice_config::{UpstreamConfig, UpstreamProtocol};
use sluice_policy::balance::RoundRobin;

use pool::EndpointPool;
pub(crate) use pool::Lease;

/// How many times a request that a stale pooled connection refused to take is tried again.
const STALE_CONNECTION_RETRIES: usize = 3;

/// Why an upstream exchange failed. Mapped to a response in `proxy::error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {endpoint} failed: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("connect to {endpoint} timed out")]
    ConnectTimeout { endpoint: String },
    #[error("no connection to {endpoint} became free in time (pool at max_connections)")]
    PoolExhausted { endpoint: String },
    #[error("{endpoint} failed the exchange: {source}")]
    Exchange { endpoint: String, source: hyper::Error },
    #[error("every pooled connection to {endpoint} was closed by the upstream before use")]
    StaleConnections { endpoint: String },
    #[error("upstream group has no endpoints")]
    NoEndpoint,
}

impl UpstreamError {
    /// True when nothing was sent, so another endpoint may take the request.
    fn is_connect_failure(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. })
    }
}

/// A named group of interchangeable endpoints, each with its own pool.
pub struct UpstreamGroup {
    pub name: String,
    protocol: UpstreamProtocol,
    pools: Vec<Arc<EndpointPool>>,
    balancer: RoundRobin,
}

impl UpstreamGroup {
    /// Builds the group and starts its pools (warm connections open in the background).
    pub fn spawn(config: &UpstreamConfig) -> Self {
        let pools =
            config.endpoints.iter().map(|e| EndpointPool::spawn(e.clone(), config.protocol, config.pool)).collect();
        UpstreamGroup { name: config.name.clone(), protocol: config.protocol, pools, balancer: RoundRobin::default() }
    }

    /// The protocol sluice speaks to this group's endpoints.
    pub(crate) fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Sends `request` to one endpoint. A connect failure moves an idempotent request on
    /// to the next endpoint; a request a stale connection never wrote is resent on a
    /// fresh one, whatever its method.
    pub(crate) async fn send(
        &self,
        mut request: Request<RequestBody>,
        idempotent: bool,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let mut last_error = UpstreamError::NoEndpoint;
        for index in self.balancer.order(self.pools.len()) {
            let pool = &self.pools[index];
            for _ in 0..STALE_CONNECTION_RETRIES {
                let mut lease = match pool.checkout().await {
                    Ok(lease) => lease,
                    Err(e) if e.is_connect_failure() && idempotent => {
                        tracing::warn!(upstream = %self.name, error = %e, "trying the next endpoint");
                        last_error = e;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                match lease.send(request).await {
                    Ok(response) => return Ok((response, lease)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => {
                            tracing::debug!(endpoint = %lease.endpoint(), "pooled connection was stale; resending");
                            last_error = UpstreamError::StaleConnections { endpoint: lease.endpoint().to_string() };
                            request = unsent;
                        }
                        None => {
                            return Err(UpstreamError::Exchange {
                                endpoint: lease.endpoint().to_string(),
                                source: e.into_error(),
                            })
                        }
                    },
                }
            }
            if !idempotent {
                break;
            }
        }
        Err(last_error)
    }
}
