//! A request as the broker sees it: the header checked and decoded, the body still bytes of
//! the frame; what a request comes to ([`Outcome`]); and the answers that need no broker
//! state (ApiVersions).

use crate::wire::{self, code, Response};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use std::rc::Rc;

/// What a request comes to.
pub enum Outcome {
    Reply(Response),
    /// acks=0 produce: the client expects no answer.
    NoReply,
    /// The request cannot be answered: log the reason and close the connection, as Kafka does
    /// for unknown APIs, unsupported versions and undecodable bodies.
    Close(String),
}

pub fn encode_or_close<R>(correlation_id: i32, version: i16, body: &R) -> Outcome
where
    R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
{
    match wire::encode(correlation_id, version, body) {
        Ok(r) => Outcome::Reply(r),
        Err(e) => Outcome::Close(e),
    }
}

pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// A request with its header decoded; `body` is what follows the header.
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub frame: Bytes,
    pub body_offset: usize,
    /// The request header's client id ("" if none).
    pub client_id: String,
    /// The client's address, as Kafka shows it ("/127.0.0.1").
    pub client_host: Rc<str>,
}

impl Request {
    pub fn decode_body<T: Decodable>(&self) -> Result<T, String> {
        let mut body = self.frame.slice(self.body_offset..);
        let req = T::decode(&mut body, self.version).map_err(|e| {
            format!(
                "malformed {:?} v{} request: {e}",
                self.api_key, self.version
            )
        })?;
        if !body.is_empty() {
            // Kafka ignores trailing bytes, and clients rely on it (librdkafka 2.x sends
            // Metadata v12 with a field that ended at v10).
            tracing::debug!(
                "{:?} v{} request: {} bytes after the body ignored",
                self.api_key,
                self.version,
                body.len()
            );
        }
        Ok(req)
    }
}

/// The client id of a request whose API or version is unknown here, for the log: every
/// request header version (1 and 2) has it, as a classic nullable string, after the API
/// key, version and correlation id.
fn client_id_of(frame: &[u8]) -> String {
    let Some(len) = frame.get(8..10).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return String::new();
    };
    let Ok(len) = usize::try_from(len) else {
        return String::new();
    };
    frame
        .get(10..10 + len)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Checks a frame's header (known API key, supported version) and decodes it. A refusal is
/// the [`Outcome`] to give: a logged close, or ApiVersions' UNSUPPORTED_VERSION answer.
pub fn parse_header(frame: Bytes, client_host: &Rc<str>) -> Result<Request, Outcome> {
    let Some(peek) = wire::peek(&frame) else {
        return Err(Outcome::Close(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        )));
    };
    let Ok(api_key) = ApiKey::try_from(peek.api_key) else {
        return Err(Outcome::Close(format!(
            "unknown API key {} (client id {:?})",
            peek.api_key,
            client_id_of(&frame)
        )));
    };
    let version = peek.api_version;
    let supported = wire::supported_range(api_key)
        .filter(|(lo, hi)| (*lo..=*hi).contains(&version))
        .is_some();
    if api_key == ApiKey::ApiVersions && !supported {
        // KIP-511: answer an ApiVersions of unknown version with UNSUPPORTED_VERSION and our
        // list, in a v0 response the client can always parse.
        return Err(api_versions_response(
            peek.correlation_id,
            0,
            code::UNSUPPORTED_VERSION,
        ));
    }
    if !supported || (api_key == ApiKey::Produce && version < wire::MIN_PRODUCE_VERSION) {
        return Err(Outcome::Close(format!(
            "unsupported version {version} of {api_key:?} (see ApiVersions; client id {:?})",
            client_id_of(&frame)
        )));
    }
    let header_version = api_key.request_header_version(version);
    let mut buf = frame.clone();
    // The header is decoded and dropped here: its client id would otherwise hold a
    // reference to the frame, which produce needs to own alone.
    let client_id;
    let body_offset = match RequestHeader::decode(&mut buf, header_version) {
        Ok(h) => {
            client_id = h.client_id.map(|c| c.to_string()).unwrap_or_default();
            frame.len() - buf.len()
        }
        Err(e) => {
            return Err(Outcome::Close(format!(
                "malformed {api_key:?} v{version} request header: {e}"
            )))
        }
    };
    drop(buf);
    Ok(Request {
        client_id,
        client_host: client_host.clone(),
        api_key,
        version,
        correlation_id: peek.correlation_id,
        frame,
        body_offset,
    })
}

/// The ApiVersions answer: every API and version range in [`wire::SUPPORTED`] but those in
/// [`wire::NOT_ADVERTISED`].
pub fn api_versions_response(correlation_id: i32, version: i16, error_code: i16) -> Outcome {
    let api_keys = wire::SUPPORTED
        .iter()
        .filter(|(k, _, _)| !wire::NOT_ADVERTISED.contains(k))
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    // Only defaults in the tagged fields (features), so none is written: librdkafka before
    // 2.2 cannot skip them.
    let body = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys);
    encode_or_close(correlation_id, version, &body)
}
