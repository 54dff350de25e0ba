//! A raw `/kith/msg/1` client: a peer that is not a node (a hostile one, or a test playing a
//! third party) opens a message stream to a node and writes hand-made envelopes, the way
//! anyone on the network could, and reads the node's answers.

use anyhow::{anyhow, bail, Result};
use futures::{AsyncReadExt, AsyncWriteExt};
use kith_node::net::{self, NetConfig, NetEvent, MSG_PROTOCOL};
use kith_protocol::{frame, wire::MsgFrame, Envelope, LocalIdentity};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use crate::TIMEOUT;

/// A raw `/kith/msg/1` stream: frames out, frames back.
pub struct Wire {
    stream: libp2p::Stream,
    buf: Vec<u8>,
}

impl Wire {
    /// Frames over a stream opened elsewhere (e.g. one a node opened to the test's peer).
    pub fn from_stream(stream: libp2p::Stream) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes one frame.
    pub async fn send(&mut self, f: &MsgFrame) -> Result<()> {
        let mut bytes = Vec::new();
        frame::encode(f, &mut bytes)?;
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads the next frame, waiting at most [`TIMEOUT`].
    pub async fn recv(&mut self) -> Result<MsgFrame> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some((f, used)) = frame::decode::<MsgFrame>(&self.buf)? {
                    self.buf.drain(..used);
                    return Ok(f);
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("bob closed the stream");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .map_err(|_| anyhow!("no answer from bob within {TIMEOUT:?}"))?
    }

    /// Sends one envelope and returns bob's answer to it.
    pub async fn deliver(&mut self, env: &Envelope) -> Result<MsgFrame> {
        self.send(&MsgFrame::Envelope(env.clone())).await?;
        let answer = self.recv().await?;
        match &answer {
            MsgFrame::Ack(ids) if ids.as_slice() == [env.id()] => {}
            MsgFrame::Reject(id, _) if *id == env.id() => {}
            other => bail!("answer is not about envelope {}: {other:?}", env.id()),
        }
        Ok(answer)
    }
}

/// `sender`'s network: a swarm of the node's own kind, connected to `bob` at `addrs`, with a
/// raw message stream open to him. The swarm task runs while the returned handle lives.
pub async fn connect(
    sender: &LocalIdentity,
    bob: PeerId,
    addrs: Vec<libp2p::Multiaddr>,
    cancel: CancellationToken,
) -> Result<(Wire, net::Network, tokio::task::JoinHandle<()>)> {
    let cfg = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: Vec::new(),
        ..NetConfig::default()
    };
    let keypair = libp2p::identity::Keypair::from(sender.keypair().clone());
    let swarm = net::build_swarm(keypair, &cfg)?;
    let (network, mut events, task) = net::spawn(swarm, &cfg, cancel).await?;
    network.dial(bob, addrs);
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.recv().await {
                Some(NetEvent::Connected(p)) if p == bob => return Ok(()),
                Some(NetEvent::DialFailed(p)) if p == bob => bail!("mallory cannot dial bob"),
                Some(_) => {}
                None => bail!("mallory's network stopped"),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("mallory did not connect to bob within {TIMEOUT:?}"))??;
    // Keep draining mallory's network events so its swarm never waits on us.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let stream = network
        .control()
        .open_stream(bob, MSG_PROTOCOL)
        .await
        .map_err(|e| anyhow!("opening /kith/msg/1 to bob: {e:?}"))?;
    Ok((
        Wire {
            stream,
            buf: Vec::new(),
        },
        network,
        task,
    ))
}
