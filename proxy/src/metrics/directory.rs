//! Which series exist: (route, version) names ↔ slots, the tables that use
//! them, and the per-table index that turns a request's picked route and
//! version into a slot with two subtractions.
//!
//! Series are keyed by name because tables are rebuilt on every change. A
//! series lives while some table naming it is alive — the current one, or an
//! older one an in-flight request still holds (requests keep their table
//! until their body ends). When none is left, the series is retired: its
//! slot is cleared and may be reused, and since no live table names it, no
//! late request can bring it back as a ghost.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use crate::table::{Route, RoutingTable, Version};

use super::shards::{Core, Slot, Store};

/// Maps one table's (route, version) positions to slots. A request's
/// measure holds the index, and the index holds the table and the core: so
/// the table (and its series) stays live until the request is recorded, at
/// the cost of one reference count per request.
pub(crate) struct TableIndex {
    pub(crate) core: Arc<Core>,
    /// `None` only for the empty index before the first table.
    table: Option<Arc<RoutingTable>>,
    revision: u64,
    /// Where each route's versions start in `slots` (table match order).
    offsets: Box<[usize]>,
    slots: Box<[Slot]>,
}

impl TableIndex {
    pub(crate) fn empty(core: Arc<Core>) -> TableIndex {
        TableIndex {
            core,
            table: None,
            revision: 0,
            offsets: Box::new([]),
            slots: Box::new([]),
        }
    }

    #[inline]
    pub(crate) fn is_for(&self, table: &Arc<RoutingTable>) -> bool {
        self.table
            .as_ref()
            .is_some_and(|own| Arc::ptr_eq(own, table))
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The slot of `version` of `route`, both borrowed from the table this
    /// index was built for.
    #[inline]
    pub(crate) fn slot(
        &self,
        table: &RoutingTable,
        route: &Route,
        version: &Version,
    ) -> Option<Slot> {
        let r = position(table.routes(), route)?;
        let v = position(&route.versions, version)?;
        self.slots.get(self.offsets.get(r)? + v).copied()
    }
}

/// Index of `item` in `slice` by address: O(1), no string compare.
#[inline]
fn position<T>(slice: &[T], item: &T) -> Option<usize> {
    let size = std::mem::size_of::<T>().max(1);
    let offset = (item as *const T as usize).checked_sub(slice.as_ptr() as usize)?;
    let index = offset / size;
    (offset % size == 0 && index < slice.len()).then_some(index)
}

struct Seen {
    table: Weak<RoutingTable>,
    slots: Vec<Slot>,
}

#[derive(Default)]
pub(crate) struct Directory {
    slots: HashMap<(Arc<str>, Arc<str>), Slot>,
    /// Master copy of what the core publishes.
    stores: Vec<Option<Arc<Store>>>,
    free: Vec<Slot>,
    tables: Vec<Seen>,
    /// The table with the highest revision seen (for weights, ordering).
    newest: Weak<RoutingTable>,
}

impl Directory {
    /// Makes sure every series of `table` exists, retires series no live
    /// table names any more, and returns the table's index.
    pub(crate) fn register(&mut self, core: &Arc<Core>, table: &Arc<RoutingTable>) -> TableIndex {
        // A dead table's address may be reused by `table`: forget it first.
        self.tables.retain(|seen| seen.table.strong_count() > 0);
        let known = self
            .tables
            .iter()
            .find(|seen| Weak::as_ptr(&seen.table) == Arc::as_ptr(table))
            .map(|seen| seen.slots.clone());
        let slots = match known {
            Some(slots) => slots,
            None => {
                let mut slots = Vec::new();
                for route in table.routes() {
                    for version in route.versions.iter() {
                        slots.push(self.slot_for(core, &route.name, &version.name));
                    }
                }
                self.tables.push(Seen {
                    table: Arc::downgrade(table),
                    slots: slots.clone(),
                });
                slots
            }
        };
        if self
            .newest
            .upgrade()
            .is_none_or(|newest| newest.revision() <= table.revision())
        {
            self.newest = Arc::downgrade(table);
        }
        self.sweep(core);
        let mut offsets = Vec::with_capacity(table.routes().len());
        let mut next = 0;
        for route in table.routes() {
            offsets.push(next);
            next += route.versions.len();
        }
        TableIndex {
            core: Arc::clone(core),
            table: Some(Arc::clone(table)),
            revision: table.revision(),
            offsets: offsets.into_boxed_slice(),
            slots: slots.into_boxed_slice(),
        }
    }

    fn slot_for(&mut self, core: &Core, route: &Arc<str>, version: &Arc<str>) -> Slot {
        let key = (Arc::clone(route), Arc::clone(version));
        if let Some(slot) = self.slots.get(&key) {
            return *slot;
        }
        let store = Arc::new(Store::new(key.0.clone(), key.1.clone(), core.slices()));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.stores[slot] = Some(store);
                slot
            }
            None => {
                self.stores.push(Some(store));
                self.stores.len() - 1
            }
        };
        self.slots.insert(key, slot);
        core.publish(self.stores.clone());
        slot
    }

    /// Forgets dead tables and retires the series none of the live ones
    /// names.
    pub(crate) fn sweep(&mut self, core: &Core) {
        self.tables.retain(|seen| seen.table.strong_count() > 0);
        let live: HashSet<Slot> = self
            .tables
            .iter()
            .flat_map(|seen| seen.slots.iter().copied())
            .collect();
        let retired: Vec<(Arc<str>, Arc<str>)> = self
            .slots
            .iter()
            .filter(|(_, slot)| !live.contains(slot))
            .map(|(key, _)| key.clone())
            .collect();
        if retired.is_empty() {
            return;
        }
        let mut cleared = Vec::with_capacity(retired.len());
        for key in retired {
            if let Some(slot) = self.slots.remove(&key) {
                self.stores[slot] = None;
                cleared.push(slot);
                tracing::debug!(route = %key.0, version = %key.1, "metrics series retired");
            }
        }
        core.publish(self.stores.clone());
        for slot in cleared {
            core.clear(slot);
            self.free.push(slot);
        }
    }

    pub(crate) fn newest(&self) -> Option<Arc<RoutingTable>> {
        self.newest.upgrade()
    }

    /// Every live series' store.
    pub(crate) fn stores(&self) -> Vec<Arc<Store>> {
        self.stores.iter().flatten().cloned().collect()
    }

    pub(crate) fn store(&self, route: &str, version: &str) -> Option<Arc<Store>> {
        let slot = self
            .slots
            .iter()
            .find(|((r, v), _)| &**r == route && &**v == version)?
            .1;
        self.stores.get(*slot).and_then(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_by_address() {
        let items = [1u64, 2, 3];
        assert_eq!(position(&items, &items[2]), Some(2));
        let other = 2u64;
        assert_eq!(position(&items, &other), None);
        let empty: [u64; 0] = [];
        assert_eq!(position(&empty, &other), None);
    }
}
