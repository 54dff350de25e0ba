//! The event gate: events are published only once the writes they announce are durable.

use super::*;

/// Most events waiting for the commit that makes them true.
pub(super) const EVENT_GATE_QUEUE: usize = 4096;

/// The task that publishes events only once the writes they announce are durable.
///
/// sled shows a write before it is flushed, so without this a listener could see a message
/// "sent" (or received) that a `kill -9` a moment later takes back: the status would seem
/// to move backwards. Every event is queued after its write was made; the task takes every
/// queued event, waits for one group commit (which covers all their writes) and publishes
/// them in order. It ends when the messenger drops its sender; the messenger runs it among
/// its own tasks.
pub(super) fn event_gate(
    store: Store,
    events: broadcast::Sender<Event>,
) -> (
    mpsc::Sender<Event>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = mpsc::channel::<Event>(EVENT_GATE_QUEUE);
    let gate = async move {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while let Ok(next) = rx.try_recv() {
                batch.push(next);
            }
            match store.commit().await {
                Ok(()) => {
                    for event in batch.drain(..) {
                        let _ = events.send(event);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; events withheld");
                    batch.clear();
                }
            }
        }
    };
    (tx, gate)
}
