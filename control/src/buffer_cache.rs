//! The process's global allocator: the system's (glibc) malloc, with a small
//! per-thread cache of freed 8 and 16 KiB blocks.
//!
//! Why: hyper's HTTP/1 connections read into a `BytesMut` whose parsed part
//! the request or response still holds (its headers are slices of it) when
//! the connection reads again, so every read after a message allocates a
//! fresh 8 KiB buffer, and the old one is freed when the message goes:
//! two of each per proxied request (downstream and upstream connection).
//! glibc's own per-thread cache stops at 1 KiB, so each of those went
//! through the bins, and their coalescing took ~6 % of the user time of a
//! request. Here such a block goes back to a per-thread stack and the next
//! buffer of that size is taken from it: a push and a pop.
//!
//! Bounded: at most `SLOTS` blocks of each size per thread; beyond that,
//! and for every other size and alignment, malloc and free as before. A
//! thread's cached blocks are freed when the thread ends.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// The buffer sizes hyper allocates: its initial read buffer and the
/// adaptive strategy's first step up.
const SIZES: [usize; 2] = [8 * 1024, 16 * 1024];
/// Blocks kept per size and thread: enough for the churn of many
/// connections served by one thread, at most 384 KiB in all.
const SLOTS: usize = 16;
/// malloc's alignment: any block it returns may serve these layouts.
const MALLOC_ALIGN: usize = 16;

pub struct BufferCache;

struct Stacks {
    blocks: [[*mut u8; SLOTS]; SIZES.len()],
    len: [usize; SIZES.len()],
}

struct ThreadCache(UnsafeCell<Stacks>);

impl Drop for ThreadCache {
    fn drop(&mut self) {
        let stacks = self.0.get_mut();
        for (class, size) in SIZES.iter().enumerate() {
            for &block in &stacks.blocks[class][..stacks.len[class]] {
                // SAFETY: each cached block came from `System.alloc` with
                // this size and an alignment of at most MALLOC_ALIGN, which
                // System serves (and frees) with plain malloc/free.
                unsafe { System.dealloc(block, Layout::from_size_align_unchecked(*size, 1)) };
            }
            stacks.len[class] = 0;
        }
    }
}

thread_local! {
    static CACHE: ThreadCache = const {
        ThreadCache(UnsafeCell::new(Stacks {
            blocks: [[std::ptr::null_mut(); SLOTS]; SIZES.len()],
            len: [0; SIZES.len()],
        }))
    };
}

/// The size class of a layout the cache serves.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > MALLOC_ALIGN {
        return None;
    }
    SIZES.iter().position(|&size| size == layout.size())
}

/// Runs `f` on this thread's stacks; `None` once the thread is past its
/// thread-local destructors (then the caller uses malloc/free directly).
#[inline]
fn with_stacks<R>(f: impl FnOnce(&mut Stacks) -> R) -> Option<R> {
    // SAFETY: the stacks are only touched here, by their own thread, and
    // `f` neither allocates nor re-enters: no second `&mut` can exist.
    CACHE
        .try_with(|cache| f(unsafe { &mut *cache.0.get() }))
        .ok()
}

unsafe impl GlobalAlloc for BufferCache {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = class_of(layout) {
            let cached = with_stacks(|stacks| match stacks.len[class] {
                0 => None,
                len => {
                    stacks.len[class] = len - 1;
                    Some(stacks.blocks[class][len - 1])
                }
            });
            if let Some(Some(block)) = cached {
                return block;
            }
        }
        // SAFETY: the caller's contract (non-zero size) is passed on.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout) {
            let kept = with_stacks(|stacks| {
                let len = stacks.len[class];
                if len == SLOTS {
                    return false;
                }
                stacks.blocks[class][len] = ptr;
                stacks.len[class] = len + 1;
                true
            });
            if kept == Some(true) {
                return;
            }
        }
        // SAFETY: `ptr` was allocated by this allocator with `layout`: by
        // System directly, or by System for a cached block of this class.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Not from the cache: calloc may know the memory is already zero.
        // Freed later, such a block may still be cached: it is a malloc
        // block like any other.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `layout` is the block's layout and
        // `new_size` is valid for its alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class_of(layout).is_none() && class_of(new_layout).is_none() {
            // SAFETY: neither side is a cached size: System's own realloc.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: as above; the block is moved through this allocator so
        // that the cache's sizes stay blocks of exactly their size.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(class: usize) -> usize {
        with_stacks(|stacks| stacks.len[class]).unwrap_or(0)
    }

    #[test]
    fn a_freed_buffer_is_the_next_one_of_its_size() {
        let alloc = BufferCache;
        let layout = Layout::from_size_align(8192, 1).unwrap();
        unsafe {
            let first = alloc.alloc(layout);
            assert!(!first.is_null());
            first.write_bytes(0xab, 8192);
            let before = cached(0);
            alloc.dealloc(first, layout);
            assert_eq!(cached(0), before + 1);
            // Any alignment malloc gives serves: the same block comes back.
            let again = alloc.alloc(Layout::from_size_align(8192, 8).unwrap());
            assert_eq!(again, first);
            assert_eq!(cached(0), before);
            alloc.dealloc(again, layout);
        }
    }

    #[test]
    fn other_sizes_and_alignments_pass_through() {
        assert_eq!(class_of(Layout::from_size_align(8192, 1).unwrap()), Some(0));
        assert_eq!(
            class_of(Layout::from_size_align(16384, 16).unwrap()),
            Some(1)
        );
        assert_eq!(class_of(Layout::from_size_align(8191, 1).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(4096, 1).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(8192, 64).unwrap()), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let alloc = BufferCache;
        let layout = Layout::from_size_align(16384, 1).unwrap();
        unsafe {
            let blocks: Vec<*mut u8> = (0..SLOTS + 8).map(|_| alloc.alloc(layout)).collect();
            assert!(blocks.iter().all(|block| !block.is_null()));
            for &block in &blocks {
                alloc.dealloc(block, layout);
            }
            assert_eq!(cached(1), SLOTS);
            for _ in 0..SLOTS {
                let block = alloc.alloc(layout);
                assert!(blocks.contains(&block));
            }
            assert_eq!(cached(1), 0);
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_cached_and_other_sizes() {
        let alloc = BufferCache;
        unsafe {
            let small = Layout::from_size_align(100, 1).unwrap();
            let ptr = alloc.alloc(small);
            for i in 0..100 {
                *ptr.add(i) = i as u8;
            }
            // Into a cached size, out of it again, and within other sizes.
            let grown = alloc.realloc(ptr, small, 8192);
            let grown_layout = Layout::from_size_align(8192, 1).unwrap();
            let regrown = alloc.realloc(grown, grown_layout, 20000);
            let shrunk = alloc.realloc(regrown, Layout::from_size_align(20000, 1).unwrap(), 50);
            for i in 0..50 {
                assert_eq!(*shrunk.add(i), i as u8);
            }
            alloc.dealloc(shrunk, Layout::from_size_align(50, 1).unwrap());
        }
    }

    #[test]
    fn a_threads_cache_is_freed_when_it_ends() {
        // Runs the destructor path: blocks cached on a thread that ends are
        // given back (under a leak checker this would otherwise show).
        std::thread::spawn(|| {
            let alloc = BufferCache;
            let layout = Layout::from_size_align(8192, 1).unwrap();
            unsafe {
                let block = alloc.alloc(layout);
                alloc.dealloc(block, layout);
            }
            assert_eq!(cached(0), 1);
        })
        .join()
        .unwrap();
    }
}
