//! Instruction counting (SysTick under `-icount`), stack painting and heap
//! accounting.
//!
//! Under `qemu-system-arm -icount shift=0` the virtual clock advances 1 ns
//! per executed instruction and SysTick, clocked from the mps2 board's
//! 25 MHz system clock, decrements once per 40 ns: one tick is exactly 40
//! instructions. [`calibrate`] measures that factor with a loop of known
//! length rather than assuming it.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use embedded_alloc::LlffHeap;

const RELOAD: u32 = 0x00FF_FFFF;

static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Relaxed);
}

/// Starts SysTick from the core clock, free-running, interrupting on wrap.
pub fn start_systick(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    core::mem::forget(syst);
}

/// SysTick ticks since start (monotonic, 64-bit): wraps counted by the
/// exception, plus the down-counter's progress in the current period. A
/// wrap whose exception has not run yet when the counter is read shows up
/// as time going backwards by one period; that reading is corrected.
#[inline(never)]
pub fn ticks() -> u64 {
    static LAST_LO: AtomicU32 = AtomicU32::new(0);
    static LAST_HI: AtomicU32 = AtomicU32::new(0);
    let period = u64::from(RELOAD) + 1;
    let t = loop {
        let w = WRAPS.load(Relaxed);
        let cv = SYST::get_current();
        if WRAPS.load(Relaxed) == w {
            break u64::from(w) * period + u64::from(RELOAD - (cv & RELOAD));
        }
    };
    let last = (u64::from(LAST_HI.load(Relaxed)) << 32) | u64::from(LAST_LO.load(Relaxed));
    let t = if t < last { t + period } else { t };
    LAST_HI.store((t >> 32) as u32, Relaxed);
    LAST_LO.store(t as u32, Relaxed);
    t
}

/// `n` iterations of a two-instruction loop (`subs`, `bne`).
#[inline(never)]
pub fn spin(n: u32) {
    unsafe {
        core::arch::asm!(
            "1:",
            "subs {0}, {0}, #1",
            "bne 1b",
            inout(reg) n => _,
            options(nomem, nostack),
        );
    }
}

/// Instructions per SysTick tick, ×1000, from two loops whose lengths
/// differ by a known number of instructions (fixed overheads cancel), and
/// the overhead of an empty measurement in ticks.
pub fn calibrate() -> (u64, u64) {
    let run = |n| {
        let t0 = ticks();
        spin(n);
        ticks() - t0
    };
    let (n1, n2) = (1_000_000u32, 5_000_000u32);
    let t1 = run(n1);
    let t2 = run(n2);
    let per_tick_milli = 2 * u64::from(n2 - n1) * 1000 / (t2 - t1);
    let t0 = ticks();
    let empty = ticks() - t0;
    (per_tick_milli, empty)
}

// ---- heap ----------------------------------------------------------------

/// The global allocator: embedded-alloc's linked-list first-fit heap,
/// counting live bytes, their peak, and the highest address handed out.
pub struct CountingHeap {
    heap: LlffHeap,
    base: AtomicUsize,
    live: AtomicUsize,
    peak: AtomicUsize,
    top: AtomicUsize,
    allocs: AtomicUsize,
}

impl CountingHeap {
    pub const fn new() -> Self {
        CountingHeap {
            heap: LlffHeap::empty(),
            base: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            top: AtomicUsize::new(0),
            allocs: AtomicUsize::new(0),
        }
    }
    /// # Safety
    /// Once, before any allocation, with memory no one else uses.
    pub unsafe fn init(&self, start: usize, size: usize) {
        self.base.store(start, Relaxed);
        unsafe { self.heap.init(start, size) }
    }
    pub fn live(&self) -> usize {
        self.live.load(Relaxed)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }
    /// Highest byte offset into the arena ever handed out (fragmentation
    /// included): the arena a real device needs.
    pub fn high_water(&self) -> usize {
        self.top.load(Relaxed)
    }
    pub fn allocs(&self) -> usize {
        self.allocs.load(Relaxed)
    }
    /// Restarts the peak at the current live size.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            let live = self.live.fetch_add(layout.size(), Relaxed) + layout.size();
            self.peak.fetch_max(live, Relaxed);
            let end = p as usize + layout.size() - self.base.load(Relaxed);
            self.top.fetch_max(end, Relaxed);
            self.allocs.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.heap.dealloc(ptr, layout) };
        self.live.fetch_sub(layout.size(), Relaxed);
    }
}

// ---- stack ---------------------------------------------------------------

const PAINT: u32 = 0x5AFE_C0DE;
/// How far below the caller's stack pointer an operation may reach and
/// still be measured.
pub const PAINT_DEPTH: usize = 192 * 1024;

/// What one measured call cost.
#[derive(Clone, Copy, Default, Debug)]
pub struct Sample {
    pub ticks: u64,
    /// Stack bytes used below the measuring frame.
    pub stack: usize,
    /// Stack depth from the top of the stack (reset value of MSP).
    pub stack_total: usize,
    /// Heap: live bytes before, peak during, live after.
    pub heap_before: usize,
    pub heap_peak: usize,
    pub heap_after: usize,
    pub allocs: usize,
}

unsafe extern "C" {
    static _stack_start: u32;
}

pub fn stack_top() -> usize {
    core::ptr::addr_of!(_stack_start) as usize
}

/// Runs `f` once and measures it: ticks, peak stack (painted below the
/// current stack pointer before the call, scanned after it), heap. Not
/// generic: one copy in flash for every measured operation (a generic
/// `measure` was 13 copies of this and of a wrapper, about 5 KB of the
/// payment firmware; decision 0022, session 10). `f` is called through
/// its vtable, in its own frame.
#[inline(never)]
pub fn measure(heap: &CountingHeap, overhead: u64, f: &mut dyn FnMut()) -> Sample {
    let sp = cortex_m::register::msp::read() as usize;
    let hi = (sp - 64) & !3;
    let lo = hi - PAINT_DEPTH;
    // SAFETY: below the stack pointer, inside the RAM region reserved for
    // the stack (4 MiB); nothing lives there.
    unsafe {
        let mut a = lo;
        while a < hi {
            core::ptr::write_volatile(a as *mut u32, PAINT);
            a += 4;
        }
    }
    heap.reset_peak();
    let before = heap.live();
    let allocs0 = heap.allocs();
    let t0 = ticks();
    f();
    let t1 = ticks();
    let mut deepest = hi;
    unsafe {
        let mut a = lo;
        while a < hi {
            if core::ptr::read_volatile(a as *const u32) != PAINT {
                deepest = a;
                break;
            }
            a += 4;
        }
    }
    Sample {
        ticks: (t1 - t0).saturating_sub(overhead),
        stack: sp - deepest,
        stack_total: stack_top() - deepest,
        heap_before: before,
        heap_peak: heap.peak(),
        heap_after: heap.live(),
        allocs: heap.allocs() - allocs0,
    }
}

/// Deepest stack use since reset, from cortex-m-rt's `paint-stack`
/// (0xCCCCCCCC from `_stack_end` up) and our own painting.
pub fn stack_high_water() -> usize {
    unsafe extern "C" {
        static _stack_end: u32;
    }
    let end = core::ptr::addr_of!(_stack_end) as usize;
    let top = stack_top();
    let mut a = (end + 3) & !3;
    while a < top {
        let v = unsafe { core::ptr::read_volatile(a as *const u32) };
        if v != 0xCCCC_CCCC && v != PAINT {
            return top - a;
        }
        a += 4;
    }
    0
}
