//! What one instance invalidates, every instance drops from its memory tier. The
//! shared tier removes an entry once for all; but each instance also keeps entries in
//! memory, where another instance's purge cannot reach. So every invalidation is also
//! sent through the shared store (Redis pub/sub; memcached: a journal each instance
//! reads every `JOURNAL_POLL`), and a listener thread per process applies the others'.
//!
//! When the listener may have missed messages (its connection broke, a journal entry
//! expired before it was read), it empties the memory tier: a miss is cheap, a stale
//! hit after a purge is what this exists to prevent.

use std::sync::Arc;
use std::time::Duration;

use super::Cache;

/// How often a memcached journal is read: the bound, with the read's own time, on how
/// long another instance serves a purged entry from memory.
pub(crate) const JOURNAL_POLL: Duration = Duration::from_millis(250);
/// After a failure to listen, the next try waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// One invalidation, as every instance applies it to its memory tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// These exact keys (an unsafe method's target and Location).
    Keys(Vec<String>),
    /// These URLs, with any key extras when `extras` (a URL purge).
    Urls { urls: Vec<String>, extras: bool },
    /// Every key of `host` under `path` (a prefix purge).
    Prefix { host: String, path: String },
    /// Every entry with one of these tags.
    Tags(Vec<String>),
}

/// What a listener hears: another instance's invalidation, or that it may have missed
/// some (then everything in memory goes).
pub(crate) enum Heard {
    Invalidation(Invalidation),
    MaybeMissed,
}

/// A message on the wire: `SENDER KIND COUNT\n` then each item as `LENGTH:BYTES`
/// (keys hold newlines, so items are counted, not split).
pub(crate) fn encode(sender: u64, invalidation: &Invalidation) -> Vec<u8> {
    let (kind, items): (&str, Vec<&str>) = match invalidation {
        Invalidation::Keys(keys) => ("keys", keys.iter().map(String::as_str).collect()),
        Invalidation::Urls { urls, extras: false } => ("urls", urls.iter().map(String::as_str).collect()),
        Invalidation::Urls { urls, extras: true } => ("urls+", urls.iter().map(String::as_str).collect()),
        Invalidation::Prefix { host, path } => ("prefix", vec![host.as_str(), path.as_str()]),
        Invalidation::Tags(tags) => ("tags", tags.iter().map(String::as_str).collect()),
    };
    let mut out = format!("{sender:016x} {kind} {}\n", items.len()).into_bytes();
    for item in items {
        out.extend_from_slice(format!("{}:", item.len()).as_bytes());
        out.extend_from_slice(item.as_bytes());
    }
    out
}

/// The sender and invalidation of a message; None for anything malformed (a message
/// from a newer version, or not ours: ignored, never trusted).
pub(crate) fn decode(message: &[u8]) -> Option<(u64, Invalidation)> {
    let text = std::str::from_utf8(message).ok()?;
    let (head, mut rest) = text.split_once('\n')?;
    let mut words = head.split(' ');
    let sender = u64::from_str_radix(words.next()?, 16).ok()?;
    let kind = words.next()?;
    let count: usize = words.next()?.parse().ok()?;
    let mut items = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (length, after) = rest.split_once(':')?;
        let length: usize = length.parse().ok()?;
        items.push(after.get(..length)?.to_string());
        rest = &after[length..];
    }
    let invalidation = match kind {
        "keys" => Invalidation::Keys(items),
        "urls" => Invalidation::Urls { urls: items, extras: false },
        "urls+" => Invalidation::Urls { urls: items, extras: true },
        "prefix" => {
            let [host, path]: [String; 2] = items.try_into().ok()?;
            Invalidation::Prefix { host, path }
        }
        "tags" => Invalidation::Tags(items),
        _ => return None,
    };
    rest.is_empty().then_some((sender, invalidation))
}

/// Starts the process's listener for other instances' invalidations: a thread of its
/// own with a one-thread runtime, so no worker's loop carries it. It lives as long
/// as the process (the cache does too).
pub(crate) fn listen(cache: &Arc<Cache>) {
    let cache = Arc::clone(cache);
    let started = std::thread::Builder::new().name("sluice-cache-spread".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!("cache invalidations from other instances will not be heard: {e}");
                return;
            }
        };
        runtime.block_on(async move {
            loop {
                cache.hear_others().await;
                tokio::time::sleep(RETRY).await;
            }
        });
    });
    if let Err(e) = started {
        tracing::error!("cache invalidations from other instances will not be heard: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_wire_and_keys_keep_their_newlines() {
        for invalidation in [
            Invalidation::Keys(vec!["http://a/x\ncookie:s=1".into(), "https://a/x".into()]),
            Invalidation::Urls { urls: vec!["http://a/p?q=1:2".into()], extras: true },
            Invalidation::Urls { urls: vec![], extras: false },
            Invalidation::Prefix { host: "a:8080".into(), path: "/docs/".into() },
            Invalidation::Tags(vec!["t1".into(), "".into(), "é".into()]),
        ] {
            let wire = encode(0xabc, &invalidation);
            assert_eq!(decode(&wire), Some((0xabc, invalidation)));
        }
    }

    #[test]
    fn anything_malformed_is_ignored() {
        let good = encode(7, &Invalidation::Tags(vec!["a".into()]));
        for bad in [
            &b""[..],
            b"zz tags 1\n1:a",
            b"0000000000000007 tags 2\n1:a",
            b"0000000000000007 tags 1\n5:a",
            b"0000000000000007 tags 1\n1:ab",
            b"0000000000000007 drop 0\n",
            b"0000000000000007 prefix 1\n1:a",
            &good[..good.len() - 1],
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
