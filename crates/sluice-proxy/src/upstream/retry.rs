//! A group's retry policy and budget (`sluice_policy::retry`): which failures are tried
//! again, how long to wait first, and whether the budget still allows it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use sluice_config::{HedgeAfter, RetrySettings};
use sluice_policy::retry::{backoff, RetryBudget};

/// Why a request would be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The connect failed: nothing was sent.
    ConnectFailure,
    /// The connection failed before a response head.
    Reset,
    /// The response had a status the config retries on.
    Status,
    /// No response head yet after `hedge_after`: a second copy goes elsewhere.
    Hedge,
}

impl Cause {
    /// How a try that is retried for this cause ended, for the request's trace.
    pub(crate) fn failure_kind(self) -> &'static str {
        match self {
            Cause::ConnectFailure => "connect_failed",
            Cause::Reset => "reset",
            Cause::Status => "retried_status",
            Cause::Hedge => "hedged",
        }
    }
}

pub(crate) struct RetryState {
    settings: RetrySettings,
    budget: Mutex<RetryBudget>,
    /// Retries (and hedges) made, and those the budget refused, since start.
    made: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl RetryState {
    pub(crate) fn new(settings: &RetrySettings) -> Self {
        let budget = RetryBudget::new(settings.budget_percent, settings.min_retries_per_second, Instant::now());
        RetryState {
            settings: settings.clone(),
            budget: Mutex::new(budget),
            made: Default::default(),
            refused: Default::default(),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request began: it pays its share into the budget.
    pub(crate) fn deposit(&self) {
        self.budget().deposit(Instant::now());
    }

    /// Whether a request may be sent again after it was sent: it is idempotent, or its
    /// body was read whole and the group does not restrict retries to idempotent methods.
    pub(crate) fn replayable(&self, idempotent: bool, body_whole: bool) -> bool {
        idempotent || (body_whole && !self.settings.idempotent_only)
    }

    /// Whether any retry after sending can happen, so a copy of the body is worth keeping.
    pub(crate) fn retries_after_send(&self) -> bool {
        self.settings.retries > 0
            && (self.settings.on_reset
                || !self.settings.on_status.is_empty()
                || self.settings.per_try_timeout.is_some())
    }

    pub(crate) fn hedge_after(&self) -> Option<HedgeAfter> {
        self.settings.hedge_after
    }

    pub(crate) fn per_try_timeout(&self) -> Option<Duration> {
        self.settings.per_try_timeout
    }

    pub(crate) fn retries_on(&self, status: StatusCode) -> bool {
        self.settings.on_status.contains(&status.as_u16())
    }

    /// Whether a request that has been retried `done` times may be again for `cause`;
    /// if so, the retry is withdrawn from the budget.
    pub(crate) fn allow(&self, cause: Cause, done: u32) -> bool {
        let wanted = match cause {
            Cause::ConnectFailure => self.settings.on_connect_failure,
            Cause::Reset => self.settings.on_reset,
            Cause::Status | Cause::Hedge => true,
        };
        if !wanted || done >= self.settings.retries {
            return false;
        }
        let allowed = self.budget().try_withdraw(Instant::now());
        let counter = if allowed { &self.made } else { &self.refused };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        allowed
    }

    /// Retries made, and refused by the budget, since start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.made.load(Relaxed), self.refused.load(Relaxed))
    }

    /// How long to wait before retry number `n` (1-based).
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        backoff(self.settings.backoff, n, super::balance::random())
    }
}
