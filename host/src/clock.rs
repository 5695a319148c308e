//! The server's clock: the one time the service decides users' requests at and stamps
//! changes with.

/// The seconds since the epoch, by the server's clock.
pub fn now_seconds() -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    // A clock set before 1970 gives a negative time, not a made-up one.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => secs(d),
        Err(e) => secs(e.duration()).saturating_neg(),
    }
}
