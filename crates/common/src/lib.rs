//! What the gatehouse daemons and the CLI share and that belongs to neither: the stream's
//! coalescing outbox and application-level liveness, backoff with jitter, randomness.

pub mod backoff;
pub mod liveness;
pub mod outbox;

pub use backoff::{Backoff, jitter, random_below};
pub use liveness::{Liveness, Stalled};
pub use outbox::{Full, Outbox};
