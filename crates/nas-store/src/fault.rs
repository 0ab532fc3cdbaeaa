//! A backend decorator that pauses or fails a chosen operation at a chosen point, for
//! deterministic concurrency and fault tests: hold a read until a write has landed, make a
//! write land and then report a timeout, fail the next list, and so on.
//!
//! Rules are matched in the order they were added; each fires a set number of times. A paused
//! operation waits until the test releases it, and the test can wait until it is reached, so a
//! race is staged step by step instead of hoped for with sleeps.
//!
//! ```
//! # async fn demo(inner: std::sync::Arc<dyn nas_store::Backend>) {
//! use nas_store::fault::{FaultBackend, Op, Point};
//! let faults = FaultBackend::new(inner);
//! let held = faults.pause(Op::Get, Point::After, Some("A..."));
//! // ... start a read of A..., then:
//! held.reached().await; // the read has its value and is held before returning it
//! // ... write a newer value, then:
//! held.release();
//! # }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::{broadcast, watch};

use crate::{Backend, Namespace, Precondition, StoreError, Version};

/// The operation a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Backend::get`].
    Get,
    /// [`Backend::put`].
    Put,
    /// [`Backend::delete`].
    Delete,
    /// [`Backend::list`].
    List,
    /// [`Backend::health`].
    Health,
}

/// When, relative to the real operation, a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before the operation reaches the backend (a failure here means nothing happened).
    Before,
    /// After the backend did it (a failure here is an unknown outcome: the write landed but the
    /// caller hears an error, as after a timeout).
    After,
}

/// A held operation: the test waits for it to be reached, then releases it.
#[derive(Clone, Debug)]
pub struct Pause {
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Pause {
    fn new() -> Pause {
        Pause {
            reached: watch::channel(false).0,
            released: watch::channel(false).0,
        }
    }

    /// Waits until an operation is held here.
    pub async fn reached(&self) {
        let mut rx = self.reached.subscribe();
        // The sender lives in `self`, so `wait_for` can only end with the value set.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Whether an operation is held here now (or was, and has been released).
    pub fn was_reached(&self) -> bool {
        *self.reached.borrow()
    }

    /// Lets the held operation (and any later one this rule holds) go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    async fn hold(&self) {
        let mut rx = self.released.subscribe();
        self.reached.send_replace(true);
        let _ = rx.wait_for(|v| *v).await;
    }
}

#[derive(Debug, Clone)]
enum Action {
    Pause(Pause),
    Fail(StoreError),
}

#[derive(Debug)]
struct Rule {
    op: Op,
    point: Point,
    key: Option<String>,
    action: Action,
    remaining: usize,
}

/// The decorator (see the module docs).
#[derive(Debug)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    rules: Mutex<Vec<Rule>>,
    /// `get`s that have started (reached the decorator), to show how far a streaming reader
    /// has read ahead of its consumer.
    gets_started: AtomicUsize,
}

impl FaultBackend {
    /// Wraps `inner`; with no rules it behaves exactly like it.
    pub fn new(inner: Arc<dyn Backend>) -> Arc<FaultBackend> {
        Arc::new(FaultBackend {
            inner,
            rules: Mutex::new(Vec::new()),
            gets_started: AtomicUsize::new(0),
        })
    }

    /// How many `get`s have started so far (before any rule applies to them).
    pub fn gets_started(&self) -> usize {
        self.gets_started.load(Ordering::SeqCst)
    }

    fn add(&self, op: Op, point: Point, key: Option<&str>, action: Action, times: usize) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Rule {
                op,
                point,
                key: key.map(str::to_owned),
                action,
                remaining: times,
            });
    }

    /// Holds the next `op` (of `key`, or of any key) at `point` until released.
    pub fn pause(&self, op: Op, point: Point, key: Option<&str>) -> Pause {
        let pause = Pause::new();
        self.add(op, point, key, Action::Pause(pause.clone()), 1);
        pause
    }

    /// Fails the next `times` `op`s (of `key`, or of any key) at `point` with `error`.
    pub fn fail(&self, op: Op, point: Point, key: Option<&str>, error: StoreError, times: usize) {
        self.add(op, point, key, Action::Fail(error), times);
    }

    /// Removes every rule not yet used up (held operations stay held until released).
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn take(&self, op: Op, point: Point, key: Option<&str>) -> Option<Action> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let index = rules.iter().position(|r| {
            r.op == op
                && r.point == point
                && r.remaining > 0
                && (r.key.is_none() || r.key.as_deref() == key)
        })?;
        let rule = &mut rules[index];
        rule.remaining -= 1;
        let action = rule.action.clone();
        if rule.remaining == 0 {
            rules.remove(index);
        }
        Some(action)
    }

    async fn at(&self, op: Op, point: Point, key: Option<&str>) -> Result<(), StoreError> {
        match self.take(op, point, key) {
            None => Ok(()),
            Some(Action::Pause(pause)) => {
                pause.hold().await;
                Ok(())
            }
            Some(Action::Fail(error)) => Err(error),
        }
    }
}

#[async_trait::async_trait]
impl Backend for FaultBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        self.gets_started.fetch_add(1, Ordering::SeqCst);
        self.at(Op::Get, Point::Before, Some(key)).await?;
        let got = self.inner.get(ns, key).await?;
        self.at(Op::Get, Point::After, Some(key)).await?;
        Ok(got)
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        self.at(Op::Put, Point::Before, Some(key)).await?;
        let version = self.inner.put(ns, key, value, pre).await?;
        self.at(Op::Put, Point::After, Some(key)).await?;
        Ok(version)
    }

    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        self.at(Op::Delete, Point::Before, Some(key)).await?;
        let deleted = self.inner.delete(ns, key, expected).await?;
        self.at(Op::Delete, Point::After, Some(key)).await?;
        Ok(deleted)
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        self.at(Op::List, Point::Before, None).await?;
        let keys = self.inner.list(ns).await?;
        self.at(Op::List, Point::After, None).await?;
        Ok(keys)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.at(Op::Health, Point::Before, None).await?;
        self.inner.health().await
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    fn lists_sorted(&self) -> bool {
        self.inner.lists_sorted()
    }

    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        self.inner.external_changes()
    }

    fn sees_every_change(&self) -> bool {
        self.inner.sees_every_change()
    }

    fn peers_announce(&self) -> bool {
        self.inner.peers_announce()
    }

    async fn shared_pack_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.shared_pack_hash().await
    }
}
