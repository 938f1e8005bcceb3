//! Raft messages between the controllers, over TCP on `--controller-listen`.
//!
//! Each connection carries one direction: a node dials every other voter and only writes;
//! what it receives arrives on the connections the others dialled. A connection opens with
//! a hello naming the sender and its voters; the receiver answers `ok`, or `reject` with
//! its own voters when they differ (a misconfigured node learns it at once and refuses to
//! start). Frames are `[u32 length][protobuf raft Message]`.
//!
//! Blocking sockets on threads of their own: one writer per peer (its queue bounded; Raft
//! resends whatever is dropped), one reader per accepted connection.

use crate::Input;
use protobuf::Message as _;
use raft::prelude::Message;
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::time::Duration;

const MAX_FRAME: usize = 64 << 20;
const QUEUE: usize = 4096;
const HELLO: &str = "runnel-controller-v1";

pub struct Transport {
    peers: BTreeMap<u64, SyncSender<Message>>,
}

impl Transport {
    /// Binds the listener and starts the writer threads. `voters`: raft id -> address.
    pub fn start(
        me: u64,
        listen: SocketAddr,
        voters: &BTreeMap<u64, String>,
        voters_text: &str,
        inbox: Sender<Input>,
    ) -> Result<Transport, String> {
        let listener = TcpListener::bind(listen).map_err(|e| {
            format!(
                "cannot listen for controllers on {listen}: {e} (is another runnel with node \
                 id {} running?)",
                me as i64 - 1
            )
        })?;
        {
            let inbox = inbox.clone();
            let voters_text = voters_text.to_string();
            std::thread::Builder::new()
                .name("runnel-ctl-accept".into())
                .spawn(move || accept(listener, voters_text, inbox))
                .map_err(|e| e.to_string())?;
        }
        let mut peers = BTreeMap::new();
        for (&id, addr) in voters {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let addr = addr.clone();
            let hello = format!("{HELLO} {} {voters_text}", me as i64 - 1);
            let inbox = inbox.clone();
            std::thread::Builder::new()
                .name(format!("runnel-ctl-peer{}", id as i64 - 1))
                .spawn(move || write_to(id, addr, hello, rx, inbox))
                .map_err(|e| e.to_string())?;
            peers.insert(id, tx);
        }
        Ok(Transport { peers })
    }

    pub fn send(&self, m: Message) {
        if let Some(tx) = self.peers.get(&m.to) {
            match tx.try_send(m) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

fn accept(listener: TcpListener, voters_text: String, inbox: Sender<Input>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let inbox = inbox.clone();
        let voters_text = voters_text.clone();
        let _ = std::thread::Builder::new()
            .name("runnel-ctl-read".into())
            .spawn(move || {
                if let Err(e) = read_from(stream, &voters_text, &inbox) {
                    tracing::debug!("controller connection closed: {e}");
                }
            });
    }
}

fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_frame(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(bytes)
}

fn read_from(stream: TcpStream, voters_text: &str, inbox: &Sender<Input>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let hello = String::from_utf8_lossy(&read_frame(&mut r)?).into_owned();
    let mut words = hello.splitn(3, ' ');
    let (magic, from, theirs) = (words.next(), words.next(), words.next().unwrap_or(""));
    if magic != Some(HELLO) {
        return Err(std::io::Error::other(format!(
            "not a controller: {hello:?}"
        )));
    }
    if theirs != voters_text {
        tracing::error!(
            "node {} has --controller-quorum-voters {theirs}, this quorum's is {voters_text}: \
             refused",
            from.unwrap_or("?")
        );
        write_frame(&mut w, format!("reject {voters_text}").as_bytes())?;
        return Ok(());
    }
    write_frame(&mut w, b"ok")?;
    loop {
        let frame = read_frame(&mut r)?;
        let m = Message::parse_from_bytes(&frame).map_err(std::io::Error::other)?;
        if inbox.send(Input::Raft(m)).is_err() {
            return Ok(());
        }
    }
}

fn write_to(id: u64, addr: String, hello: String, rx: Receiver<Message>, inbox: Sender<Input>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(&addr, &hello) {
            Ok(Ok(stream)) => {
                backoff = Duration::from_millis(50);
                let mut w = BufWriter::new(stream);
                // Queued while disconnected: stale, Raft sends anew.
                while rx.try_recv().is_ok() {}
                loop {
                    let Ok(m) = rx.recv() else { return };
                    let sent = m
                        .write_to_bytes()
                        .map_err(std::io::Error::other)
                        .and_then(|b| write_frame(&mut w, &b))
                        .and_then(|_| {
                            // Batch what is already queued, then flush.
                            while let Ok(m) = rx.try_recv() {
                                let b = m.write_to_bytes().map_err(std::io::Error::other)?;
                                write_frame(&mut w, &b)?;
                            }
                            w.flush()
                        });
                    if let Err(e) = sent {
                        tracing::debug!(peer = id as i64 - 1, "controller connection lost: {e}");
                        break;
                    }
                }
            }
            Ok(Err(theirs)) => {
                let _ = inbox.send(Input::Rejected(format!(
                    "the controller at {addr} refused this node: its \
                     --controller-quorum-voters is {theirs}, this node's is {}",
                    hello.splitn(3, ' ').nth(2).unwrap_or("")
                )));
                return;
            }
            Err(e) => {
                tracing::debug!(peer = id as i64 - 1, "cannot reach controller {addr}: {e}");
                // Drop what queued while the peer is away; keep the queue from blocking.
                std::thread::sleep(backoff);
                while rx.try_recv().is_ok() {}
                backoff = (backoff * 2).min(Duration::from_secs(1));
                if let Err(mpsc::TryRecvError::Disconnected) = rx.try_recv() {
                    return;
                }
            }
        }
    }
}

/// Dials and greets; Ok(Err(voters)) when the peer rejects our voters.
fn connect(addr: &str, hello: &str) -> std::io::Result<Result<TcpStream, String>> {
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write_frame(&mut s, hello.as_bytes())?;
    let answer = String::from_utf8_lossy(&read_frame(&mut s)?).into_owned();
    s.set_read_timeout(None)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    match answer.strip_prefix("reject ") {
        Some(theirs) => Ok(Err(theirs.to_string())),
        None if answer == "ok" => Ok(Ok(s)),
        None => Err(std::io::Error::other(format!("bad answer {answer:?}"))),
    }
}
