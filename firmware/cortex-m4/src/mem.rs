//! `memcpy`, `memmove` and `memset` for the Cortex-M4, with word
//! accesses at any alignment.
//!
//! The `compiler_builtins` copy the prebuilt `core` links for
//! `thumbv7em-none-eabihf` copies a misaligned source a byte at a time
//! (its `mem-unaligned` path is off for ARM): 32 bytes from an odd
//! address took 248 instructions, 3.5 a byte over 16 KB against 1.07
//! aligned (the benchmark firmware's `memcpy_*` lines). Decoding copies
//! every digest, key and signature out of CBOR, at whatever offset it
//! lies, and boot after a long offline run spent 29 % of its instructions
//! in `memcpy` (decision 0022, session 11). ARMv7-M's `LDR` and `STR`
//! (not `LDM`, `STM`, `LDRD`, `STRD`) take any alignment on normal memory
//! unless `CCR.UNALIGN_TRP` is set, which this firmware never does; the
//! SE's data is all in normal memory (flash and SRAM, never a
//! peripheral). These definitions replace the weak ones of
//! `compiler_builtins`, as a vendor's optimised C library would.
//!
//! 16 bytes a step (four loads, four stores), then words, then bytes;
//! `memmove` copies downwards when the destination overlaps the source
//! from above (`Vec::remove` and `insert` in the SE's sorted tables),
//! else it is `memcpy`. `memset` (and `__aeabi_memclr`, which zeroes
//! every new `vec![0; n]`) stores a word at a time the same way.

core::arch::global_asm!(
    ".section .text.tally_memcpy,\"ax\",%progbits",
    ".global memcpy",
    ".global __aeabi_memcpy",
    ".global __aeabi_memcpy4",
    ".global __aeabi_memcpy8",
    ".thumb_func",
    ".type memcpy,%function",
    ".thumb_func",
    ".type __aeabi_memcpy,%function",
    ".thumb_func",
    ".type __aeabi_memcpy4,%function",
    ".thumb_func",
    ".type __aeabi_memcpy8,%function",
    "memcpy:",
    "__aeabi_memcpy:",
    "__aeabi_memcpy4:",
    "__aeabi_memcpy8:",
    "    mov   r12, r0",
    "    subs  r2, r2, #16",
    "    blo   2f",
    "    push  {{r4, r5, r6}}",
    "1:",
    "    ldr   r3, [r1], #4",
    "    ldr   r4, [r1], #4",
    "    ldr   r5, [r1], #4",
    "    ldr   r6, [r1], #4",
    "    str   r3, [r0], #4",
    "    str   r4, [r0], #4",
    "    str   r5, [r0], #4",
    "    str   r6, [r0], #4",
    "    subs  r2, r2, #16",
    "    bhs   1b",
    "    pop   {{r4, r5, r6}}",
    "2:",
    "    adds  r2, r2, #12",
    "    blo   4f",
    "3:",
    "    ldr   r3, [r1], #4",
    "    str   r3, [r0], #4",
    "    subs  r2, r2, #4",
    "    bhs   3b",
    "4:",
    "    adds  r2, r2, #4",
    "    beq   6f",
    "5:",
    "    ldrb  r3, [r1], #1",
    "    strb  r3, [r0], #1",
    "    subs  r2, r2, #1",
    "    bne   5b",
    "6:",
    "    mov   r0, r12",
    "    bx    lr",
    ".size memcpy, . - memcpy",
);

core::arch::global_asm!(
    ".section .text.tally_memmove,\"ax\",%progbits",
    ".global memmove",
    ".global __aeabi_memmove",
    ".global __aeabi_memmove4",
    ".global __aeabi_memmove8",
    ".thumb_func",
    ".type memmove,%function",
    ".thumb_func",
    ".type __aeabi_memmove,%function",
    ".thumb_func",
    ".type __aeabi_memmove4,%function",
    ".thumb_func",
    ".type __aeabi_memmove8,%function",
    "memmove:",
    "__aeabi_memmove:",
    "__aeabi_memmove4:",
    "__aeabi_memmove8:",
    // dst - src >= n (unsigned): dst below src, or past its end: upwards.
    "    subs  r3, r0, r1",
    "    cmp   r3, r2",
    "    bhs.w memcpy",
    "    mov   r12, r0",
    "    add   r0, r0, r2",
    "    add   r1, r1, r2",
    "    subs  r2, r2, #16",
    "    blo   2f",
    "    push  {{r4, r5, r6}}",
    "1:",
    "    ldr   r3, [r1, #-4]!",
    "    ldr   r4, [r1, #-4]!",
    "    ldr   r5, [r1, #-4]!",
    "    ldr   r6, [r1, #-4]!",
    "    str   r3, [r0, #-4]!",
    "    str   r4, [r0, #-4]!",
    "    str   r5, [r0, #-4]!",
    "    str   r6, [r0, #-4]!",
    "    subs  r2, r2, #16",
    "    bhs   1b",
    "    pop   {{r4, r5, r6}}",
    "2:",
    "    adds  r2, r2, #12",
    "    blo   4f",
    "3:",
    "    ldr   r3, [r1, #-4]!",
    "    str   r3, [r0, #-4]!",
    "    subs  r2, r2, #4",
    "    bhs   3b",
    "4:",
    "    adds  r2, r2, #4",
    "    beq   6f",
    "5:",
    "    ldrb  r3, [r1, #-1]!",
    "    strb  r3, [r0, #-1]!",
    "    subs  r2, r2, #1",
    "    bne   5b",
    "6:",
    "    mov   r0, r12",
    "    bx    lr",
    ".size memmove, . - memmove",
);

core::arch::global_asm!(
    ".section .text.tally_memset,\"ax\",%progbits",
    ".global memset",
    ".global __aeabi_memset",
    ".global __aeabi_memset4",
    ".global __aeabi_memset8",
    ".global __aeabi_memclr",
    ".global __aeabi_memclr4",
    ".global __aeabi_memclr8",
    ".thumb_func",
    ".type memset,%function",
    ".thumb_func",
    ".type __aeabi_memset,%function",
    ".thumb_func",
    ".type __aeabi_memset4,%function",
    ".thumb_func",
    ".type __aeabi_memset8,%function",
    ".thumb_func",
    ".type __aeabi_memclr,%function",
    ".thumb_func",
    ".type __aeabi_memclr4,%function",
    ".thumb_func",
    ".type __aeabi_memclr8,%function",
    // __aeabi_memclr(dest, n)
    "__aeabi_memclr:",
    "__aeabi_memclr4:",
    "__aeabi_memclr8:",
    "    mov   r2, r1",
    "    movs  r1, #0",
    "    b     memset",
    // __aeabi_memset(dest, n, c)
    "__aeabi_memset:",
    "__aeabi_memset4:",
    "__aeabi_memset8:",
    "    mov   r3, r1",
    "    mov   r1, r2",
    "    mov   r2, r3",
    // memset(dest, c, n)
    "memset:",
    "    mov   r12, r0",
    "    and   r1, r1, #255",
    "    orr   r1, r1, r1, lsl #8",
    "    orr   r1, r1, r1, lsl #16",
    "    subs  r2, r2, #16",
    "    blo   2f",
    "1:",
    "    str   r1, [r0], #4",
    "    str   r1, [r0], #4",
    "    str   r1, [r0], #4",
    "    str   r1, [r0], #4",
    "    subs  r2, r2, #16",
    "    bhs   1b",
    "2:",
    "    adds  r2, r2, #12",
    "    blo   4f",
    "3:",
    "    str   r1, [r0], #4",
    "    subs  r2, r2, #4",
    "    bhs   3b",
    "4:",
    "    adds  r2, r2, #4",
    "    beq   6f",
    "5:",
    "    strb  r1, [r0], #1",
    "    subs  r2, r2, #1",
    "    bne   5b",
    "6:",
    "    mov   r0, r12",
    "    bx    lr",
    ".size memset, . - memset",
);

#[cfg(feature = "bench")]
unsafe extern "C" {
    fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8;
    fn __aeabi_memclr(dst: *mut u8, n: usize);
    fn __aeabi_memset(dst: *mut u8, n: usize, c: i32);
}

/// Checks the routines above against a byte-at-a-time reference (volatile,
/// so that it is not itself turned into a call of them): every length up
/// to 70 at every alignment of source and destination, overlapping both
/// ways for `memmove`, and the bytes around the destination untouched.
/// Run at every start of the benchmark firmware (which `firmware_smoke`
/// runs too), before anything is measured.
#[cfg(feature = "bench")]
#[inline(never)]
pub fn self_test() -> Result<(), &'static str> {
    const N: usize = 96;
    let pattern = |i: usize| (i as u8).wrapping_mul(37).wrapping_add(11);
    let fresh = || {
        let mut b = [0u8; N + 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = pattern(i);
        }
        b
    };
    let reference_copy = |buf: &mut [u8; N + 16], dst: usize, src: usize, n: usize| {
        let mut tmp = [0u8; N + 16];
        for i in 0..n {
            unsafe {
                core::ptr::write_volatile(&mut tmp[i], core::ptr::read_volatile(&buf[src + i]))
            };
        }
        for i in 0..n {
            unsafe { core::ptr::write_volatile(&mut buf[dst + i], tmp[i]) };
        }
    };
    for n in 0..=70usize {
        for s in 0..4usize {
            for d in 0..4usize {
                // Separate buffers (memcpy).
                let src = fresh();
                let mut got = [0xEEu8; N + 16];
                let mut want = got;
                for i in 0..n {
                    unsafe { core::ptr::write_volatile(&mut want[8 + d + i], src[s + i]) };
                }
                let r = unsafe { memcpy(got.as_mut_ptr().add(8 + d), src.as_ptr().add(s), n) };
                if r != unsafe { got.as_mut_ptr().add(8 + d) } || got != want {
                    return Err("memcpy");
                }
                // Overlapping, both directions (memmove).
                for (dst, src_at) in [(d, 8 + s), (8 + d, s), (d + 1, s), (s + 1, d)] {
                    let mut got = fresh();
                    let mut want = fresh();
                    reference_copy(&mut want, dst, src_at, n);
                    let base = got.as_mut_ptr();
                    let r = unsafe { memmove(base.add(dst), base.add(src_at), n) };
                    if r != unsafe { base.add(dst) } || got != want {
                        return Err("memmove");
                    }
                }
            }
            // memset and the AEABI forms.
            let mut got = fresh();
            let mut want = fresh();
            for i in 0..n {
                unsafe { core::ptr::write_volatile(&mut want[s + i], 0xA7) };
            }
            let r = unsafe { memset(got.as_mut_ptr().add(s), 0x3A7, n) };
            if r != unsafe { got.as_mut_ptr().add(s) } || got != want {
                return Err("memset");
            }
            let mut got = fresh();
            unsafe { __aeabi_memset(got.as_mut_ptr().add(s), n, 0xA7) };
            if got != want {
                return Err("__aeabi_memset");
            }
            let mut got = fresh();
            let mut want = fresh();
            for i in 0..n {
                unsafe { core::ptr::write_volatile(&mut want[s + i], 0) };
            }
            unsafe { __aeabi_memclr(got.as_mut_ptr().add(s), n) };
            if got != want {
                return Err("__aeabi_memclr");
            }
        }
    }
    Ok(())
}
