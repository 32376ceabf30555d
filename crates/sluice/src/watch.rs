//! `server.config_watch`: the config file is read on an interval, and a change in its
//! content starts a reload, as SIGHUP does.
//!
//! Polling, not inotify: reading a few kilobytes every few seconds costs nothing,
//! needs no dependency, and sees every way a file is replaced: written in place,
//! renamed over by an editor, or swapped behind a symlink (how Kubernetes updates a
//! mounted ConfigMap, which inotify on the path misses). The content is compared, not
//! the modification time: two writes within one clock tick look alike by time, and a
//! `touch` that changes nothing reloads nothing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) struct FileWatch {
    path: PathBuf,
    interval: Duration,
    /// The content's hash when last seen; None while the file could not be read.
    seen: Option<u64>,
}

impl FileWatch {
    /// Watches `path` from its content now.
    pub(crate) async fn new(path: PathBuf, interval: Duration) -> FileWatch {
        let seen = content_hash(&path).await;
        FileWatch { path, interval, seen }
    }

    /// Returns once the file's content differs from when this last returned (or
    /// began). A file missing for a moment (replaced non-atomically) is waited for.
    pub(crate) async fn changed(&mut self) {
        loop {
            tokio::time::sleep(self.interval).await;
            let now = content_hash(&self.path).await;
            if now.is_some() && now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

async fn content_hash(path: &std::path::Path) -> Option<u64> {
    let content = tokio::fs::read(path).await.ok()?;
    let mut hasher = DefaultHasher::new();
    content.hash(&mut hasher);
    Some(hasher.finish())
}
