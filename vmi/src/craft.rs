//! Builders of synthetic guest memory images: page tables now, kallsyms
//! tables in [`crate::kallsyms::craft`]. For tests, fuzzing and examples; the
//! builders are plain code on `Vec<u8>` and never touch a real guest.

use alloc::vec::Vec;

use crate::addr::GuestPhysAddr;
use crate::paging::PagingMode;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Builds x86-64 page tables inside a memory image. Tables are allocated one
/// 4 KiB frame after another from `table_base` on; the image grows to hold
/// them and whatever is written with [`PageTableBuilder::write`].
#[derive(Clone, Debug)]
pub struct PageTableBuilder {
    image: Vec<u8>,
    root: u64,
    next_table: u64,
    mode: PagingMode,
}

impl PageTableBuilder {
    pub fn new(table_base: u64, mode: PagingMode) -> Self {
        let table_base = table_base & ADDR_MASK;
        let mut b = PageTableBuilder {
            image: Vec::new(),
            root: table_base,
            next_table: table_base,
            mode,
        };
        b.root = b.alloc_table();
        b
    }

    /// Physical address of the top-level table.
    pub fn root(&self) -> GuestPhysAddr {
        GuestPhysAddr(self.root)
    }

    fn alloc_table(&mut self) -> u64 {
        let at = self.next_table;
        self.next_table += 0x1000;
        self.grow(self.next_table);
        at
    }

    fn grow(&mut self, end: u64) {
        let end = end as usize;
        if self.image.len() < end {
            self.image.resize(end, 0);
        }
    }

    fn entry(&self, at: u64) -> u64 {
        let at = at as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.image[at..at + 8]);
        u64::from_le_bytes(b)
    }

    fn set_entry(&mut self, at: u64, value: u64) {
        self.write(at, &value.to_le_bytes());
    }

    /// Writes raw bytes at a physical address, growing the image.
    pub fn write(&mut self, phys: u64, bytes: &[u8]) {
        self.grow(phys + bytes.len() as u64);
        let at = phys as usize;
        self.image[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn write_u64(&mut self, phys: u64, value: u64) {
        self.write(phys, &value.to_le_bytes());
    }

    /// Sets the entry for `va` at `level` (1 = PT .. 5 = PML5), creating the
    /// tables above it as needed.
    fn map(&mut self, va: u64, level: u8, leaf: u64) {
        let mut table = self.root;
        let mut l = self.mode.levels();
        loop {
            let index = (va >> (12 + 9 * (u32::from(l) - 1))) & 0x1ff;
            let at = table + index * 8;
            if l == level {
                self.set_entry(at, leaf);
                return;
            }
            let e = self.entry(at);
            table = if e & PRESENT != 0 && e & PAGE_SIZE_BIT == 0 {
                e & ADDR_MASK
            } else {
                let t = self.alloc_table();
                // Upper levels grant everything; the leaf decides.
                self.set_entry(at, t | PRESENT | WRITABLE | (1 << 2));
                t
            };
            l -= 1;
        }
    }

    fn flags(writable: bool, executable: bool) -> u64 {
        PRESENT | if writable { WRITABLE } else { 0 } | if executable { 0 } else { NO_EXECUTE }
    }

    pub fn map_4k(&mut self, va: u64, phys: u64, writable: bool, executable: bool) {
        self.map(
            va,
            1,
            (phys & ADDR_MASK) | Self::flags(writable, executable),
        );
    }

    pub fn map_2m(&mut self, va: u64, phys: u64, writable: bool, executable: bool) {
        let leaf = (phys & ADDR_MASK & !0x1f_ffff) | PAGE_SIZE_BIT;
        self.map(va, 2, leaf | Self::flags(writable, executable));
    }

    pub fn map_1g(&mut self, va: u64, phys: u64, writable: bool, executable: bool) {
        let leaf = (phys & ADDR_MASK & !0x3fff_ffff) | PAGE_SIZE_BIT;
        self.map(va, 3, leaf | Self::flags(writable, executable));
    }

    /// Maps `len` bytes (rounded up to pages) of `va` to `phys` with 4 KiB
    /// pages, read-write, no-execute.
    pub fn map_range(&mut self, va: u64, phys: u64, len: u64) {
        let mut off = 0;
        while off < len {
            self.map_4k(va + off, phys + off, true, false);
            off += 0x1000;
        }
    }

    /// A copy of the image as built so far.
    pub fn finish(&self) -> Vec<u8> {
        self.image.clone()
    }

    pub fn into_image(self) -> Vec<u8> {
        self.image
    }
}
