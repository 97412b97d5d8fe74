//! A batch's turn in the commit pipeline.
//!
//! Several batches commit at once (see `batch`), yet what is durable must
//! always be a prefix of what arrived: after a crash, vaka rebuilds its
//! rules from the store and the broker redelivers what was not
//! acknowledged, and a hole in the store (a later batch committed, an
//! earlier one not) would reach the rules as readings arriving out of order.
//! So each batch takes turns with the one before it, in two places:
//!
//! 1. it **writes** (sends its statements) only when the one before has
//!    written its own. The earlier batch then never waits for a row lock of
//!    the later one, so the two can never wait for each other;
//! 2. it **commits** only when the one before has committed.
//!
//! What overlaps is everything else: reading the registry, and one batch's
//! statements with the other's commit (the wait for its write-ahead log to
//! reach the disk), which is most of a commit's time.

use std::sync::Arc;

use tokio::sync::watch;

/// Where a batch is in its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Not written yet, or writing, or about to try again after a failure.
    Waiting,
    /// Its statements are sent; it waits for its turn to commit.
    Written,
    /// Durable.
    Committed,
    /// Given up (shutdown): it will not commit.
    Abandoned,
}

/// A batch's stage, and which attempt at committing it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    pub stage: Stage,
    pub attempt: u32,
}

impl State {
    pub(crate) const START: State = State {
        stage: Stage::Waiting,
        attempt: 0,
    };
    /// A batch with nothing to commit: the next one need not wait for it.
    pub(crate) const NOTHING: State = State {
        stage: Stage::Committed,
        attempt: 0,
    };
}

/// Why a batch may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// The batch before failed to commit and will try again: roll back and
    /// start over (its retry comes first).
    #[error("the batch before this one failed to commit; this one starts over after it")]
    PreviousFailed,
    /// The batch before was given up (shutdown): this one must not commit.
    #[error("the batch before this one was given up; this one is too")]
    Abandoned,
}

/// A batch's turn: a [`Sink`](crate::Sink) calls [`Turn::may_write`]
/// before its first write, [`Turn::written`] after its last statement, and
/// [`Turn::may_commit`] just before committing, and rolls back on an error
/// from either.
#[derive(Debug)]
pub struct Turn {
    previous: Option<watch::Receiver<State>>,
    /// The attempt of the batch before that this one's writes followed.
    followed: Option<u32>,
    this: Arc<watch::Sender<State>>,
    /// Why the last wait said no, if it did.
    refused: Option<TurnError>,
}

impl Turn {
    pub(crate) fn new(
        previous: Option<watch::Receiver<State>>,
        this: Arc<watch::Sender<State>>,
    ) -> Turn {
        Turn {
            previous,
            followed: None,
            this,
            refused: None,
        }
    }

    /// A turn with nobody before it: for a sink used outside a pipeline
    /// (tests, tools).
    pub fn alone() -> Turn {
        Turn::new(None, Arc::new(watch::channel(State::START).0))
    }

    /// Waits until the batch before has sent its statements.
    pub async fn may_write(&mut self) -> Result<(), TurnError> {
        let Some(previous) = self.previous.as_mut() else {
            return Ok(());
        };
        let state = wait(previous, |s| {
            matches!(s.stage, Stage::Written | Stage::Committed)
        })
        .await
        .inspect_err(|e| self.refused = Some(*e))?;
        self.followed = Some(state.attempt);
        Ok(())
    }

    /// Marks this batch's statements as sent.
    pub fn written(&self) {
        self.this.send_modify(|s| s.stage = Stage::Written);
    }

    /// Waits until the batch before has committed. An error when it failed
    /// since this batch wrote (its retry would write after this one's rows,
    /// and could wait for their locks while this one waits for it).
    pub async fn may_commit(&mut self) -> Result<(), TurnError> {
        let Some(previous) = self.previous.as_mut() else {
            return Ok(());
        };
        let followed = self.followed;
        let state = wait(previous, |s| {
            s.stage == Stage::Committed || Some(s.attempt) != followed
        })
        .await
        .inspect_err(|e| self.refused = Some(*e))?;
        if Some(state.attempt) == followed {
            Ok(())
        } else {
            self.refused = Some(TurnError::PreviousFailed);
            Err(TurnError::PreviousFailed)
        }
    }

    /// Why the batch could not go on, when a wait said no (taken).
    pub(crate) fn take_refusal(&mut self) -> Option<TurnError> {
        self.refused.take()
    }

    pub(crate) fn set(&self, stage: Stage) {
        self.this.send_modify(|s| s.stage = stage);
    }

    /// Back to waiting, for the next attempt.
    pub(crate) fn retry(&self) {
        self.this.send_modify(|s| {
            s.stage = Stage::Waiting;
            s.attempt += 1;
        });
    }
}

/// Waits for the batch before to be `ready`, or given up.
async fn wait(
    previous: &mut watch::Receiver<State>,
    ready: impl Fn(&State) -> bool,
) -> Result<State, TurnError> {
    let waited = previous
        .wait_for(|s| ready(s) || s.stage == Stage::Abandoned)
        .await
        .map(|s| *s);
    // Its sender lives until the batch before is acknowledged, so it is gone
    // only after it committed.
    let state = waited.unwrap_or_else(|_| *previous.borrow());
    if state.stage == Stage::Abandoned {
        Err(TurnError::Abandoned)
    } else {
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two batches in a row: the first's stage, and the second's turn.
    fn pair() -> (Turn, Turn) {
        let first = Arc::new(watch::channel(State::START).0);
        let second = Arc::new(watch::channel(State::START).0);
        (
            Turn::new(None, first.clone()),
            Turn::new(Some(first.subscribe()), second),
        )
    }

    /// Whether `f` is still waiting after a moment.
    async fn waits<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_batch_alone_never_waits() {
        let mut t = Turn::alone();
        assert_eq!(t.may_write().await, Ok(()));
        t.written();
        assert_eq!(t.may_commit().await, Ok(()));
    }

    #[tokio::test]
    async fn writes_after_the_batch_before_wrote_and_commits_after_it_committed() {
        let (first, mut second) = pair();
        assert!(waits(second.may_write()).await);
        first.written();
        assert_eq!(second.may_write().await, Ok(()));
        second.written();
        assert!(waits(second.may_commit()).await);
        first.set(Stage::Committed);
        assert_eq!(second.may_commit().await, Ok(()));
    }

    #[tokio::test]
    async fn starts_over_when_the_batch_before_fails_after_it_wrote() {
        let (first, mut second) = pair();
        first.written();
        second.may_write().await.unwrap();
        second.written();
        // The first fails and tries again (a new attempt), even if that
        // attempt commits before the second looks: the second's rows came
        // before the retry's, so it must start over.
        first.retry();
        first.written();
        first.set(Stage::Committed);
        assert_eq!(second.may_commit().await, Err(TurnError::PreviousFailed));
        assert_eq!(second.take_refusal(), Some(TurnError::PreviousFailed));
        // Next time round it follows the retry, which has committed.
        assert_eq!(second.may_write().await, Ok(()));
        assert_eq!(second.may_commit().await, Ok(()));
    }

    #[tokio::test]
    async fn gives_up_with_the_batch_before() {
        let (first, mut second) = pair();
        let waiting = tokio::spawn(async move { second.may_write().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.set(Stage::Abandoned);
        assert_eq!(waiting.await.unwrap(), Err(TurnError::Abandoned));
    }

    #[tokio::test]
    async fn a_batch_before_that_is_gone_had_committed() {
        let (first, mut second) = pair();
        first.written();
        first.set(Stage::Committed);
        drop(first);
        assert_eq!(second.may_write().await, Ok(()));
        assert_eq!(second.may_commit().await, Ok(()));
    }
}
