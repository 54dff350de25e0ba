//! One inbound `/kith/mailbox/1` stream: a reader that forwards requests to the
//! [`StorePeer`](super::StorePeer) actor and the batched writer that sends its answers. The
//! stream side never touches the mailboxes.

use futures::AsyncReadExt;
use kith_net::frames::{write_batches, FrameReader};
use kith_protocol::mailbox::{MailboxRequest, MailboxResponse, MAX_BATCH};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::input::Input;

/// Reads requests from one inbound stream and writes the actor's answers back (through the
/// batched writer); tells the actor when the stream is gone.
pub(super) async fn serve_stream(
    peer: PeerId,
    conn: u64,
    stream: libp2p::Stream,
    inputs: mpsc::Sender<Input>,
    queue: usize,
) -> Result<(), std::convert::Infallible> {
    let (out_tx, mut out_rx) = mpsc::channel::<MailboxResponse>(queue);
    let (read_half, mut write_half) = stream.split();
    let reader_inputs = inputs.clone();
    let reader = async move {
        let mut reader = FrameReader::new(read_half);
        loop {
            match reader.next_batch::<MailboxRequest>(MAX_BATCH).await {
                Ok(Some(requests)) => {
                    let input = Input::Requests {
                        peer,
                        conn,
                        requests,
                        out: out_tx.clone(),
                    };
                    if reader_inputs.send(input).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "mailbox stream: bad input; closing");
                    break;
                }
            }
        }
    };
    // Closing the stream on a write error makes the node subscribe (or re-deposit) again.
    let writer = write_batches(&peer, &mut out_rx, &mut write_half);
    tokio::select! {
        _ = reader => {},
        _ = writer => {},
    }
    let _ = inputs.send(Input::StreamClosed { peer, conn }).await;
    Ok(())
}
