//! Getting a message delivered: sent now, spooled and retried, bounced or kept; the queue, the delivery log and dead.letter.

pub mod attempt;
pub mod bounce;
pub mod dead_letter;
pub mod flush;
pub mod hold;
pub mod log;
pub mod queue;
pub mod request;
pub mod send;
pub mod session;
pub mod transport;
