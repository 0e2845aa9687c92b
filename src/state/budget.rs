//! The in-flight byte budget (`max_buffer_bytes`): bytes of records read and
//! not yet acked. Tailers take from it before handing records over and wait
//! while it is spent; lanes give back what they ack or withdraw.
//!
//! At a stop, a tailer may hold records that must still be sent (they fill
//! holes below the stop's cut) while the budget is spent. They are already in
//! memory, so waiting would only hold the stop up: [`Budget::force`] takes
//! what is free and books the rest as a debt that the next give-backs pay
//! first, so the budget never grows past its size.
//!
//! While a tailer waits for room, the budget is *starved*: no more records
//! can arrive at the lanes until some are acked ([`Budget::starved`], and
//! [`Budget::until_starved`] to be woken when it starts).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, Semaphore};

#[derive(Debug)]
pub struct Budget {
    sem: Semaphore,
    debt: AtomicUsize,
    /// Tailers waiting for room.
    waiting: AtomicUsize,
    starving: Notify,
}

/// Counts one waiting tailer for as long as it waits (its wait may be
/// dropped at a stop).
struct Waiting<'a>(&'a Budget);

impl<'a> Waiting<'a> {
    fn new(budget: &'a Budget) -> Waiting<'a> {
        budget.waiting.fetch_add(1, Ordering::SeqCst);
        budget.starving.notify_waiters();
        Waiting(budget)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget {
            sem: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)),
            debt: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            starving: Notify::new(),
        }
    }

    /// Takes `bytes` without waiting, if they are free.
    pub fn try_take(&self, bytes: usize) -> bool {
        match self.sem.try_acquire_many(permits(bytes)) {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until `bytes` are free and takes them.
    pub async fn take(&self, bytes: usize) {
        if self.try_take(bytes) {
            return;
        }
        let _waiting = Waiting::new(self);
        // The semaphore is never closed, so acquiring only ends by success.
        if let Ok(p) = self.sem.acquire_many(permits(bytes)).await {
            p.forget();
        }
    }

    /// Whether a tailer waits for room now.
    pub fn starved(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Returns once a tailer waits for room (at once if one does).
    pub async fn until_starved(&self) {
        loop {
            let notified = self.starving.notified();
            tokio::pin!(notified);
            // Registered before the check: a wait that starts between the
            // check and the await still wakes this one.
            notified.as_mut().enable();
            if self.starved() {
                return;
            }
            notified.await;
        }
    }

    /// Takes `bytes` at once: what is free now, the rest as a debt.
    pub fn force(&self, bytes: usize) {
        let got = self.sem.forget_permits(bytes);
        self.debt.fetch_add(bytes - got, Ordering::SeqCst);
    }

    /// Gives `bytes` back; a debt is paid first.
    pub fn give_back(&self, bytes: usize) {
        let mut paid = 0;
        let _ = self
            .debt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                paid = d.min(bytes);
                Some(d - paid)
            });
        if bytes > paid {
            self.sem.add_permits(bytes - paid);
        }
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

/// A request larger than the semaphore can count waits for all of it.
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_take_is_paid_back_before_the_budget_grows() {
        let b = Budget::new(100);
        assert!(b.try_take(80));
        b.force(50); // 20 free, 30 owed
        assert_eq!(b.available(), 0);
        b.give_back(80);
        assert_eq!(b.available(), 50, "30 of the 80 paid the debt");
        b.give_back(50);
        assert_eq!(b.available(), 100, "the budget is whole, never more");
        assert!(!b.try_take(101));
    }

    #[test]
    fn it_is_starved_exactly_while_a_taker_waits_and_says_so_to_a_waiting_lane() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let b = std::sync::Arc::new(Budget::new(100));
            assert!(b.try_take(90));
            assert!(!b.starved(), "room was taken without waiting");
            // A lane waits to be told; a taker then waits for room.
            let lane = tokio::spawn({
                let b = b.clone();
                async move { b.until_starved().await }
            });
            tokio::task::yield_now().await;
            assert!(!lane.is_finished());
            let taker = tokio::spawn({
                let b = b.clone();
                async move { b.take(50).await }
            });
            tokio::time::timeout(std::time::Duration::from_secs(5), lane)
                .await
                .expect("the lane is told")
                .expect("lane");
            assert!(b.starved());
            b.give_back(90);
            taker.await.expect("taker");
            assert!(!b.starved(), "no one waits once the taker has its room");
            // A wait dropped (a stop) is no longer counted.
            assert!(!b.try_take(60));
            let dropped =
                tokio::time::timeout(std::time::Duration::from_millis(20), b.take(60)).await;
            assert!(dropped.is_err());
            assert!(!b.starved());
        });
    }
}
