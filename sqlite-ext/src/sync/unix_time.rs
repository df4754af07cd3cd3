//! The wall clock in Unix seconds, for what the sync records and checks (when a peer was
//! pinned or synced, an enrollment code's expiry).

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
