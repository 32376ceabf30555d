//! Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`): every turn, each
//! endpoint's current weight grows by its weight and the largest is chosen and lowered
//! by the total. Weights 5:1:1 give a a b a c a a, not a a a a a b c.

#[derive(Debug)]
pub(super) struct SmoothWeighted {
    current: Vec<i64>,
}

impl SmoothWeighted {
    pub(super) fn new(endpoints: usize) -> Self {
        SmoothWeighted { current: vec![0; endpoints] }
    }

    /// The next endpoint among the `eligible` ones (the others sit the turn out, as
    /// nginx skips peers that are down).
    pub(super) fn next(&mut self, n: usize, weight: impl Fn(usize) -> i64, eligible: impl Fn(usize) -> bool) -> usize {
        if self.current.len() != n {
            self.current = vec![0; n];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..n {
            if !eligible(i) {
                continue;
            }
            let w = weight(i);
            total += w;
            self.current[i] += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best.unwrap_or(0);
        self.current[best] -= total;
        best
    }
}
