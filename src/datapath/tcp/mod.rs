//! memcached over TCP for `kvlb serve`: client connections terminated in kvlb, every request
//! decided by the one [`crate::nf::Core`] (see `front` for how), backends reached over small
//! pools of persistent connections.

mod buf;
pub mod framing;
pub mod front;
pub use front::{TcpCounters, TcpFront, TcpSettings};
