use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::craft::TextKernel;
use crate::memory::SliceMemory;

const PHYS: u64 = 0x20_0000;
const SLIDE: u64 = 0x2e60_0000;

/// Every chunk's outcome for `ram`.
fn sweep(k: &TextKernel, ram: &[u8], slide: u64) -> Vec<ChunkOutcome> {
    let mem = SliceMemory::flat(ram);
    let mut c = TextChecker::new(
        &k.reference,
        k.location(PHYS, slide),
        k.ro_after_init.clone(),
    )
    .expect("checker");
    let mut out = Vec::new();
    for area in [Area::Text, Area::Rodata] {
        for i in 0..c.chunks(area) {
            out.push(c.check_chunk(&mem, area, i).expect("readable"));
        }
    }
    out
}

fn dirty(outcomes: &[ChunkOutcome]) -> Vec<(Area, usize, bool, Vec<SiteViolation>)> {
    outcomes
        .iter()
        .filter(|o| !o.is_clean())
        .map(|o| (o.area, o.index, o.modified, o.sites.clone()))
        .collect()
}

fn boot_digest(outcomes: &[ChunkOutcome]) -> [u8; 32] {
    boot_patches_digest(
        outcomes
            .iter()
            .filter(|o| o.area == Area::Text)
            .map(|o| &o.boot),
    )
}

#[test]
fn a_booted_kernel_matches_its_image_at_any_slide() {
    let k = TextKernel::new();
    let a = sweep(&k, &k.ram(PHYS, SLIDE), SLIDE);
    assert_eq!(dirty(&a), []);
    assert_eq!(a.len(), 4 + 3);
    // The unpatched file itself (slide 0) passes too: every site holds its
    // link-time form.
    let mut file = alloc::vec![0u8; PHYS as usize];
    file.extend_from_slice(&k.file);
    assert_eq!(dirty(&sweep(&k, &file, 0)), []);
    // Another slide: the same boot-patch digest (slide-free), another
    // frozen digest (the run-time constant differs).
    let b = sweep(&k, &k.ram(PHYS, 0x1000_0000), 0x1000_0000);
    assert_eq!(dirty(&b), []);
    assert_eq!(boot_digest(&a), boot_digest(&b));
    assert_ne!(a[0].frozen, b[0].frozen);
    assert_ne!(boot_digest(&a), [0; 32]);
    // Checked digests equal the reference.
    for o in &a {
        let region = if o.area == Area::Text {
            &k.reference.text
        } else {
            &k.reference.rodata
        };
        assert_eq!(o.digest, region.digests[o.index]);
    }
}

/// Writes `bytes` at offset `at` from `_text` in `ram`.
fn write(ram: &mut [u8], at: u64, bytes: &[u8]) {
    let at = (PHYS + at) as usize;
    ram[at..at + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn a_byte_outside_every_site_marks_its_chunk_modified() {
    let k = TextKernel::new();
    for (at, area, index) in [
        (0x50u64, Area::Text, 0),
        (0x2fe0, Area::Text, 2),
        (0x3000 + 99, Area::Text, 3),
        (TextKernel::RODATA + 5, Area::Rodata, 0),
        (TextKernel::RODATA + 0x2000 + 49, Area::Rodata, 2),
        // A relocated field: one more than the slide explains.
        (u64::from(TextKernel::RELOCS[0].0), Area::Text, 0),
        (u64::from(TextKernel::RELOCS[3].0) + 6, Area::Text, 2),
    ] {
        let mut ram = k.ram(PHYS, SLIDE);
        let byte = ram[(PHYS + at) as usize];
        write(&mut ram, at, &[byte.wrapping_add(1)]);
        let found = dirty(&sweep(&k, &ram, SLIDE));
        assert_eq!(found, [(area, index, true, Vec::new())], "byte at +{at:#x}");
    }
}

#[test]
fn ro_after_init_is_not_compared_with_the_image() {
    let k = TextKernel::new();
    let mut ram = k.ram(PHYS, SLIDE);
    write(&mut ram, TextKernel::RO_AFTER_INIT + 8, &[0xaa; 16]);
    assert_eq!(dirty(&sweep(&k, &ram, SLIDE)), []);
    // ...but its own digest sees the change.
    let location = k.location(PHYS, SLIDE);
    let clean = k.ram(PHYS, SLIDE);
    let digest = |ram: &[u8]| {
        ro_after_init_digest(
            &SliceMemory::flat(ram),
            &location,
            k.ro_after_init.clone(),
            &k.reference.relocations,
        )
        .expect("readable")
    };
    assert_ne!(digest(&ram), digest(&clean));
}

#[test]
fn a_copying_check_keeps_exactly_the_raw_bytes_it_judged() {
    let k = TextKernel::new();
    let mut ram = k.ram(PHYS, SLIDE);
    // A modified byte: the copy holds it as read, the verdict sees it.
    write(&mut ram, 0x50, &[0xcc]);
    let mem = SliceMemory::flat(&ram);
    let location = k.location(PHYS, SLIDE);
    let mut plain =
        TextChecker::new(&k.reference, location, k.ro_after_init.clone()).expect("checker");
    let mut copying =
        TextChecker::new(&k.reference, location, k.ro_after_init.clone()).expect("checker");
    for area in [Area::Text, Area::Rodata] {
        let region = if area == Area::Text {
            &k.reference.text
        } else {
            &k.reference.rodata
        };
        for i in 0..plain.chunks(area) {
            let range = region.chunk_range(i).expect("chunk");
            let len = (range.end - range.start) as usize;
            let mut raw = alloc::vec![0u8; len];
            let copied = copying
                .check_chunk_copying(&mem, area, i, &mut |_| false, &mut raw)
                .expect("readable");
            assert_eq!(copied, plain.check_chunk(&mem, area, i).expect("readable"));
            let at = (region.start - location.link_text + range.start) as usize;
            assert_eq!(raw, &ram[PHYS as usize + at..][..len], "{area:?} {i}");
            // A copy buffer of another length is refused, not half filled.
            let mut short = alloc::vec![0u8; len - 1];
            assert!(
                copying
                    .check_chunk_copying(&mem, area, i, &mut |_| false, &mut short)
                    .is_err()
            );
        }
    }
    // ro_after_init: the digest of its raw bytes equals the digest read
    // from memory; a copy of another length is refused.
    let ro = k.ro_after_init.clone();
    let from = (PHYS + ro.start - location.link_text) as usize;
    let raw = &ram[from..from + (ro.end - ro.start) as usize];
    let relocations = &k.reference.relocations;
    assert_eq!(
        ro_after_init_digest_of(raw, &location, ro.clone(), relocations).expect("digest"),
        ro_after_init_digest(&mem, &location, ro.clone(), relocations).expect("digest")
    );
    assert!(ro_after_init_digest_of(&raw[1..], &location, ro, relocations).is_err());
}

/// The boot and frozen digests as their documentation defines them, each
/// computed on its own: SHA-256 over (offset, length, bytes) of each boot
/// site starting in the chunk; the same over the boot sites, then the
/// boot-constant ones; all zero without such sites.
fn documented_digests(
    buf: &[u8],
    b0: u64,
    c0: u64,
    c1: u64,
    s: &PatchSites,
) -> ([u8; 32], [u8; 32]) {
    let hash = |lists: &[&SizedSites]| {
        let mut h = Sha256::new();
        let mut any = false;
        for sites in lists {
            for (&offset, &len) in sites.offsets.as_slice().iter().zip(&sites.lens) {
                if u64::from(offset) < c0 || u64::from(offset) >= c1 {
                    continue;
                }
                let from = (u64::from(offset) - b0) as usize;
                h.update(&buf[from..from + usize::from(len)]);
                any = true;
            }
        }
        if any { h.finalize().into() } else { [0; 32] }
    };
    (hash(&[&s.boot]), hash(&[&s.boot, &s.boot_constants]))
}

#[test]
fn boot_and_frozen_digests_are_what_their_documentation_says() {
    let k = TextKernel::new();
    let sites = &k.reference.sites;
    assert!(!sites.boot.offsets.is_empty() && !sites.boot_constants.offsets.is_empty());
    for slide in [0, SLIDE] {
        let ram = k.ram(PHYS, slide);
        let file = &ram[PHYS as usize..];
        let mut checked = 0;
        for (c0, c1) in [
            (0u64, 0x1000u64),
            (0x1000, 0x2000),
            (0x2000, 0x3000),
            (0x3000, 0x4000),
        ] {
            let c1 = c1.min(k.reference.text.len);
            if c0 >= c1 {
                continue;
            }
            let (boot, frozen) = frozen_digests(file, 0, c0, c1, sites, &mut Vec::new());
            assert_eq!(
                (boot, frozen),
                documented_digests(file, 0, c0, c1, sites),
                "{c0:#x}"
            );
            checked += usize::from(frozen != [0; 32]);
        }
        assert!(checked > 0, "no chunk with sites");
    }
}

#[test]
fn each_site_refuses_what_its_rule_does_not_allow() {
    let k = TextKernel::new();
    let rel = |from: u32, to: u32| (to as i32 - (from as i32 + 5)).to_le_bytes();
    let with = |op: u8, r: [u8; 4]| [op, r[0], r[1], r[2], r[3]];
    let cases: Vec<(SiteKind, u32, Vec<u8>)> = alloc::vec![
        // A return jumping to a function that is no return thunk.
        (
            SiteKind::Return,
            TextKernel::RETURN,
            with(0xe9, rel(TextKernel::RETURN, TextKernel::FUNCTIONS[0])).to_vec(),
        ),
        // An fentry call to something else than the fentry targets.
        (
            SiteKind::Fentry,
            TextKernel::FENTRY,
            with(0xe8, rel(TextKernel::FENTRY, TextKernel::FUNCTIONS[1])).to_vec(),
        ),
        // A static call into the middle of a function, and out of the text.
        (
            SiteKind::Call,
            TextKernel::CALL,
            with(0xe8, rel(TextKernel::CALL, TextKernel::FUNCTIONS[0] + 1)).to_vec(),
        ),
        (
            SiteKind::Call,
            TextKernel::CALL,
            with(0xe8, (-0x1000_0000i32).to_le_bytes()).to_vec(),
        ),
        (SiteKind::Lock, TextKernel::LOCK, alloc::vec![0x90]),
        (SiteKind::Endbr, TextKernel::ENDBR, alloc::vec![0xcc; 4]),
        // Jump labels jumping elsewhere than their target.
        (SiteKind::Jump, TextKernel::JUMP2, alloc::vec![0xeb, 0x00]),
        (
            SiteKind::Jump,
            TextKernel::JUMP5,
            alloc::vec![0xe9, 0, 0, 0, 0]
        ),
    ];
    for (kind, at, bytes) in cases {
        let mut ram = k.ram(PHYS, SLIDE);
        write(&mut ram, u64::from(at), &bytes);
        let outcomes = sweep(&k, &ram, SLIDE);
        let sites: Vec<SiteViolation> = outcomes.iter().flat_map(|o| o.sites.clone()).collect();
        assert_eq!(sites.len(), 1, "{kind:?} at +{at:#x}: {sites:?}");
        assert_eq!((sites[0].kind, sites[0].offset), (kind, at));
        assert_eq!(&sites[0].bytes[..usize::from(sites[0].len)], &bytes[..]);
        // The site's bytes are blanked: no chunk is "modified" for it.
        assert!(outcomes.iter().all(|o| !o.modified), "{kind:?}");
    }
    // Allowed states beyond the booted one: the jump labels on and off,
    // the static call as NOP, return or inlined `return 0`.
    for (at, bytes) in [
        (TextKernel::JUMP5, alloc::vec![0xe9, 0x3b, 0, 0, 0]),
        (TextKernel::JUMP2, NOP2.to_vec()),
        (TextKernel::CALL, NOP5.to_vec()),
        (TextKernel::CALL, RET5.to_vec()),
        (TextKernel::CALL, XOR_EAX5.to_vec()),
    ] {
        let mut ram = k.ram(PHYS, SLIDE);
        write(&mut ram, u64::from(at), &bytes);
        assert_eq!(
            dirty(&sweep(&k, &ram, SLIDE)),
            [],
            "+{at:#x} = {bytes:02x?}"
        );
    }
}

#[test]
fn boot_patched_bytes_are_summarised_not_judged() {
    let k = TextKernel::new();
    let mut ram = k.ram(PHYS, SLIDE);
    let before = sweep(&k, &ram, SLIDE);
    write(&mut ram, u64::from(TextKernel::BOOT), &[0xcc; 10]);
    let after = sweep(&k, &ram, SLIDE);
    assert_eq!(dirty(&after), []);
    assert_ne!(boot_digest(&before), boot_digest(&after));
    assert_ne!(before[0].frozen, after[0].frozen);
    // A boot-patched range that runs into the next chunk belongs to the
    // chunk it starts in, all of its bytes.
    let mut ram = k.ram(PHYS, SLIDE);
    write(&mut ram, u64::from(TextKernel::BOOT2) + 35, &[0xcc]);
    let after = sweep(&k, &ram, SLIDE);
    assert_eq!(dirty(&after), []);
    assert_ne!(before[2].frozen, after[2].frozen);
    assert_eq!(before[3].frozen, after[3].frozen);
    assert_ne!(boot_digest(&before), boot_digest(&after));
    // A run-time constant changes the frozen digest only.
    let mut ram = k.ram(PHYS, SLIDE);
    write(&mut ram, u64::from(TextKernel::CONSTANT), &[1; 8]);
    let after = sweep(&k, &ram, SLIDE);
    assert_eq!(boot_digest(&before), boot_digest(&after));
    assert_ne!(before[0].frozen, after[0].frozen);
}

#[test]
fn unreadable_memory_and_bad_references_are_errors() {
    let k = TextKernel::new();
    // RAM that ends inside the text.
    let ram = k.ram(PHYS, SLIDE);
    let short = &ram[..(PHYS + 0x800) as usize];
    let mem = SliceMemory::flat(short);
    let mut c = TextChecker::new(
        &k.reference,
        k.location(PHYS, SLIDE),
        k.ro_after_init.clone(),
    )
    .expect("checker");
    assert!(matches!(
        c.check_chunk(&mem, Area::Text, 0),
        Err(TextError::Memory(_))
    ));
    assert!(matches!(
        c.check_chunk(&mem, Area::Text, 99),
        Err(TextError::NoChunk { .. })
    ));
    // A kernel located at the top of the address space.
    let mut c = TextChecker::new(
        &k.reference,
        k.location(u64::MAX - 10, SLIDE),
        k.ro_after_init.clone(),
    )
    .expect("checker");
    assert!(c.check_chunk(&mem, Area::Text, 1).is_err());
    // A reference whose text is not at _text, or whose chunk count lies.
    let mut r = k.reference.clone();
    r.text.start += 4096;
    assert!(TextChecker::new(&r, k.location(PHYS, SLIDE), k.ro_after_init.clone()).is_err());
    let mut r = k.reference.clone();
    r.rodata.digests.pop();
    assert!(TextChecker::new(&r, k.location(PHYS, SLIDE), k.ro_after_init.clone()).is_err());
}

#[test]
fn offsets_encode_as_deltas_and_refuse_disorder() {
    let o = Offsets::new(alloc::vec![300, 5, 70_000, 5]);
    assert_eq!(o.as_slice(), [5, 300, 70_000]);
    let deltas: Vec<u32> = o.clone().into();
    assert_eq!(deltas, [5, 295, 69_700]);
    assert_eq!(Offsets::try_from(deltas), Ok(o));
    assert_eq!(Offsets::try_from(alloc::vec![5, 0]), Err(BadOffsets));
    assert_eq!(Offsets::try_from(alloc::vec![u32::MAX, 1]), Err(BadOffsets));
    assert!(Offsets::try_from(alloc::vec![1; MAX_OFFSETS + 1]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random bytes anywhere in the image never panic; a change outside
    /// ro_after_init is always seen (as a modified chunk, a site violation
    /// or a new boot digest) unless it leaves an allowed state.
    #[test]
    fn random_writes_never_panic_and_are_seen(
        at in 0u64..(TextKernel::RODATA + TextKernel::RODATA_LEN),
        bytes in proptest::collection::vec(any::<u8>(), 1..16),
        slide in (0u64..0x4000).prop_map(|s| s << 16),
    ) {
        // The padding between text and rodata is not checked.
        prop_assume!(!(TextKernel::TEXT_LEN..TextKernel::RODATA).contains(&at));
        let k = TextKernel::new();
        let clean = k.ram(PHYS, slide);
        let mut ram = clean.clone();
        let end = ((at + bytes.len() as u64).min(TextKernel::RODATA + TextKernel::RODATA_LEN)) as usize;
        let n = end - at as usize;
        write(&mut ram, at, &bytes[..n]);
        let before = sweep(&k, &clean, slide);
        let after = sweep(&k, &ram, slide);
        let in_ro = (TextKernel::RO_AFTER_INIT..TextKernel::RO_AFTER_INIT + 0x100).contains(&at);
        let changed = ram != clean;
        if changed && !in_ro && dirty(&after).is_empty() {
            // Only boot-patched, constant or re-allowed site bytes may change
            // without a violation.
            let frozen_same = before.iter().zip(&after).all(|(a, b)| a.frozen == b.frozen);
            let site = |o: u32, n: u32| (u64::from(o)..u64::from(o + n)).contains(&at);
            let in_site = site(TextKernel::BOOT2, 40) || site(TextKernel::JUMP2, 2) || site(TextKernel::JUMP5, 5)
                || site(TextKernel::CALL, 5) || site(TextKernel::LOCK, 1)
                || site(TextKernel::RETURN, 5) || site(TextKernel::FENTRY, 5)
                || site(TextKernel::ENDBR, 4);
            prop_assert!(!frozen_same || in_site, "write at +{:#x} unseen", at);
        }
    }

    /// The digests hash the sites' bytes without their offsets and lengths
    /// (the reference fixes those): any change to any byte of a
    /// boot-patched site still changes its chunk's boot and frozen digests,
    /// and of a run-time constant the frozen digest alone.
    #[test]
    fn every_frozen_byte_is_covered(
        pick in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        flip in 1u8..,
        slide in (0u64..0x4000).prop_map(|s| s << 16),
    ) {
        let k = TextKernel::new();
        let sites = &k.reference.sites;
        let all: Vec<(u32, u8, bool)> = [(&sites.boot, true), (&sites.boot_constants, false)]
            .into_iter()
            .flat_map(|(list, boot)| {
                list.offsets.as_slice().iter().zip(&list.lens).map(move |(&o, &n)| (o, n, boot))
            })
            .collect();
        prop_assume!(!all.is_empty());
        let (offset, len, boot) = all[pick.index(all.len())];
        let at = u64::from(offset) + byte.index(usize::from(len)) as u64;
        let clean = k.ram(PHYS, slide);
        let mut ram = clean.clone();
        let i = (PHYS + at) as usize;
        ram[i] ^= flip;
        let chunk = (u64::from(offset) / CHUNK) as usize;
        let (before, after) = (&sweep(&k, &clean, slide)[chunk], &sweep(&k, &ram, slide)[chunk]);
        prop_assert_ne!(before.frozen, after.frozen);
        if boot {
            prop_assert_ne!(before.boot, after.boot);
        } else {
            prop_assert_eq!(before.boot, after.boot);
        }
    }

    /// Arbitrary guest memory: the checker answers or errs, never panics.
    #[test]
    fn arbitrary_memory_never_panics(
        ram in proptest::collection::vec(any::<u8>(), 0..0x9000),
        phys in 0u64..0x2000,
    ) {
        let k = TextKernel::new();
        let mem = SliceMemory::flat(&ram);
        let mut c = TextChecker::new(&k.reference, k.location(phys, SLIDE), k.ro_after_init.clone())
            .expect("checker");
        for area in [Area::Text, Area::Rodata] {
            for i in 0..c.chunks(area) + 1 {
                let _ = c.check_chunk(&mem, area, i);
            }
        }
    }
}

#[test]
fn covers_names_every_byte_of_every_site() {
    let k = TextKernel::new();
    let s = &k.reference.sites;
    for (at, len) in [
        (TextKernel::RETURN, 5),
        (TextKernel::LOCK, 1),
        (TextKernel::ENDBR, 4),
        (TextKernel::JUMP2, 2),
        (TextKernel::JUMP5, 5),
        (TextKernel::BOOT2, 40),
        (TextKernel::CONSTANT, 8),
    ] {
        let at = u64::from(at);
        assert!(!s.covers(at - 1) || at == 0, "+{at:#x} - 1");
        for i in 0..len {
            assert!(s.covers(at + i), "+{:#x}", at + i);
        }
        assert!(!s.covers(at + len), "+{:#x}", at + len);
    }
}

mod trampolines {
    use super::*;
    use crate::paging::{AddressSpace, PagingMode};
    use ftrace::{MODULE_AREA, TrampolineError, check_trampoline};

    /// Page tables and the trampoline page, above the kernel in RAM.
    const TABLES: u64 = 0x30_0000;
    const N: usize = TextKernel::FTRACE_LEN;

    fn kernel() -> TextKernel {
        TextKernel::new().with_ftrace()
    }

    /// The verdict on the trampoline `bytes`, mapped as `writable`.
    fn verdict(
        k: &TextKernel,
        bytes: &[u8],
        writable: bool,
    ) -> Result<ftrace::Trampoline, TrampolineError> {
        let (ram, root) = k.ram_with_trampoline(PHYS, SLIDE, TABLES, bytes, writable);
        let mem = SliceMemory::flat(&ram);
        let space = AddressSpace::new(&mem, root, PagingMode::FourLevel);
        check_trampoline(
            &space,
            &k.reference,
            &k.location(PHYS, SLIDE),
            TextKernel::TRAMPOLINE_VA,
        )
    }

    /// The site violations of a sweep of the RAM whose fentry site calls
    /// the trampoline `bytes`, every module-area target judged by
    /// `check_trampoline`; and the targets the first chunk asked about.
    fn sweep_with(k: &TextKernel, bytes: &[u8]) -> (Vec<SiteViolation>, Vec<u64>) {
        let (ram, root) = k.ram_with_trampoline(PHYS, SLIDE, TABLES, bytes, false);
        let mem = SliceMemory::flat(&ram);
        let space = AddressSpace::new(&mem, root, PagingMode::FourLevel);
        let location = k.location(PHYS, SLIDE);
        let mut c =
            TextChecker::new(&k.reference, location, k.ro_after_init.clone()).expect("checker");
        let mut asked = Vec::new();
        let mut sites = Vec::new();
        let mut targets = Vec::new();
        for i in 0..c.chunks(Area::Text) {
            let mut judge = |t: u64| {
                asked.push(t);
                check_trampoline(&space, &k.reference, &location, t).is_ok()
            };
            let o = c
                .check_chunk_with(&mem, Area::Text, i, &mut judge)
                .expect("readable");
            assert!(!o.modified, "chunk {i}");
            sites.extend(o.sites);
            targets.extend(o.trampolines);
        }
        assert_eq!(asked, targets, "asked once per target and chunk");
        (sites, targets)
    }

    #[test]
    fn a_trampoline_the_kernel_made_passes() {
        let k = kernel();
        let t = k.trampoline(SLIDE);
        let ok = verdict(&k, &t, false).expect("a genuine trampoline");
        assert_eq!(ok.tracer, TextKernel::FUNCTIONS[0]);
        assert_eq!(ok.ops, TextKernel::OPS);
        assert_eq!(ok.template, 0);
        assert_eq!(ok.bytes, t);
        let (sites, targets) = sweep_with(&k, &t);
        assert_eq!(sites, []);
        assert_eq!(targets, [TextKernel::TRAMPOLINE_VA]);
        // The plain check refuses the call.
        let (ram, _) = k.ram_with_trampoline(PHYS, SLIDE, TABLES, &t, false);
        let outcomes = sweep(&k, &ram, SLIDE);
        let refused: Vec<_> = outcomes.iter().flat_map(|o| o.sites.clone()).collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].kind, SiteKind::Fentry);
        assert_eq!(refused[0].offset, TextKernel::FENTRY);
    }

    #[test]
    fn the_other_tails_of_create_trampoline_pass() {
        let k = kernel();
        let base = k.trampoline(SLIDE);
        let with_slot = |tail: &[u8], slot: usize| {
            let mut t = base[..N].to_vec();
            let op = usize::from(TextKernel::FTRACE_OP_PTR);
            let disp = slot as i32 - (op + 7) as i32;
            t[op + 3..op + 7].copy_from_slice(&disp.to_le_bytes());
            t.extend_from_slice(tail);
            t.resize(slot, 0);
            t.extend_from_slice(&TextKernel::OPS.to_le_bytes());
            t
        };
        // RET_SIZE 1 and 2.
        assert_eq!(verdict(&k, &with_slot(&[0xc3], N + 1), false).err(), None);
        assert!(verdict(&k, &with_slot(&[0xc3, 0xcc], N + 2), false).is_ok());
        // The return thunk.
        let thunk = k.link_text + SLIDE + u64::from(TextKernel::THUNK);
        let jmp = |to: u64| {
            let rel = to.wrapping_sub(TextKernel::TRAMPOLINE_VA + N as u64 + 5) as i32;
            let mut j = vec![0xe9];
            j.extend_from_slice(&rel.to_le_bytes());
            j
        };
        assert!(verdict(&k, &with_slot(&jmp(thunk), N + 5), false).is_ok());
        // A jump elsewhere, a slot the tail overlaps, another tail.
        assert_eq!(
            verdict(&k, &with_slot(&jmp(thunk + 1), N + 5), false),
            Err(TrampolineError::Tail)
        );
        let mut early = with_slot(&jmp(thunk), N + 5);
        let op = usize::from(TextKernel::FTRACE_OP_PTR);
        let disp = (N + 2) as i32 - (op + 7) as i32;
        early[op + 3..op + 7].copy_from_slice(&disp.to_le_bytes());
        assert_eq!(verdict(&k, &early, false), Err(TrampolineError::OpsSlot));
        assert_eq!(
            verdict(&k, &with_slot(&[0xc3, 0x90], N + 2), false),
            Err(TrampolineError::Tail)
        );
        assert_eq!(
            verdict(&k, &with_slot(&[0xc3, 0xcc], N + 3), false),
            Err(TrampolineError::OpsSlot)
        );
        assert_eq!(
            verdict(&k, &with_slot(&[0x90], N + 1), false),
            Err(TrampolineError::Tail)
        );
    }

    #[test]
    fn any_byte_of_the_body_changed_is_refused() {
        let k = kernel();
        let t = k.trampoline(SLIDE);
        let op = usize::from(TextKernel::FTRACE_OP_PTR);
        let call = usize::from(TextKernel::FTRACE_CALL);
        for i in 0..N {
            for flip in [0x01, 0x80] {
                let mut bad = t.clone();
                bad[i] ^= flip;
                let v = verdict(&k, &bad, false);
                let own_field = (op + 3..op + 7).contains(&i) || (call + 1..call + 5).contains(&i);
                if own_field {
                    // The displacement or the call target now points
                    // elsewhere.
                    assert!(
                        matches!(
                            v,
                            Err(TrampolineError::OpsSlot | TrampolineError::Tracer(_))
                        ),
                        "byte {i:#x}: {v:?}"
                    );
                } else {
                    assert_eq!(v, Err(TrampolineError::Body(i as u16)), "byte {i:#x}");
                }
            }
        }
        // Inside the live range (the boot-patched NOPs), the running
        // kernel's byte is expected, not the file's.
        let live = (TextKernel::BOOT - TextKernel::FTRACE_START) as usize;
        assert_eq!(t[live], 0x90);
        assert_ne!(
            k.reference.ftrace.as_ref().unwrap().templates[0].bytes[live],
            0x90
        );
        // And the site that calls the changed trampoline is a violation.
        let mut bad = t.clone();
        bad[1] ^= 0x01;
        let (sites, targets) = sweep_with(&k, &bad);
        assert_eq!(sites.len(), 1);
        assert_eq!(
            (sites[0].kind, sites[0].offset),
            (SiteKind::Fentry, TextKernel::FENTRY)
        );
        assert_eq!(targets, [TextKernel::TRAMPOLINE_VA]);
    }

    #[test]
    fn the_tracer_must_be_a_tracer_function_of_the_text() {
        let k = kernel();
        let call = usize::from(TextKernel::FTRACE_CALL);
        let runtime_text = k.link_text + SLIDE;
        let calling = |to: u64| {
            let mut t = k.trampoline(SLIDE);
            let rel = to.wrapping_sub(TextKernel::TRAMPOLINE_VA + call as u64 + 5) as i32;
            t[call + 1..call + 5].copy_from_slice(&rel.to_le_bytes());
            verdict(&k, &t, false)
        };
        // Another function of the text, but no tracer.
        let other = runtime_text + u64::from(TextKernel::FUNCTIONS[1]);
        assert_eq!(calling(other), Err(TrampolineError::Tracer(other)));
        // Outside the text: rodata, the module area, the trampoline itself.
        for to in [
            runtime_text + TextKernel::RODATA + 0x10,
            TextKernel::TRAMPOLINE_VA + 0x1000,
            TextKernel::TRAMPOLINE_VA,
        ] {
            assert_eq!(calling(to), Err(TrampolineError::Tracer(to)));
        }
    }

    #[test]
    fn other_targets_rights_and_ops_are_refused() {
        let k = kernel();
        let t = k.trampoline(SLIDE);
        // Writable: W^X broken.
        assert_eq!(verdict(&k, &t, true), Err(TrampolineError::Rights));
        // The ops pointer: user half, misaligned, into the text.
        let slot = N + 5;
        for ops in [
            0x0000_7fff_0000_1000u64,
            TextKernel::OPS + 4,
            k.link_text + SLIDE + 0x10,
        ] {
            let mut bad = t.clone();
            bad[slot..slot + 8].copy_from_slice(&ops.to_le_bytes());
            assert_eq!(verdict(&k, &bad, false), Err(TrampolineError::Ops(ops)));
        }
        // Another module-area address: unmapped, or mapped but holding
        // something else; and targets outside the module area.
        let (ram, root) = k.ram_with_trampoline(PHYS, SLIDE, TABLES, &t, false);
        let mem = SliceMemory::flat(&ram);
        let space = AddressSpace::new(&mem, root, PagingMode::FourLevel);
        let location = k.location(PHYS, SLIDE);
        let check = |target| check_trampoline(&space, &k.reference, &location, target);
        assert_eq!(
            check(TextKernel::TRAMPOLINE_VA + 0x10_0000),
            Err(TrampolineError::Unreadable)
        );
        let shifted = check(TextKernel::TRAMPOLINE_VA + 8);
        assert!(
            matches!(shifted, Err(TrampolineError::Body(_))),
            "{shifted:?}"
        );
        for target in [
            MODULE_AREA.end,
            MODULE_AREA.start - 1,
            location.runtime_text + 0x100,
        ] {
            assert_eq!(check(target), Err(TrampolineError::OutsideModuleArea));
        }
        // Without templates in the profile: nothing is a trampoline.
        let plain = TextKernel::new();
        let check = |target| check_trampoline(&space, &plain.reference, &location, target);
        assert_eq!(
            check(TextKernel::TRAMPOLINE_VA),
            Err(TrampolineError::NoReference)
        );
    }

    #[test]
    fn a_call_into_the_module_area_is_judged_once_per_chunk() {
        let k = kernel();
        let (ram, _) = k.ram_with_trampoline(PHYS, SLIDE, TABLES, &k.trampoline(SLIDE), false);
        let mem = SliceMemory::flat(&ram);
        let mut c = TextChecker::new(
            &k.reference,
            k.location(PHYS, SLIDE),
            k.ro_after_init.clone(),
        )
        .expect("checker");
        let mut asked = 0;
        let o = c
            .check_chunk_with(&mem, Area::Text, 0, &mut |_| {
                asked += 1;
                true
            })
            .expect("readable");
        assert_eq!((asked, o.sites.len()), (1, 0));
        let o = c
            .check_chunk_with(&mem, Area::Text, 0, &mut |_| false)
            .expect("readable");
        assert_eq!(o.sites.len(), 1);
        assert_eq!(o.trampolines, [TextKernel::TRAMPOLINE_VA]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the trampoline page holds and wherever the call goes,
        /// the check answers without panicking; random bytes never pass.
        #[test]
        fn random_trampolines_never_pass(
            bytes in proptest::collection::vec(any::<u8>(), 0..0x100),
            target in any::<u64>(),
        ) {
            let k = kernel();
            let (ram, root) = k.ram_with_trampoline(PHYS, SLIDE, TABLES, &bytes, false);
            let mem = SliceMemory::flat(&ram);
            let space = AddressSpace::new(&mem, root, PagingMode::FourLevel);
            let location = k.location(PHYS, SLIDE);
            prop_assert!(check_trampoline(&space, &k.reference, &location, TextKernel::TRAMPOLINE_VA).is_err());
            let _ = check_trampoline(&space, &k.reference, &location, target);
        }
    }
}
