//! The process-wide shutdown signal: a flag and a `Notify`, which works across the
//! workers' runtimes. Idle HTTP/1 connections do not wait on it: their worker's idle
//! queues (`idle`) expire them all when it fires.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once, when SIGTERM or Ctrl-C arrives; everything that waits is woken.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    triggered: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    pub(crate) fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Completes once shutdown has been triggered.
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a trigger in between is not missed.
        notified.as_mut().enable();
        if self.is_triggered() {
            return;
        }
        notified.await;
    }
}
