//! A bounded, coalescing outbox: what one side of a stream has to say, waiting for that
//! stream's writer. Pushing never waits, so the loop that reads a stream can never be held up
//! by a peer that stopped reading: a message is keyed, and an unsent message with the same key
//! is replaced where it stands (latest wins), so the outbox holds at most one message per key.
//! The writer (the stream handed to tonic, polled by the HTTP/2 connection) takes messages in
//! the order their keys were first queued.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::Notify;

/// The outbox holds as many distinct keys as it may: the stream cannot keep up and should be
/// torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub capacity: usize,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages are waiting to be sent: the peer does not keep up",
            self.capacity
        )
    }
}

impl std::error::Error for Full {}

/// A handle to one outbox; clones share it.
#[derive(Debug)]
pub struct Outbox<K, M> {
    inner: Arc<Inner<K, M>>,
}

impl<K, M> Clone for Outbox<K, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<K, M> {
    state: Mutex<State<K, M>>,
    ready: Notify,
}

#[derive(Debug)]
struct State<K, M> {
    order: VecDeque<K>,
    items: HashMap<K, M>,
    capacity: usize,
    closed: bool,
}

impl<K, M> Outbox<K, M>
where
    K: Eq + Hash + Clone + Send + 'static,
    M: Send + 'static,
{
    /// An outbox for at most `capacity` distinct keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    order: VecDeque::new(),
                    items: HashMap::new(),
                    capacity,
                    closed: false,
                }),
                ready: Notify::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K, M>> {
        self.inner.state.lock().expect("outbox lock")
    }

    /// Queues `message` under `key`, replacing an unsent message with the same key. Never
    /// waits. After [`Outbox::close`] the message is dropped.
    pub fn push(&self, key: K, message: M) -> Result<(), Full> {
        let mut state = self.state();
        if state.closed {
            return Ok(());
        }
        if let Some(slot) = state.items.get_mut(&key) {
            *slot = message;
            return Ok(());
        }
        if state.order.len() >= state.capacity {
            return Err(Full {
                capacity: state.capacity,
            });
        }
        state.order.push_back(key.clone());
        state.items.insert(key, message);
        drop(state);
        self.inner.ready.notify_one();
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.state().order.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes no more messages; the stream ends once what is queued was taken.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.ready.notify_one();
    }

    /// The next message, waiting for one; `None` once closed and empty.
    pub async fn next(&self) -> Option<M> {
        loop {
            {
                let mut state = self.state();
                if let Some(key) = state.order.pop_front() {
                    return state.items.remove(&key);
                }
                if state.closed {
                    return None;
                }
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.inner.ready.notified().await;
        }
    }

    /// The writer's side: a stream of the messages, for tonic to send.
    pub fn stream(&self) -> impl Stream<Item = M> + Send + use<K, M> {
        futures_util::stream::unfold(self.clone(), |outbox| async move {
            outbox.next().await.map(|m| (m, outbox))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn the_latest_message_per_key_wins_in_first_queued_order() {
        let outbox = Outbox::new(8);
        outbox.push("state", 1).unwrap();
        outbox.push("cert/a", 10).unwrap();
        outbox.push("state", 2).unwrap();
        outbox.push("cert/b", 20).unwrap();
        outbox.push("cert/a", 11).unwrap();
        assert_eq!(outbox.len(), 3);
        outbox.close();
        let sent: Vec<i32> = outbox.stream().collect().await;
        assert_eq!(sent, [2, 11, 20]);
    }

    #[tokio::test]
    async fn pushing_never_waits_and_a_full_outbox_says_so() {
        let outbox = Outbox::new(2);
        outbox.push(1, ()).unwrap();
        outbox.push(2, ()).unwrap();
        // Coalescing into a queued key still works when full.
        outbox.push(2, ()).unwrap();
        assert_eq!(outbox.push(3, ()), Err(Full { capacity: 2 }));
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_message_pushed_while_it_waits() {
        let outbox: Outbox<u8, u8> = Outbox::new(4);
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.stream().collect::<Vec<_>>().await }
        });
        tokio::task::yield_now().await;
        outbox.push(1, 7).unwrap();
        tokio::task::yield_now().await;
        outbox.push(2, 8).unwrap();
        outbox.close();
        outbox.push(3, 9).unwrap();
        assert_eq!(writer.await.unwrap(), [7, 8]);
    }
}
