//! The pack's bounds over every transport, from gix's own progress reports.
//!
//! Over http(s) tend reads the server's bytes itself (see `bounds`). Over ssh and file:// gix
//! reads them from a child process, so tend watches what gix reports instead: the bytes of the
//! pack as they are read (`read pack`) and the object count the pack's header declares (the
//! `indexing` total, reported before the first object is indexed). A bound hit trips the fetch's
//! interrupt flag, which gix checks on every read of the pack; the fetch then fails with the
//! [`BoundHit`] recorded here. The watchdog of `transfer` also reads [`Watch::pack_bytes`] to
//! apply the minimum transfer rate to the pack.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gix::progress::{Count, Id, MessageLevel, NestedProgress, Progress, Step, StepShared, Unit};

use super::bounds::{BoundHit, Limit, BYTES_PER_OBJECT};

/// gix-pack's progress ids: the bytes of the pack read, and the objects indexed.
const READ_PACK_BYTES: Id = *b"BWRB";
const INDEX_OBJECTS: Id = *b"IWIO";

/// What the progress tree of one fetch attempt shares.
pub(crate) struct Shared {
    max_bytes: u64,
    pack_bytes: AtomicU64,
    pack_started: AtomicBool,
    hit: Mutex<Option<BoundHit>>,
    interrupt: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(max_fetch_bytes: u64, interrupt: Arc<AtomicBool>) -> Arc<Shared> {
        Arc::new(Shared {
            max_bytes: max_fetch_bytes,
            pack_bytes: AtomicU64::new(0),
            pack_started: AtomicBool::new(false),
            hit: Mutex::new(None),
            interrupt,
        })
    }

    /// Bytes of the pack read so far, once it has started (None before).
    pub fn pack_bytes(&self) -> Option<u64> {
        self.pack_started
            .load(Ordering::SeqCst)
            .then(|| self.pack_bytes.load(Ordering::SeqCst))
    }

    /// The flag gix checks while it reads the pack.
    pub fn interrupt(&self) -> &AtomicBool {
        &self.interrupt
    }

    /// Records the first bound hit and stops the fetch.
    pub fn trip(&self, hit: BoundHit) {
        if let Ok(mut first) = self.hit.lock() {
            first.get_or_insert(hit);
        }
        self.interrupt.store(true, Ordering::SeqCst);
    }

    /// The bound that stopped the fetch, if one did.
    pub fn take_hit(&self) -> Option<BoundHit> {
        self.hit.lock().ok().and_then(|mut h| h.take())
    }
}

/// One node of gix's progress tree; every node reports into the same [`Shared`].
pub(crate) struct Watch {
    shared: Arc<Shared>,
    id: Id,
    step: Arc<AtomicUsize>,
}

impl Watch {
    pub fn root(shared: Arc<Shared>) -> Watch {
        Watch {
            shared,
            id: gix::progress::UNKNOWN,
            step: Arc::default(),
        }
    }

    fn bytes_read(&self, total: u64) {
        self.shared.pack_bytes.store(total, Ordering::SeqCst);
        if total > self.shared.max_bytes {
            self.shared.trip(BoundHit {
                limit: Limit::Pack,
                detail: format!("the server sent more than {} bytes", self.shared.max_bytes),
            });
        }
    }
}

impl Count for Watch {
    fn set(&self, step: Step) {
        self.step.store(step, Ordering::SeqCst);
        if self.id == READ_PACK_BYTES {
            self.bytes_read(step as u64);
        }
    }

    fn step(&self) -> Step {
        self.step.load(Ordering::SeqCst)
    }

    fn inc_by(&self, step: Step) {
        let total = self.step.fetch_add(step, Ordering::SeqCst) + step;
        if self.id == READ_PACK_BYTES {
            self.bytes_read(total as u64);
        }
    }

    fn counter(&self) -> StepShared {
        self.step.clone()
    }
}

impl Progress for Watch {
    fn init(&mut self, max: Option<Step>, _unit: Option<Unit>) {
        let allowed = self.shared.max_bytes / BYTES_PER_OBJECT;
        if let (INDEX_OBJECTS, Some(declared)) = (self.id, max) {
            if declared as u64 > allowed {
                self.shared.trip(BoundHit {
                    limit: Limit::PackObjects,
                    detail: format!(
                        "the pack declares {declared} objects, more than {allowed} (one per \
                         {BYTES_PER_OBJECT} bytes of source.max_fetch_bytes)"
                    ),
                });
            }
        }
    }

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> Id {
        self.id
    }

    fn message(&self, _level: MessageLevel, _message: String) {}
}

impl NestedProgress for Watch {
    type SubProgress = Watch;

    fn add_child(&mut self, _name: impl Into<String>) -> Watch {
        self.add_child_with_id(String::new(), gix::progress::UNKNOWN)
    }

    fn add_child_with_id(&mut self, _name: impl Into<String>, id: Id) -> Watch {
        if id == READ_PACK_BYTES {
            self.shared.pack_started.store(true, Ordering::SeqCst);
        }
        Watch {
            shared: self.shared.clone(),
            id,
            step: Arc::default(),
        }
    }
}
