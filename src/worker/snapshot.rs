//! The reloadable answer configuration: every socket's [`HandlerConfig`], replaced whole by a
//! reload ([`Handlers`]), and a worker's copy of it ([`HandlersView`]). A worker compares the
//! generation with the one it last saw (one atomic load per loop turn) and takes the new
//! snapshot under the lock only when it moved: once per worker per reload, never per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::handler::HandlerConfig;

/// Every socket's [`HandlerConfig`], shared by the workers.
#[derive(Debug)]
pub(super) struct Handlers {
    generation: AtomicU64,
    current: Mutex<Arc<[HandlerConfig]>>,
}

impl Handlers {
    /// The first snapshot.
    pub(super) fn new(configs: Vec<HandlerConfig>) -> Handlers {
        Handlers { generation: AtomicU64::new(0), current: Mutex::new(configs.into()) }
    }

    /// Swaps in a new snapshot; workers pick it up at their next loop turn.
    pub(super) fn replace(&self, configs: Vec<HandlerConfig>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = configs.into();
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The first socket's reflection defence as now configured (every listener shares its
    /// rules and table); the default (off) when there is no socket.
    pub(super) fn current_limit(&self) -> crate::limit::Limit {
        self.load().1.first().map(|h| h.limit.clone()).unwrap_or_default()
    }

    /// The TURN balancer as now configured (every balancing listener shares one); `None`
    /// when no listener balances.
    pub(super) fn current_turn(&self) -> Option<Arc<crate::lb::Balancer>> {
        self.load().1.iter().find_map(|h| h.turn.clone())
    }

    fn load(&self) -> (u64, Arc<[HandlerConfig]>) {
        let generation = self.generation.load(Ordering::Acquire);
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (generation, current)
    }
}

/// A worker's copy of the snapshot.
pub(super) struct HandlersView {
    seen: u64,
    /// Every socket's configuration, in the worker's socket order.
    pub(super) current: Arc<[HandlerConfig]>,
}

impl HandlersView {
    pub(super) fn new(shared: &Handlers) -> HandlersView {
        let (seen, current) = shared.load();
        HandlersView { seen, current }
    }

    /// Takes the shared snapshot if a reload replaced it since this view was taken.
    #[inline]
    pub(super) fn refresh(&mut self, shared: &Handlers) {
        if shared.generation.load(Ordering::Acquire) != self.seen {
            *self = HandlersView::new(shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_follows_a_replacement_once() {
        let shared = Handlers::new(vec![HandlerConfig::default()]);
        let mut view = HandlersView::new(&shared);
        assert_eq!(view.current.len(), 1);
        let before = Arc::as_ptr(&view.current);
        view.refresh(&shared);
        assert_eq!(Arc::as_ptr(&view.current), before, "no reload: the same snapshot");
        shared.replace(vec![HandlerConfig { software: "new".into(), ..HandlerConfig::default() }; 2]);
        view.refresh(&shared);
        assert_eq!(view.current.len(), 2);
        assert_eq!(view.current[1].software, "new");
    }
}
