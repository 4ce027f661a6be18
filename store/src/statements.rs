//! What one store call cost its database: the statements it sent and how many of them it
//! waited for one after another.
//!
//! A backend that talks to a database over the network marks each statement it sends with
//! [`sent`]; whoever makes the call (the gateway's instrumented layer, a test) wraps it in
//! [`counted`] and reads the figures. Counting is per call, not per process, so concurrent
//! calls never mix their figures: the counter lives in the calling task (a tokio task-local),
//! and a statement sent from another task (a spawned one) is not counted.
//!
//! Round trips are the length of the call's critical path: a statement sent while none of
//! the call's others is in flight starts a new round trip; statements sent together (a
//! dataloader batch read concurrently) share one. "Together" is one step of the call (one
//! poll of its future): a statement sent in the same step as the one before shares its round
//! trip even if that one has already been answered, which happens when the thread sending a
//! batch is descheduled between two of its statements and the first answer arrives meanwhile.
//! The price: a statement that depends on an answer received within the same step (a branch
//! of a large join polled again in that step) shares its round trip too, so a call whose one
//! poll lasts longer than a round trip may count fewer round trips than it waited.
//! A call that needs many sequential round trips is slow however fast each statement is,
//! which is why both are bounded by tests.
//!
//! A statement counts once however often the driver sends it (its retries and speculative
//! executions are the driver's own figures), and a statement is in flight from when it asks
//! for a slot of the backend's in-flight bound, so statements a call sends together count as
//! one round trip even when some wait for a slot.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

tokio::task_local! {
    static COUNTER: Arc<Counter>;
}

#[derive(Debug, Default)]
struct Counter {
    statements: AtomicU32,
    round_trips: AtomicU32,
    in_flight: AtomicU32,
    /// Steps of the call so far: polls of its future (from 1).
    steps: AtomicU64,
    /// The step the last statement was sent in (0: none yet).
    last_sent_step: AtomicU64,
}

/// The figures of one counted call.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Statements sent (a page of a paged read is one, a batch is one).
    pub statements: u32,
    /// Sequential waits: statements sent while none of the call's others was in flight.
    pub round_trips: u32,
}

/// Runs `call`, counting the statements it sends from this task.
pub async fn counted<F: Future>(call: F) -> (F::Output, Counted) {
    let counter = Arc::new(Counter::default());
    let mut call = std::pin::pin!(call);
    let steps = std::future::poll_fn(|cx| {
        counter.steps.fetch_add(1, Ordering::Relaxed);
        call.as_mut().poll(cx)
    });
    let output = COUNTER.scope(counter.clone(), steps).await;
    let figures = Counted {
        statements: counter.statements.load(Ordering::Relaxed),
        round_trips: counter.round_trips.load(Ordering::Relaxed),
    };
    (output, figures)
}

/// One statement in flight, counted in the enclosing [`counted`] call if there is one; keep
/// it until the statement's answer has arrived.
#[derive(Debug)]
#[must_use = "a statement is in flight until this is dropped"]
pub struct InFlight(Option<Arc<Counter>>);

/// Marks a statement as sent by the current call.
pub fn sent() -> InFlight {
    let counter = COUNTER.try_with(Arc::clone).ok();
    if let Some(counter) = &counter {
        counter.statements.fetch_add(1, Ordering::Relaxed);
        let step = counter.steps.load(Ordering::Relaxed);
        let same_step = counter.last_sent_step.swap(step, Ordering::Relaxed) == step;
        if counter.in_flight.fetch_add(1, Ordering::Relaxed) == 0 && !same_step {
            counter.round_trips.fetch_add(1, Ordering::Relaxed);
        }
    }
    InFlight(counter)
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(counter) = &self.0 {
            counter.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn statement() {
        let _sent = sent();
        tokio::task::yield_now().await;
    }

    #[tokio::test]
    async fn concurrent_statements_share_a_round_trip_and_sequential_ones_do_not() {
        let ((), figures) = counted(async {
            futures_join(statement(), statement()).await;
            statement().await;
        })
        .await;
        assert_eq!(figures, Counted { statements: 3, round_trips: 2 });
    }

    #[tokio::test]
    async fn a_statement_answered_while_its_batch_is_sent_does_not_split_the_batch() {
        let ((), figures) = counted(async {
            // Sent and answered within the step that sends the rest of its batch.
            drop(sent());
            futures_join(statement(), statement()).await;
            // Sent after the batch's answers: a step later.
            statement().await;
        })
        .await;
        assert_eq!(figures, Counted { statements: 4, round_trips: 2 });
    }

    #[tokio::test]
    async fn statements_outside_a_counted_call_are_not_counted() {
        statement().await;
        let (_, figures) = counted(async { 1 }).await;
        assert_eq!(figures, Counted::default());
        let (_, outer) = counted(async {
            tokio::spawn(statement()).await.expect("spawned");
        })
        .await;
        assert_eq!(outer.statements, 0, "another task's statement is not this call's");
    }

    async fn futures_join(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
        tokio::join!(a, b);
    }
}
