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
//! dataloader batch read concurrently) share one. A call that needs many sequential round
//! trips is slow however fast each statement is, which is why both are bounded by tests.
//!
//! A statement counts once however often the driver sends it (its retries and speculative
//! executions are the driver's own figures), and a statement is in flight from when it asks
//! for a slot of the backend's in-flight bound, so statements a call sends together count as
//! one round trip even when some wait for a slot.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

tokio::task_local! {
    static COUNTER: Arc<Counter>;
}

#[derive(Debug, Default)]
struct Counter {
    statements: AtomicU32,
    round_trips: AtomicU32,
    in_flight: AtomicU32,
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
    let output = COUNTER.scope(counter.clone(), call).await;
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
        if counter.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
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
