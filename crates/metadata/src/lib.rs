//! Cluster metadata: what topics exist, with their ids, partition counts and config
//! overrides ([`registry`]), and where things live ([`placement`]). One writer changes it;
//! every shard reads an immutable [`Snapshot`]. The cluster metadata state machine (the
//! records a Raft log will carry) belongs here.

pub mod placement;
mod registry;

pub use registry::*;
