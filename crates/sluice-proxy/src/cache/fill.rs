//! Storing a response while it streams to the client: the body's frames are kept (the
//! chunks are shared, not copied) up to the max object size; at the body's end they are
//! joined into the entry and stored, and the request's followers are given it. A body
//! that grows past the limit, breaks off, or carries trailers is not stored, and its
//! followers go to the origin themselves.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};

use super::entry::VaryValues;
use super::{Cache, Entry, Facts, Lead};

/// What the entry is made of, apart from its body.
pub(crate) struct FillTo {
    pub(crate) key: Arc<str>,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) facts: Facts,
    pub(crate) vary: VaryValues,
}

pub(crate) struct CacheFill {
    cache: Arc<Cache>,
    to: Option<FillTo>,
    chunks: Vec<Bytes>,
    size: usize,
    lead: Option<Lead>,
}

impl CacheFill {
    pub(crate) fn new(cache: Arc<Cache>, to: FillTo, lead: Option<Lead>) -> Self {
        CacheFill { cache, to: Some(to), chunks: Vec::new(), size: 0, lead }
    }

    /// Keeps a data frame; false once the body is too large to store (the fill is then
    /// to be dropped).
    pub(crate) fn data(&mut self, data: &Bytes) -> bool {
        self.size += data.len();
        if self.size as u64 > self.cache.config.max_object {
            if let Some(lead) = self.lead.take() {
                lead.not_storable();
            }
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    /// The body ended: stores the entry and gives it to the followers.
    pub(crate) fn finish(mut self) -> Option<Arc<Entry>> {
        let to = self.to.take()?;
        let mut body = BytesMut::with_capacity(self.size);
        for chunk in &self.chunks {
            body.extend_from_slice(chunk);
        }
        let entry = Arc::new(Entry::new(
            to.key,
            to.status,
            to.headers,
            body.freeze(),
            to.facts,
            to.vary,
            &self.cache.config.tag_header,
        ));
        self.cache.store(Arc::clone(&entry));
        if let Some(lead) = self.lead.take() {
            lead.stored(Arc::clone(&entry));
        }
        Some(entry)
    }
}
