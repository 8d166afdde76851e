//! Gates: the driver polls a source only after the source woke it.

use std::sync::Arc;

/// One gate per source the driver's `select!` waits on. `select!` polls
/// every branch on every turn, though usually one source woke the task:
/// polling an idle acceptor costs several hundred instructions, an idle
/// queue one or two hundred, several times per synchronization. A gate
/// polls its source only after the source woke it (or gave an item, as
/// more may follow without a wake).
#[derive(Default)]
pub(super) struct Gates {
    pub(super) inbound: Gate,
    pub(super) requests: Gate,
}

/// See [`Gates`]: a waker of its own for one source, which records the wake
/// and passes it on to the task.
pub(super) struct Gate {
    flag: Arc<GateFlag>,
    waker: std::task::Waker,
}

struct GateFlag {
    woken: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl futures::task::ArcWake for GateFlag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.woken.store(true, std::sync::atomic::Ordering::Release);
        flag.task.wake();
    }
}

impl Default for Gate {
    fn default() -> Self {
        let flag = Arc::new(GateFlag {
            // Polled the first time round.
            woken: std::sync::atomic::AtomicBool::new(true),
            task: futures::task::AtomicWaker::new(),
        });
        let waker = futures::task::waker(flag.clone());
        Gate { flag, waker }
    }
}

impl Gate {
    /// A future that polls the source with `poll` when it woke the gate,
    /// and waits otherwise.
    pub(super) fn poll<'a, T: 'a>(
        &'a self,
        mut poll: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<T> + 'a,
    ) -> impl std::future::Future<Output = T> + 'a {
        use std::sync::atomic::Ordering;
        std::future::poll_fn(move |cx| {
            self.flag.task.register(cx.waker());
            if !self.flag.woken.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Pending;
            }
            let r = poll(&mut std::task::Context::from_waker(&self.waker));
            if r.is_ready() {
                self.flag.woken.store(true, Ordering::Release);
            }
            r
        })
    }
}
