//! Bytes of the Kafka protocol, and nothing else: framing and request headers, the table of
//! supported versions, error codes, response encoding, and the Fetch response written by hand
//! around segment file ranges. No shards, no runtime, no file I/O (a [`Part::File`] only
//! holds the descriptor of a range someone else sends).

pub mod fetch_response;
pub mod request;
pub mod wire;

pub use request::{
    api_versions_response, encode_or_close, parse_header, sb, topic_name, Outcome, Request,
};
pub use wire::{code, encode, peek, supported_range, Part, Peek, Response, SUPPORTED};

/// A topic id (a UUID's 16 bytes).
pub type TopicId = [u8; 16];
