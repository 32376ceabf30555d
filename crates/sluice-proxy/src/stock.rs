//! A worker thread's stock of reusable objects (read buffers, record boxes), sized by
//! demand: it grows to what the thread has in use at its busiest (up to a cap) and gives
//! back, once a second, what sat unused for the whole second.
//!
//! A fixed small stock was measured to fail exactly where it matters: at 1,024
//! connections on one per-core worker, every connection is mid-request at once (the
//! event loop is fair), so a 64-buffer stock missed on ~8 of 10 requests and the misses
//! (a 4 KiB malloc and free each, plus glibc's consolidation) cost 1,200 instructions a
//! request (callgrind). Trimming by the low-water mark (the fewest items on the shelf
//! during the last period) frees only what demand provably did not need.

/// Reusable items kept by one thread.
pub(crate) struct Stock<T> {
    items: Vec<T>,
    /// The fewest items held since the last trim: that many were never needed.
    low_water: usize,
    /// Items kept however quiet the thread is.
    min: usize,
    /// Items kept at most.
    max: usize,
}

impl<T> Stock<T> {
    pub(crate) const fn new(min: usize, max: usize) -> Self {
        Stock { items: Vec::new(), low_water: 0, min, max }
    }

    pub(crate) fn take(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low_water = self.low_water.min(self.items.len());
        item
    }

    /// Keeps `item` unless the stock is full (then it is dropped).
    pub(crate) fn give(&mut self, item: T) {
        if self.items.len() < self.max {
            self.items.push(item);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Drops the items that were not needed since the last trim, down to `min`.
    pub(crate) fn trim(&mut self) {
        let unneeded = self.low_water.min(self.items.len().saturating_sub(self.min));
        self.items.truncate(self.items.len() - unneeded);
        self.low_water = self.items.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stock_keeps_what_a_busy_period_used_and_frees_what_a_quiet_one_did_not() {
        let mut stock = Stock::new(2, 100);
        for i in 0..50 {
            stock.give(i); // back from requests of this period
        }
        stock.trim();
        assert_eq!(stock.len(), 50, "the shelf was empty during the period: all were in use, all kept");
        stock.trim(); // a quiet period: nothing taken
        assert_eq!(stock.len(), 2, "unneeded for a whole period: freed down to min");
        let busy: Vec<_> = std::iter::from_fn(|| stock.take()).collect();
        busy.into_iter().chain(0..28).for_each(|i| stock.give(i)); // 30 in use at the peak
        stock.trim();
        assert_eq!(stock.len(), 30, "the busy period's demand stays");
        for i in 0..200 {
            stock.give(i);
        }
        assert_eq!(stock.len(), 100, "never more than max");
    }
}
