//! Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`): every turn, each
//! endpoint's current weight grows by its weight and the largest is chosen and lowered
//! by the total. Weights 5:1:1 give a a b a c a a, not a a a a a b c.

#[derive(Debug)]
pub(super) struct SmoothWeighted {
    current: Vec<i64>,
}

impl SmoothWeighted {
    pub(super) fn new(weights: &[u32]) -> Self {
        SmoothWeighted { current: vec![0; weights.len()] }
    }

    pub(super) fn next(&mut self, weights: &[u32]) -> usize {
        if self.current.len() != weights.len() {
            self.current = vec![0; weights.len()];
        }
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            self.current[i] += i64::from(*w);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
}
