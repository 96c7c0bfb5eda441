//! The C memory functions that compiled Rust code calls. In a freestanding
//! link nothing provides them (FACTS.md). They are written with string
//! instructions so that LLVM cannot recognise the loops and turn them back
//! into calls to themselves.

use core::arch::asm;

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; DF is clear (ABI).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // The destination does not start inside the source: copy forwards.
        // SAFETY: as for memcpy; a forward copy is correct for this overlap.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // SAFETY: copy backwards from the last byte with DF set, then clear
        // DF again as the ABI requires.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _,
                 options(nostack));
        }
    }
    dest
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; DF is clear (ABI).
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// One unaligned 8-byte load, as an instruction LLVM cannot see through
/// (a plain loop of loads and compares might become a memcmp call: this
/// function).
///
/// # Safety
/// `p` must be valid for 8 bytes.
#[inline(always)]
unsafe fn load_u64(p: *const u8) -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees 8 readable bytes at `p`; x86 allows
    // unaligned loads.
    unsafe {
        asm!("mov {v}, qword ptr [{p}]", p = in(reg) p, v = out(reg) value,
             options(nostack, readonly, preserves_flags, pure));
    }
    value
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // Eight bytes at a time until they differ (the text sweep compares
    // megabytes a second with its copy; under TCG each load costs the
    // same whatever its width), then byte by byte for the order.
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n and the caller guarantees n readable bytes.
        let (x, y) = unsafe { (load_u64(a.add(i)), load_u64(b.add(i))) };
        if x != y {
            break;
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, as above.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
