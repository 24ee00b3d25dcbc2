//! Pulling a durable consumer's messages one by one: a pull of up to
//! `max_messages` waiting up to `wait`, then the next, until the node
//! stops or a pull fails (the caller opens its consumer again). The one
//! fetch loop of the intake relays (`intake`) and of the materializer
//! (`materialize`).

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Message;
use futures_util::StreamExt;
use tokio::sync::watch;

/// What the next call of [`Puller::next`] found.
pub enum Pulled {
    /// A message to handle (and acknowledge).
    Message(Box<Message>),
    /// A pull ended (with or without messages): a moment for work between
    /// pulls.
    Ended,
    /// The node is stopping. What was pulled and not acknowledged goes
    /// to another node (or this one again) after the ack wait.
    Stopped,
    /// A pull failed: open the consumer again.
    Failed(String),
}

/// One consumer's messages, pull by pull.
pub struct Puller {
    consumer: PullConsumer,
    max_messages: usize,
    wait: Duration,
    pulling: Option<Batch>,
}

impl Puller {
    pub fn new(consumer: PullConsumer, max_messages: usize, wait: Duration) -> Puller {
        Puller {
            consumer,
            max_messages,
            wait,
            pulling: None,
        }
    }

    /// The next message, or why there is none now.
    pub async fn next(&mut self, stopping: &mut watch::Receiver<bool>) -> Pulled {
        if *stopping.borrow() {
            return Pulled::Stopped;
        }
        let batch = match &mut self.pulling {
            Some(batch) => batch,
            None => {
                let pull = self
                    .consumer
                    .batch()
                    .max_messages(self.max_messages)
                    .expires(self.wait)
                    .messages();
                let batch = tokio::select! {
                    pulled = pull => match pulled {
                        Ok(batch) => batch,
                        Err(error) => return Pulled::Failed(error.to_string()),
                    },
                    _ = stopped(stopping) => return Pulled::Stopped,
                };
                self.pulling.insert(batch)
            }
        };
        // A pull waits up to `wait` for messages: a node stopping does not
        // wait for it.
        let next = tokio::select! {
            next = batch.next() => next,
            _ = stopped(stopping) => return Pulled::Stopped,
        };
        match next {
            Some(Ok(message)) => Pulled::Message(Box::new(message)),
            Some(Err(error)) => {
                tracing::debug!(%error, "a pull ended early");
                self.pulling = None;
                Pulled::Ended
            }
            None => {
                self.pulling = None;
                Pulled::Ended
            }
        }
    }
}

impl Puller {
    /// A message of the current pull that has arrived already, without
    /// waiting for one.
    pub fn ready(&mut self) -> Option<Box<Message>> {
        use futures_util::FutureExt as _;
        let batch = self.pulling.as_mut()?;
        match batch.next().now_or_never()? {
            Some(Ok(message)) => Some(Box::new(message)),
            Some(Err(_)) | None => {
                self.pulling = None;
                None
            }
        }
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
