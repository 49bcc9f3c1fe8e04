//! The message itself, pure and without I/O: addresses (aliases, qualification), the envelope and prepared message, and intake (the bytes from the caller made into what goes on the wire, with its envelope).

pub mod address;
pub mod envelope;
pub mod intake;
pub mod reencode;
