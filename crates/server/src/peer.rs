//! A connection from this broker to another broker's client listener, for the requests
//! brokers send each other with Kafka's own messages: followers' fetches, the transaction
//! coordinator's markers, a partition leader's transaction check.

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to another broker's client listener.
pub struct Peer {
    stream: glommio::net::TcpStream,
    correlation: i32,
    /// The largest answer accepted (a bad peer must not make us allocate 2 GiB).
    max_response: usize,
    /// How long one request may take, answer included.
    deadline: Duration,
    /// The client id the requests carry (which of this broker's services asks).
    pub client_id: &'static str,
}

impl Peer {
    pub async fn connect(
        addr: &str,
        max_response: usize,
        deadline: Duration,
    ) -> Result<Peer, String> {
        let connect = async {
            glommio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())
        };
        let timeout = async {
            glommio::timer::sleep(CONNECT_TIMEOUT).await;
            Err("timed out".to_string())
        };
        let stream = futures_lite::future::or(connect, timeout).await?;
        let _ = stream.set_nodelay(true);
        Ok(Peer {
            stream,
            correlation: 0,
            max_response,
            deadline,
            client_id: "runnel-replica-fetcher",
        })
    }

    /// Sends one request and reads its answer, within the peer's deadline (a leader cut
    /// off mid-request must not hold the fetcher forever). An error leaves the connection
    /// unusable: the caller drops it.
    pub async fn call<Req, Resp>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp, String>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let deadline = self.deadline;
        let timeout = async {
            glommio::timer::sleep(deadline).await;
            Err(format!("no answer to {key:?} within {deadline:?}"))
        };
        futures_lite::future::or(self.exchange(key, version, body), timeout).await
    }

    async fn exchange<Req, Resp>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp, String>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .and_then(|_| body.encode(&mut buf, version))
            .map_err(|e| format!("cannot encode {key:?}: {e}"))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&buf)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        let n = i32::from_be_bytes(size);
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.max_response)
            .ok_or_else(|| format!("bad response size {n}"))?;
        let mut frame = BytesMut::zeroed(n);
        self.stream
            .read_exact(&mut frame)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        let mut frame = frame.freeze();
        let header = ResponseHeader::decode(&mut frame, Resp::header_version(version))
            .map_err(|e| format!("cannot decode the {key:?} response header: {e}"))?;
        if header.correlation_id != self.correlation {
            return Err(format!(
                "correlation id {} in answer to {}",
                header.correlation_id, self.correlation
            ));
        }
        Resp::decode(&mut frame, version).map_err(|e| format!("cannot decode {key:?}: {e}"))
    }
}
