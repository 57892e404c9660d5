//! The data plane's handle on the live table: one `ArcSwap`, read without
//! locks by every request, written by whole-table swaps.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{RoutingTable, TableError, TableSpec};

/// The data plane's handle on the live table: lock-free reads, serialised
/// writes that always build a complete new table.
#[derive(Clone)]
pub struct TableHandle {
    shared: Arc<Shared>,
}

struct Shared {
    table: ArcSwap<RoutingTable>,
    /// Serialises writers so read-modify-write (compare-and-set on the
    /// revision) cannot lose an update; readers never touch it.
    writer: Mutex<()>,
}

impl TableHandle {
    /// A handle holding `spec` as revision 1.
    pub fn new(spec: TableSpec) -> Result<TableHandle, TableError> {
        let table = RoutingTable::build(spec, 1)?;
        Ok(TableHandle {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(table),
                writer: Mutex::new(()),
            }),
        })
    }

    /// The current table; keep the `Arc` for the whole request.
    #[inline]
    pub fn load(&self) -> Arc<RoutingTable> {
        self.shared.table.load_full()
    }

    /// Builds a new table from what `change` returns (given the current
    /// table) and stores it with the next revision. If `change` or the build
    /// fails, nothing is stored.
    pub fn update<E>(
        &self,
        change: impl FnOnce(&RoutingTable) -> Result<TableSpec, E>,
    ) -> Result<Arc<RoutingTable>, E>
    where
        E: From<TableError>,
    {
        let _writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.shared.table.load_full();
        let spec = change(&current)?;
        let next = Arc::new(RoutingTable::build_after(
            spec,
            current.revision + 1,
            Some(&current),
        )?);
        self.shared.table.store(Arc::clone(&next));
        Ok(next)
    }

    /// Replaces the table with `spec` (the next revision).
    pub fn store(&self, spec: TableSpec) -> Result<Arc<RoutingTable>, TableError> {
        self.update(|_| Ok::<_, TableError>(spec))
    }
}
