//! The process-wide shutdown signal: a flag and a `Notify`, so that waiting on it costs
//! an idle connection one small `Notified` (a `watch` receiver's wait is twice that).

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

    /// A registration for the wakeup; `enable` it, then check `is_triggered`.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
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
