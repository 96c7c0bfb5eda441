//! The syscall-table and IDT checks on crafted kernel address spaces: a
//! clean table, redirected slots (another handler, module space, the
//! unslid address, user space, non-canonical), a clean IDT with leftover
//! early handlers and non-present gates, gates moved outside the text, bad
//! gate types and selectors, a reference that does not match, unreadable
//! tables and garbage.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::*;
use crate::addr::GuestPhysAddr;
use crate::craft::{PageTableBuilder, sample_profile};
use crate::memory::SliceMemory;
use crate::paging::PagingMode;
use crate::profile::{IdtReference, NamedAddress};

const SLIDE: u64 = 0x2a0_0000;
const SLOTS: usize = 64;
/// Physical homes of the pages the checks read.
const SCT_PHYS: u64 = 0x1000;
const IDT_PHYS: u64 = 0x4000;
/// Pages past rodata (where init text was): one non-executable, one
/// executable, one left unmapped.
const INIT_NX_LINK: u64 = 0xffff_ffff_8300_0000;
const INIT_X_LINK: u64 = 0xffff_ffff_8300_1000;
const INIT_UNMAPPED_LINK: u64 = 0xffff_ffff_8300_2000;
const MODULE_ADDR: u64 = 0xffff_ffff_c012_3450;
const DIRECT_MAP_ADDR: u64 = 0xffff_8880_0000_1000;

struct Kernel {
    b: PageTableBuilder,
    profile: KernelProfile,
    loc: KernelLocation,
}

fn rt(link: u64) -> u64 {
    link + SLIDE
}

fn gate(vector: u8, target: u64) -> Gate {
    Gate {
        vector,
        target,
        selector: KERNEL_CS,
        ist_byte: 0,
        type_attr: 0x8e,
        reserved: 0,
    }
}

/// A kernel slid by `SLIDE`, its sys_call_table holding every handler and
/// its IDT: exceptions 0..=8, 0xa..=0xe, 0x10, 0x11, 0x13, 0x1d and all of
/// 0x20..=0xff in the text; 0x12 at its early handler in non-executable
/// init text, 0x14 at one that is unmapped; 0x09, 0x0f, 0x15..=0x1c,
/// 0x1e, 0x1f not present.
fn kernel() -> Kernel {
    let profile = sample_profile(SLOTS);
    let s = profile.symbols.clone();
    let loc = KernelLocation {
        phys_text: GuestPhysAddr(0x100_0000),
        link_text: s.text,
        runtime_text: rt(s.text),
    };
    let mut b = PageTableBuilder::new(0x10000, PagingMode::FourLevel);
    let sct_page = s.sys_call_table & !0xfff;
    b.map_4k(rt(sct_page), SCT_PHYS, false, false);
    b.map_4k(rt(sct_page) + 0x1000, SCT_PHYS + 0x1000, false, false);
    b.map_4k(rt(s.idt_table), IDT_PHYS, false, false);
    b.map_4k(rt(INIT_NX_LINK), 0x6000, true, false);
    b.map_4k(rt(INIT_X_LINK), 0x7000, false, true);
    let mut k = Kernel { b, profile, loc };
    for i in 0..SLOTS {
        let handler = k.profile.syscalls.slots[i].address;
        set_slot(&mut k, i, rt(handler));
    }
    for v in 0..=255u8 {
        let target = match v {
            0x09 | 0x0f | 0x15..=0x1c | 0x1e | 0x1f => continue,
            0x12 => rt(INIT_NX_LINK) + 9 * 0x12,
            0x14 => rt(INIT_UNMAPPED_LINK) + 9 * 0x14,
            _ => rt(s.text) + 0x80_0000 + 0x10 * u64::from(v),
        };
        set_gate(&mut k, gate(v, target));
    }
    k
}

fn set_slot(k: &mut Kernel, slot: usize, value: u64) {
    let off = k.profile.symbols.sys_call_table & 0xfff;
    k.b.write_u64(SCT_PHYS + off + 8 * slot as u64, value);
}

fn set_gate(k: &mut Kernel, g: Gate) {
    k.b.write(IDT_PHYS + 16 * u64::from(g.vector), &g.encode());
}

fn with_space<R>(k: &Kernel, f: impl FnOnce(&AddressSpace<'_, SliceMemory<'_>>) -> R) -> R {
    let image = k.b.finish();
    let mem = SliceMemory::flat(&image);
    let space = AddressSpace::new(&mem, k.b.root(), PagingMode::FourLevel);
    f(&space)
}

fn syscalls(k: &Kernel) -> Result<SyscallReport, CheckError> {
    with_space(k, |space| syscall_table(space, &k.loc, &k.profile))
}

fn idt_of(k: &Kernel) -> Result<IdtReport, CheckError> {
    with_space(k, |space| idt(space, &k.loc, &k.profile))
}

fn handler(k: &Kernel, slot: usize) -> u64 {
    rt(k.profile.syscalls.slots[slot].address)
}

#[test]
fn clean_syscall_table() {
    let k = kernel();
    let report = syscalls(&k).expect("readable");
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.slots, SLOTS);
    assert_eq!(report.table.value(), rt(k.profile.symbols.sys_call_table));
}

#[test]
fn redirected_slots_are_named_with_where_they_point() {
    let mut k = kernel();
    let s = k.profile.symbols.clone();
    let cases: Vec<(usize, u64, Target)> = alloc::vec![
        (
            1,
            handler(&k, 5),
            Target::KernelText {
                symbol: Some("__x64_sys_call_5".to_string()),
            },
        ),
        (
            2,
            rt(s.x64_sys_call),
            Target::KernelText {
                symbol: Some("x64_sys_call".to_string()),
            },
        ),
        (3, handler(&k, 3) + 1, Target::KernelText { symbol: None }),
        (4, MODULE_ADDR, Target::ModuleArea),
        (5, DIRECT_MAP_ADDR, Target::OtherKernel),
        // The handler's link address: the slide was not applied.
        (6, k.profile.syscalls.slots[6].address, Target::KernelImage),
        (7, rt(s.sys_call_table), Target::KernelImage),
        (8, 0x40_0000, Target::User),
        (9, 0x8000_0000_0000_0000, Target::NonCanonical),
        (SLOTS - 1, 0, Target::User),
    ];
    for (slot, value, _) in &cases {
        set_slot(&mut k, *slot, *value);
    }
    let report = syscalls(&k).expect("readable");
    assert_eq!(report.findings.len(), cases.len(), "{:#?}", report.findings);
    for (finding, (slot, value, target)) in report.findings.iter().zip(&cases) {
        assert_eq!(finding.slot, *slot);
        assert_eq!(finding.found, *value);
        assert_eq!(finding.expected, handler(&k, *slot));
        assert_eq!(
            finding.expected_name,
            alloc::format!("__x64_sys_call_{slot}")
        );
        assert_eq!(&finding.target, target, "slot {slot}");
    }
    let text = report.findings[3].to_string();
    assert!(text.contains("slot 4 (__x64_sys_call_4)"), "{text}");
    assert!(text.contains("module area"), "{text}");
}

#[test]
fn syscall_check_refuses_bad_profiles_and_unreadable_tables() {
    let k = kernel();
    // The table's page unmapped (another place in rodata).
    let mut moved = kernel();
    moved.profile.symbols.sys_call_table += 0x10_0000;
    assert!(matches!(
        syscalls(&moved),
        Err(CheckError::Unreadable(WalkError::NotPresent { .. }))
    ));
    // A table running onto an unmapped page.
    let mut long = kernel();
    long.profile.syscalls.slots = sample_profile(1000).syscalls.slots;
    assert!(matches!(syscalls(&long), Err(CheckError::Unreadable(_))));
    // Addresses outside the kernel image, no slots, too many slots.
    let mut bad = kernel();
    bad.profile.symbols.sys_call_table = 0x1000;
    assert_eq!(syscalls(&bad), Err(CheckError::BadProfile));
    let mut bad = kernel();
    bad.profile.syscalls.slots[3].address = 0xffff_ffff_c000_0000;
    assert_eq!(syscalls(&bad), Err(CheckError::BadProfile));
    let mut bad = kernel();
    bad.profile.symbols.etext = bad.profile.symbols.text;
    assert_eq!(syscalls(&bad), Err(CheckError::BadProfile));
    let mut bad = kernel();
    bad.profile.syscalls.slots.clear();
    assert_eq!(syscalls(&bad), Err(CheckError::BadProfile));
    let mut bad = kernel();
    bad.profile.syscalls.slots = sample_profile(MAX_SYSCALLS + 1).syscalls.slots;
    assert_eq!(syscalls(&bad), Err(CheckError::BadProfile));
    // The unchanged kernel still checks clean.
    assert!(syscalls(&k).expect("readable").is_clean());
}

#[test]
fn clean_idt_with_leftover_early_handlers() {
    let k = kernel();
    let report = idt_of(&k).expect("readable");
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.table.value(), rt(k.profile.symbols.idt_table));
    // 256 minus the 12 non-present vectors.
    assert_eq!(report.gates.len(), 256 - 12);
    assert!(report.gates.iter().all(Gate::present));
    assert!(
        !report
            .gates
            .iter()
            .any(|g| g.vector == 0x09 || g.vector == 0x1f)
    );
    let notes: Vec<u8> = report.findings.iter().map(|f| f.vector).collect();
    assert_eq!(notes, [0x12, 0x14]);
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.kind == IdtFindingKind::LeftoverEarlyHandler && !f.is_violation())
    );
    let image = k.b.finish();
    let raw = &image[IDT_PHYS as usize..IDT_PHYS as usize + IDT_SIZE];
    let want: [u8; 32] = Sha256::digest(raw).into();
    assert_eq!(report.digest, want);
}

#[test]
fn gates_moved_outside_the_text_are_violations() {
    let s = sample_profile(1).symbols;
    let cases = [
        // Module space, the direct map, user space.
        (0x1du8, MODULE_ADDR, Target::ModuleArea),
        (0x80, DIRECT_MAP_ADDR, Target::OtherKernel),
        (0x03, 0x40_1000, Target::User),
        // Past rodata but mapped executable: code could run there.
        (0x15, rt(INIT_X_LINK), Target::KernelImage),
        // Rodata (non-executable, but not where init text is).
        (0x0e, rt(s.sys_call_table), Target::KernelImage),
        // A non-exception vector at a non-executable init page.
        (0x40, rt(INIT_NX_LINK), Target::KernelImage),
        // The early handler's link address (no slide), in the text's
        // range before the slide: outside the runtime text.
        (0x0d, s.text + 0x1000, Target::KernelImage),
    ];
    for (vector, target, want) in cases {
        let mut k = kernel();
        set_gate(&mut k, gate(vector, target));
        let clean = idt_of(&kernel()).expect("readable");
        let report = idt_of(&k).expect("readable");
        assert!(!report.is_clean(), "vector {vector:#x}");
        let violations: Vec<&IdtFinding> = report.violations().collect();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(violations[0].vector, vector);
        assert_eq!(violations[0].found, target);
        assert_eq!(
            violations[0].kind,
            IdtFindingKind::OutsideText { target: want }
        );
        assert_ne!(report.digest, clean.digest);
        let text = violations[0].to_string();
        assert!(text.contains("outside the kernel text"), "{text}");
    }
}

#[test]
fn non_present_gates_bad_types_and_selectors() {
    // A non-present gate is no finding whatever it holds, but it is in the
    // digest.
    let mut k = kernel();
    let clean = idt_of(&k).expect("readable");
    let mut g = gate(0x1f, MODULE_ADDR);
    g.type_attr = 0x0e;
    set_gate(&mut k, g);
    let report = idt_of(&k).expect("readable");
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.gates.len(), clean.gates.len());
    assert_ne!(report.digest, clean.digest);
    // A present gate where none was: in the text, allowed (no reference).
    let mut k = kernel();
    let text = rt(k.profile.symbols.text);
    set_gate(&mut k, gate(0x1f, text + 0x40));
    let report = idt_of(&k).expect("readable");
    assert!(report.is_clean());
    assert_eq!(report.gates.len(), clean.gates.len() + 1);
    // A call gate, a task gate, a user code segment.
    for (type_attr, selector) in [(0x8c, KERNEL_CS), (0x85, KERNEL_CS), (0x8e, 0x33)] {
        let mut k = kernel();
        let mut g = gate(0x21, rt(k.profile.symbols.text) + 0x40);
        g.type_attr = type_attr;
        g.selector = selector;
        set_gate(&mut k, g);
        let report = idt_of(&k).expect("readable");
        let violations: Vec<&IdtFinding> = report.violations().collect();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(
            violations[0].kind,
            IdtFindingKind::BadGate {
                gate_type: type_attr & 0xf,
                selector
            }
        );
    }
    // DPL 3 (the int 0x80 gate) is fine.
    let mut k = kernel();
    let mut g = gate(0x80, rt(k.profile.symbols.text) + 0x40);
    g.type_attr = 0xee;
    set_gate(&mut k, g);
    assert!(idt_of(&k).expect("readable").is_clean());
}

#[test]
fn idt_reference_when_the_profile_has_one() {
    let mut k = kernel();
    let text = k.profile.symbols.text;
    let entry = |name: &str, off: u64| NamedAddress {
        name: name.to_string(),
        address: text + off,
    };
    k.profile.idt = Some(IdtReference {
        gates: alloc::vec![
            (0x00, entry("asm_exc_divide_error", 0x80_0000)),
            (0x01, entry("asm_exc_debug", 0x90_0000)),
            (0x0f, entry("asm_exc_spurious_interrupt_bug", 0x80_00f0)),
        ],
        attributes: Vec::new(),
        early_handlers: Vec::new(),
    });
    let report = idt_of(&k).expect("readable");
    let violations: Vec<&IdtFinding> = report.violations().collect();
    assert_eq!(violations.len(), 2, "{violations:#?}");
    assert_eq!(violations[0].vector, 0x01);
    assert_eq!(
        violations[0].kind,
        IdtFindingKind::NotExpected {
            expected_name: "asm_exc_debug".to_string(),
            expected: rt(text + 0x90_0000),
            found: Some(Target::KernelText { symbol: None }),
        }
    );
    assert_eq!(violations[1].vector, 0x0f);
    assert!(matches!(
        violations[1].kind,
        IdtFindingKind::NotExpected { found: None, .. }
    ));
    assert!(violations[1].to_string().contains("not present"));
    // A vector the reference does not list may point anywhere in the text.
    set_gate(&mut k, gate(0x02, rt(text + 0x90_0000)));
    let report = idt_of(&k).expect("readable");
    assert!(!report.findings.iter().any(|f| f.vector == 0x02));
    // The right entry makes vector 1 clean.
    set_gate(&mut k, gate(0x01, rt(text + 0x90_0000)));
    let report = idt_of(&k).expect("readable");
    assert_eq!(report.violations().count(), 1);
}

/// The attribute word of each gate the profile lists (IST, type, DPL,
/// present, from the image's `idt_data`): a gate user space may call with
/// `int N` (DPL 3), or one moved to another interrupt stack, is a
/// violation; its entry address alone says nothing of either.
#[test]
fn idt_attributes_from_the_profile() {
    let mut k = kernel();
    let text = k.profile.symbols.text;
    // The crafted kernel's entries: text + 0x80_0000 + 0x10 * vector.
    let entry = |v: u8| NamedAddress {
        name: alloc::format!("entry_{v:#x}"),
        address: text + 0x80_0000 + 0x10 * u64::from(v),
    };
    k.profile.idt = Some(IdtReference {
        gates: alloc::vec![(0x03, entry(0x03)), (0x0e, entry(0x0e))],
        // #BP callable from user space (DPL 3), #PF not.
        attributes: alloc::vec![0xee00, 0x8e00],
        early_handlers: Vec::new(),
    });
    let at = |v: u8| rt(text + 0x80_0000 + 0x10 * u64::from(v));
    // As crafted, #BP is DPL 0: not what the image says.
    let report = idt_of(&k).expect("readable");
    let violations: Vec<&IdtFinding> = report.violations().collect();
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert_eq!(violations[0].vector, 0x03);
    assert_eq!(
        violations[0].kind,
        IdtFindingKind::Attributes {
            expected: 0xee00,
            found: 0x8e00
        }
    );
    assert!(
        violations[0]
            .to_string()
            .contains("DPL 0, IST 0, type 0xe (0x8e00) instead of DPL 3"),
        "{}",
        violations[0]
    );
    let mut bp = gate(0x03, at(0x03));
    bp.type_attr = 0xee;
    set_gate(&mut k, bp);
    assert!(idt_of(&k).expect("readable").is_clean());
    // #PF made callable from user space, or put on an IST stack.
    for (ist_byte, type_attr) in [(0, 0xee), (2, 0x8e), (0, 0x8f)] {
        let mut pf = gate(0x0e, at(0x0e));
        (pf.ist_byte, pf.type_attr) = (ist_byte, type_attr);
        let mut k = kernel();
        k.profile.idt = Some(IdtReference {
            gates: alloc::vec![(0x03, entry(0x03)), (0x0e, entry(0x0e))],
            attributes: alloc::vec![0xee00, 0x8e00],
            early_handlers: Vec::new(),
        });
        set_gate(&mut k, bp);
        set_gate(&mut k, pf);
        let report = idt_of(&k).expect("readable");
        let violations: Vec<&IdtFinding> = report.violations().collect();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(
            violations[0].kind,
            IdtFindingKind::Attributes {
                expected: 0x8e00,
                found: u16::from_le_bytes([ist_byte, type_attr])
            }
        );
    }
}

#[test]
fn a_referenced_vector_at_an_early_handler_is_a_violation() {
    // The exemption of leftover early handlers is for the vectors the
    // profile has no entry for: a referenced vector (the page fault, from
    // `early_pf_idts`) moved to a non-executable or unmapped page past
    // rodata was redirected, not left behind.
    let with_pf_reference = || {
        let mut k = kernel();
        let pf = NamedAddress {
            name: "asm_exc_page_fault".to_string(),
            address: k.profile.symbols.text + 0x80_0000 + 0x10 * 0x0e,
        };
        k.profile.idt = Some(IdtReference {
            gates: alloc::vec![(0x0e, pf)],
            attributes: Vec::new(),
            early_handlers: Vec::new(),
        });
        k
    };
    // The kernel as built: clean, 0x12 and 0x14 (unreferenced) notes.
    let report = idt_of(&with_pf_reference()).expect("readable");
    assert!(report.is_clean(), "{:#?}", report.findings);
    let notes: Vec<u8> = report.findings.iter().map(|f| f.vector).collect();
    assert_eq!(notes, [0x12, 0x14]);
    // Where the leftover handlers are (non-executable), 0x0e's own early
    // handler there, an unmapped page past rodata.
    for target in [
        rt(INIT_NX_LINK),
        rt(INIT_NX_LINK) + 9 * 0x0e,
        rt(INIT_UNMAPPED_LINK),
    ] {
        let mut k = with_pf_reference();
        set_gate(&mut k, gate(0x0e, target));
        let report = idt_of(&k).expect("readable");
        assert!(!report.is_clean(), "{target:#x}: {:#?}", report.findings);
        let violations: Vec<&IdtFinding> = report.violations().collect();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(violations[0].vector, 0x0e);
        assert_eq!(violations[0].found, target);
        assert_eq!(
            violations[0].kind,
            IdtFindingKind::OutsideText {
                target: Target::KernelImage
            }
        );
        // The unreferenced leftovers are still notes.
        let notes: Vec<u8> = report
            .findings
            .iter()
            .filter(|f| !f.is_violation())
            .map(|f| f.vector)
            .collect();
        assert_eq!(notes, [0x12, 0x14]);
    }
}

#[test]
fn unreadable_idt_and_bad_profiles() {
    let mut k = kernel();
    k.profile.symbols.idt_table += 0x1000;
    assert!(matches!(
        idt_of(&k),
        Err(CheckError::Unreadable(WalkError::NotPresent { .. }))
    ));
    let mut k = kernel();
    k.profile.symbols.idt_table = 0x1000;
    assert_eq!(idt_of(&k), Err(CheckError::BadProfile));
    let mut k = kernel();
    k.profile.symbols.end_rodata = 0x1000;
    assert_eq!(idt_of(&k), Err(CheckError::BadProfile));
}

#[test]
fn gate_encoding_round_trips() {
    let g = Gate {
        vector: 7,
        target: 0xffff_ffff_8123_4567,
        selector: 0x10,
        ist_byte: 3,
        type_attr: 0x8e,
        reserved: 0,
    };
    let raw = g.encode();
    assert_eq!(
        raw,
        [
            0x67, 0x45, 0x10, 0x00, 0x03, 0x8e, 0x23, 0x81, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0
        ]
    );
    assert_eq!(Gate::decode(7, &raw), g);
    assert!(g.present());
    assert_eq!((g.gate_type(), g.dpl(), g.ist()), (0xe, 0, 3));
}

/// Random memory as page tables and tables: errors or reports, never a
/// panic, every finding bounded by the table size.
#[test]
fn garbage_never_panics() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let profile = sample_profile(SLOTS);
    for round in 0..200 {
        let mut ram = alloc::vec![0u8; 0x2_0000];
        for chunk in ram.chunks_exact_mut(8) {
            // Mostly plausible entries: present, pointing inside the image.
            let r = next();
            let v = if round % 2 == 0 {
                (r & 0x1_f000) | (r >> 60) | 1
            } else {
                r
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        let mem = SliceMemory::flat(&ram);
        let root = GuestPhysAddr(next() & 0x1_f000);
        let space = AddressSpace::new(&mem, root, PagingMode::FourLevel);
        let loc = KernelLocation {
            phys_text: GuestPhysAddr(next() & 0x1_f000),
            link_text: profile.symbols.text,
            runtime_text: profile.symbols.text + (next() % 64) * 0x20_0000,
        };
        if let Ok(r) = syscall_table(&space, &loc, &profile) {
            assert!(r.findings.len() <= SLOTS);
        }
        if let Ok(r) = idt(&space, &loc, &profile) {
            assert!(r.gates.len() <= IDT_GATES);
            assert!(r.findings.len() <= 2 * IDT_GATES);
        }
    }
}

#[test]
fn unnamed_exception_vectors_keep_their_early_handlers() {
    let mut k = kernel();
    let text = k.profile.symbols.text;
    let named: Vec<u8> = (0..=8)
        .chain(0xa..=0xe)
        .chain([0x10, 0x11, 0x13, 0x1d])
        .collect();
    k.profile.idt = Some(IdtReference {
        gates: named
            .iter()
            .map(|&v| {
                (
                    v,
                    NamedAddress {
                        name: "handler".to_string(),
                        address: text + 0x80_0000 + 0x10 * u64::from(v),
                    },
                )
            })
            .collect(),
        attributes: Vec::new(),
        early_handlers: (0..32).map(|v| INIT_NX_LINK + 9 * v).collect(),
    });
    // 0x14 at its own early handler (not executable), as 0x12: clean.
    set_gate(&mut k, gate(0x14, rt(INIT_NX_LINK) + 9 * 0x14));
    let report = idt_of(&k).expect("readable");
    assert!(report.is_clean(), "{:#?}", report.findings);
    let notes = report.findings.iter().filter(|f| !f.is_violation()).count();
    assert_eq!(notes, 2);
    let violation = |k: &Kernel| {
        let report = idt_of(k).expect("readable");
        let v: Vec<IdtFinding> = report.violations().cloned().collect();
        assert_eq!(v.len(), 1, "{v:#?}");
        v[0].clone()
    };
    // An unnamed vector pointed into the text (before the A-VM's start-up,
    // say): not its early handler.
    let mut redirected = kernel();
    redirected.profile = k.profile.clone();
    set_gate(&mut redirected, gate(0x14, rt(INIT_NX_LINK) + 9 * 0x14));
    set_gate(&mut redirected, gate(0x1f, rt(text) + 0x80_0000));
    let found = violation(&redirected);
    assert_eq!(found.vector, 0x1f);
    assert!(
        matches!(&found.kind, IdtFindingKind::NotExpected { expected_name, expected, .. }
            if expected_name == "early_idt_handler_array[31]" && *expected == rt(INIT_NX_LINK) + 9 * 31),
        "{found:?}"
    );
    // Without the early handlers in the profile, that gate passed.
    let mut without = redirected;
    if let Some(idt) = without.profile.idt.as_mut() {
        idt.early_handlers.clear();
    }
    assert!(idt_of(&without).expect("readable").is_clean());
    // Another vector's early handler: a violation.
    let mut k2 = kernel();
    k2.profile = k.profile.clone();
    set_gate(&mut k2, gate(0x14, rt(INIT_NX_LINK) + 9 * 0x14));
    set_gate(&mut k2, gate(0x12, rt(INIT_NX_LINK) + 9 * 0x13));
    let found = violation(&k2);
    assert_eq!(found.vector, 0x12);
    assert!(
        matches!(found.kind, IdtFindingKind::OutsideText { .. }),
        "{found:?}"
    );
    // Its own early handler, callable from user space: a violation.
    let mut k3 = kernel();
    k3.profile = k.profile.clone();
    set_gate(&mut k3, gate(0x14, rt(INIT_NX_LINK) + 9 * 0x14));
    let mut user = gate(0x12, rt(INIT_NX_LINK) + 9 * 0x12);
    user.type_attr = 0xee;
    set_gate(&mut k3, user);
    let found = violation(&k3);
    assert_eq!(found.vector, 0x12);
    assert!(
        matches!(
            found.kind,
            IdtFindingKind::Attributes {
                expected: 0x8e00,
                found: 0xee00
            }
        ),
        "{found:?}"
    );
}
