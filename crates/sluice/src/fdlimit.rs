//! The socket budget: raise RLIMIT_NOFILE's soft limit to the hard limit at start.

/// Raises the soft FD limit as far as allowed and logs the budget.
pub fn raise_and_report() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!("file descriptors: {limit} available");
            limit
        }
        Err(e) => {
            let current = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
            tracing::warn!(error = %e, "could not raise the file descriptor limit; {current} available");
            current
        }
    }
}
