//! The message itself: addresses (aliases, qualification), the envelope and prepared message, input (the message as read from the caller, its body spilled to a file past a threshold: the one part here that does I/O), and intake (the bytes from the caller made into what goes on the wire, with its envelope).

pub mod address;
pub mod envelope;
pub mod input;
pub mod intake;
pub mod reencode;
