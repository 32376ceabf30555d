//! Hedging's race: two tries of one request to two endpoints, the first answer wins
//! and the other is dropped (an HTTP/1 connection closed, an HTTP/2 stream reset).
//! Shared by both protocols' send paths.

use std::future::Future;

/// Which try answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Winner {
    First,
    Second,
}

/// Polls both tries until one answers; when that answer is a failure (`failed`), the
/// other may still answer, so it is awaited. The caller drops both futures after.
pub(super) async fn race<T, A, B>(one: &mut A, two: &mut B, failed: impl Fn(&T) -> bool) -> (T, Winner)
where
    A: Future<Output = T> + Unpin,
    B: Future<Output = T> + Unpin,
{
    let won = tokio::select! {
        result = &mut *one => (result, Winner::First),
        result = &mut *two => (result, Winner::Second),
    };
    match won {
        (result, Winner::First) if failed(&result) => (two.await, Winner::Second),
        (result, Winner::Second) if failed(&result) => (one.await, Winner::First),
        won => won,
    }
}
