//! Emulated network conditions and injected faults.
//!
//! Everything here is decided per request (latency, 5xx, 429, mid-body reset) or per
//! response body (bandwidth), from one seeded RNG, and never from who the client is: a
//! benchmark of another tool against the emulator sees exactly what bsmount sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The knobs, all off by default.
#[derive(Debug, Clone, Default)]
pub struct NetProfile {
    /// Delay before the first byte of every response.
    pub latency: Duration,
    /// Bytes per second per connection on content bodies; 0 = unlimited.
    pub bandwidth: u64,
    /// Probability of answering 500 or 503 (503 carries `Retry-After`).
    pub fail_rate: f64,
    /// Probability of dropping the connection in the middle of a content body.
    pub reset_rate: f64,
    /// Probability of answering 429 with `Retry-After`.
    pub throttle_rate: f64,
    /// Seed for repeatable faults.
    pub seed: u64,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 500 Internal Server Error.
    Error500,
    /// 503 with `Retry-After: 1`.
    Unavailable503,
    /// 429 with `Retry-After: 1`.
    Throttle429,
    /// Send this fraction (per mille) of the body, then drop the connection.
    ResetAfter(u32),
}

#[derive(Debug)]
pub struct Faults {
    pub profile: NetProfile,
    rng: Mutex<StdRng>,
    pub injected: AtomicU64,
}

impl Faults {
    pub fn new(profile: NetProfile) -> Self {
        let rng = Mutex::new(StdRng::seed_from_u64(profile.seed));
        Faults {
            profile,
            rng,
            injected: AtomicU64::new(0),
        }
    }

    /// Draws the fault for one request; `has_body` says whether a reset is possible.
    pub fn draw(&self, has_body: bool) -> Fault {
        let p = &self.profile;
        if p.fail_rate <= 0.0 && p.throttle_rate <= 0.0 && p.reset_rate <= 0.0 {
            return Fault::None;
        }
        let mut rng = self.rng.lock();
        let f = if rng.gen_bool(p.throttle_rate.clamp(0.0, 1.0)) {
            Fault::Throttle429
        } else if rng.gen_bool(p.fail_rate.clamp(0.0, 1.0)) {
            if rng.gen_bool(0.5) {
                Fault::Error500
            } else {
                Fault::Unavailable503
            }
        } else if has_body && rng.gen_bool(p.reset_rate.clamp(0.0, 1.0)) {
            Fault::ResetAfter(rng.gen_range(0..1000))
        } else {
            Fault::None
        };
        if f != Fault::None {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        f
    }
}
