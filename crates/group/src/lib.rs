//! Consumer groups: the group coordinator ([`coordinator`]; classic groups, and KIP-848's
//! consumer groups in [`consumer`] with the server-side [`assignor`]s) as a state machine that
//! takes operations and clock ticks and gives answers and the records to write, and the
//! `__consumer_offsets` record layout ([`offsets`]). The broker's shards drive it: they
//! route each group's operations to the shard that owns the group's offsets partition,
//! append the records it asks for, and tell it how the append went.

pub mod assignor;
pub mod consumer;
pub mod coordinator;
pub mod offsets;
pub mod txn;

pub use coordinator::*;
