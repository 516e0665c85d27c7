//! Pacing writes to what the table admits.
//!
//! Every write of an invocation (a statement of a batch or one `UpdateItem`)
//! passes one token bucket. Its rate starts low and grows quickly while
//! writes are admitted (a slow start, as TCP's); the first throttling answer
//! ends that. From then on a throttling episode sets the rate a little below
//! an estimate of what the table admits (the rate times the share of writes
//! it admitted at that rate) and the rate probes upward again, slowly at
//! first and faster the longer no throttle comes. Concurrency is left to the
//! latency and error brake ([`crate::retry::AdaptiveLimiter`]): at local or
//! AWS latencies even one request in flight can exceed a small table's
//! capacity, so only a rate can pace below it.
//!
//! [`RateController`] is the pure logic, driven by the caller's clock;
//! [`WritePacer`] shares it across the invocation's requests.

mod controller;
pub(crate) mod events;
mod pacer;
mod sent_window;

pub(crate) use controller::STALL_AFTER;
pub(crate) use pacer::WritePacer;
