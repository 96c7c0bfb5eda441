use super::*;
use crate::craft::sample_profile;

fn encoded() -> Vec<u8> {
    sample_profile(8).encode().expect("encodes")
}

#[test]
fn round_trip_and_digest() {
    let p = sample_profile(451);
    let bytes = p.encode().expect("encodes");
    assert_eq!(&bytes[..8], b"AVMKPROF");
    assert_eq!(&bytes[8..10], &FORMAT_VERSION.to_le_bytes());
    assert_eq!(KernelProfile::decode(&bytes), Ok(p.clone()));
    assert_eq!(p.digest(), Ok(digest(&bytes)));
    // Any change of content changes the digest.
    let mut q = p.clone();
    q.offsets.task.comm += 8;
    assert_ne!(q.digest(), p.digest());
    let image = p.kernel_image();
    assert_eq!(image.link_text, p.symbols.text);
    assert_eq!(image.banner, p.kernel.banner.as_bytes());
    assert_eq!(p.syscall_count(), 451);
    assert_eq!(p.symbols.named().len(), 23);
}

#[test]
fn headers_and_framing_are_checked() {
    let good = encoded();
    assert_eq!(KernelProfile::decode(&[]), Err(ProfileError::Truncated));
    assert_eq!(
        KernelProfile::decode(&good[..9]),
        Err(ProfileError::Truncated)
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(KernelProfile::decode(&bad), Err(ProfileError::BadMagic));
    // Another version (the one before this, whose profiles had no text
    // reference, included).
    for version in [FORMAT_VERSION - 1, FORMAT_VERSION + 1] {
        let mut other = good.clone();
        other[8..10].copy_from_slice(&version.to_le_bytes());
        assert_eq!(
            KernelProfile::decode(&other),
            Err(ProfileError::UnsupportedVersion(version))
        );
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        KernelProfile::decode(&long),
        Err(ProfileError::TrailingBytes(1))
    );
    let huge = vec![0u8; MAX_PROFILE_LEN + 1];
    assert!(matches!(
        KernelProfile::decode(&huge),
        Err(ProfileError::TooLarge { .. })
    ));
    // Every proper prefix fails, without panicking.
    for n in 0..good.len() {
        assert!(KernelProfile::decode(&good[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn overlong_varints_are_not_canonical() {
    let good = encoded();
    // The body starts with the release's length (20): as an overlong
    // two-byte varint it still decodes to the same profile, but another
    // encoding would give another digest.
    assert_eq!(good[10], 20);
    let mut overlong = good[..10].to_vec();
    overlong.extend_from_slice(&[0x80 | 20, 0x00]);
    overlong.extend_from_slice(&good[11..]);
    assert_eq!(
        KernelProfile::decode(&overlong),
        Err(ProfileError::NotCanonical)
    );
    // Measured bytes decode as what they say (their digest differs).
    let profile = KernelProfile::decode(&good).expect("decodes");
    assert_eq!(KernelProfile::decode_measured(&overlong), Ok(profile));
    assert_ne!(digest(&overlong), digest(&good));
}

#[test]
fn invalid_contents_are_refused() {
    type Change = fn(&mut KernelProfile);
    let cases: Vec<(&str, Change)> = vec![
        ("empty release", |p| p.kernel.release.clear()),
        ("banner without release", |p| {
            p.kernel.release = "6.12.0".into();
        }),
        ("banner without newline", |p| {
            p.kernel.banner.pop();
        }),
        ("control character", |p| p.kernel.version.push('\u{1b}')),
        ("long banner", |p| {
            p.kernel.banner = format!("Linux version {} {}\n", p.kernel.release, "x".repeat(600));
        }),
        ("symbol in user space", |p| p.symbols.init_task = 0x1000),
        ("unaligned _text", |p| p.symbols.text += 0x1000),
        ("etext before text", |p| p.symbols.etext = p.symbols.text),
        ("_end in the rodata", |p| {
            p.symbols.end = p.symbols.end_rodata
        }),
        ("_end past the image mapping", |p| {
            p.symbols.end = 0xffff_ffff_c000_1000
        }),
        ("table outside rodata", |p| {
            p.symbols.sys_call_table = p.symbols.end_rodata;
            p.syscalls.address = p.symbols.end_rodata;
        }),
        ("table address mismatch", |p| p.syscalls.address += 8),
        ("no slots", |p| p.syscalls.slots.clear()),
        ("too many slots", |p| {
            let slot = p.syscalls.slots[0].clone();
            p.syscalls.slots = vec![slot; MAX_SYSCALLS + 1];
        }),
        ("handler outside text", |p| {
            p.syscalls.slots[3].address = p.symbols.start_rodata;
        }),
        ("empty handler name", |p| p.syscalls.slots[0].name.clear()),
        ("comm past task_struct", |p| {
            p.offsets.task.comm = p.offsets.sizes.task_struct - 8;
        }),
        ("huge offset", |p| p.offsets.cred.uid = u64::MAX),
        ("huge struct", |p| {
            p.offsets.sizes.module = MAX_STRUCT_SIZE + 1
        }),
        ("ima offset", |p| p.offsets.ima.desc_name = 1 << 20),
        ("ima field size", |p| p.offsets.ima.field_data_size = 0),
        ("text region not at _text", |p| {
            let mut t = sample_text(p);
            t.text.start += 4096;
            p.text_reference = Some(t);
        }),
        ("text chunk count", |p| {
            let mut t = sample_text(p);
            t.text.digests.pop();
            p.text_reference = Some(t);
        }),
        ("rodata past __end_rodata", |p| {
            let mut t = sample_text(p);
            t.rodata.len = p.symbols.end_rodata - p.symbols.start_rodata + 4096;
            t.rodata.digests = vec![[0; 32]; t.rodata.len.div_ceil(4096) as usize];
            p.text_reference = Some(t);
        }),
        ("jump label lists differ", |p| {
            let mut t = sample_text(p);
            t.sites.jumps.offsets = Offsets::new(vec![16]);
            p.text_reference = Some(t);
        }),
        ("patch site past _etext", |p| {
            let mut t = sample_text(p);
            t.sites.returns = Offsets::new(vec![(p.symbols.etext - p.symbols.text) as u32 - 2]);
            p.text_reference = Some(t);
        }),
        ("ftrace template field", |p| {
            let mut t = sample_text(p);
            let mut f = sample_ftrace();
            f.templates[0].op_ptr = 1;
            t.ftrace = Some(f);
            p.text_reference = Some(t);
        }),
        ("ftrace template past _etext", |p| {
            let mut t = sample_text(p);
            let mut f = sample_ftrace();
            f.templates[0].start = (p.symbols.etext - p.symbols.text) as u32 - 8;
            t.ftrace = Some(f);
            p.text_reference = Some(t);
        }),
        ("ftrace live range", |p| {
            let mut t = sample_text(p);
            let mut f = sample_ftrace();
            f.templates[0].live = vec![(30, 10)];
            t.ftrace = Some(f);
            p.text_reference = Some(t);
        }),
        ("ftrace tracers out of order", |p| {
            let mut t = sample_text(p);
            let mut f = sample_ftrace();
            f.tracers = vec![0x20, 0x10];
            t.ftrace = Some(f);
            p.text_reference = Some(t);
        }),
        ("idt vectors out of order", |p| {
            let entry = NamedAddress {
                name: "asm_exc_divide_error".into(),
                address: p.symbols.text + 0x100,
            };
            p.idt = Some(IdtReference {
                gates: vec![(3, entry.clone()), (3, entry)],
                attributes: Vec::new(),
                early_handlers: Vec::new(),
            });
        }),
        ("idt attributes not one per gate", |p| {
            let entry = NamedAddress {
                name: "asm_exc_divide_error".into(),
                address: p.symbols.text + 0x100,
            };
            p.idt = Some(IdtReference {
                gates: vec![(0, entry)],
                attributes: vec![0x8e00, 0x8e00],
                early_handlers: Vec::new(),
            });
        }),
        ("idt attributes of an absent gate", |p| {
            let entry = NamedAddress {
                name: "asm_exc_divide_error".into(),
                address: p.symbols.text + 0x100,
            };
            p.idt = Some(IdtReference {
                gates: vec![(0, entry)],
                attributes: vec![0x0e00],
                early_handlers: Vec::new(),
            });
        }),
    ];
    for (what, change) in cases {
        let mut p = sample_profile(8);
        change(&mut p);
        assert!(
            matches!(p.validate(), Err(ProfileError::Invalid(_))),
            "{what}: {:?}",
            p.validate()
        );
        assert!(p.encode().is_err(), "{what} encodes");
        // Its encoding, forced past the check, does not decode either.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let bytes = postcard::to_extend(&p, bytes).expect("postcard");
        assert!(KernelProfile::decode(&bytes).is_err(), "{what} decodes");
    }
    // A well-formed text reference is accepted, and round-trips, with
    // ftrace templates too.
    let mut p = sample_profile(8);
    p.text_reference = Some(sample_text(&p));
    assert_eq!(p.validate(), Ok(()));
    let bytes = p.encode().expect("encodes");
    assert_eq!(KernelProfile::decode(&bytes), Ok(p.clone()));
    if let Some(t) = p.text_reference.as_mut() {
        t.ftrace = Some(sample_ftrace());
    }
    assert_eq!(p.validate(), Ok(()));
    let bytes = p.encode().expect("encodes");
    assert_eq!(KernelProfile::decode(&bytes), Ok(p));
    // A well-formed IDT section is accepted.
    let mut p = sample_profile(8);
    p.idt = Some(IdtReference {
        gates: vec![(
            0,
            NamedAddress {
                name: "asm_exc_divide_error".into(),
                address: p.symbols.text + 0x100,
            },
        )],
        attributes: vec![0x8e00],
        early_handlers: Vec::new(),
    });
    assert_eq!(p.validate(), Ok(()));
    // Early handlers: none, or one per exception vector.
    if let Some(idt) = p.idt.as_mut() {
        idt.early_handlers = vec![p.symbols.end_rodata + 0x1000; 31];
    }
    assert!(p.validate().is_err());
    if let Some(idt) = p.idt.as_mut() {
        idt.early_handlers.push(p.symbols.end_rodata + 0x2000);
    }
    assert_eq!(p.validate(), Ok(()));
}

/// A valid (empty) text reference for [`sample_profile`]'s symbols.
fn sample_text(p: &KernelProfile) -> TextReference {
    use crate::linux::text::{PatchSites, Region, Relocations};
    let text_len = p.symbols.etext - p.symbols.text;
    TextReference {
        text: Region {
            start: p.symbols.text,
            len: text_len,
            digests: vec![[0; 32]; text_len.div_ceil(4096) as usize],
        },
        rodata: Region {
            start: p.symbols.start_rodata,
            len: 4096,
            digests: vec![[0; 32]],
        },
        relocations: Relocations::default(),
        sites: PatchSites::default(),
        functions: Offsets::default(),
        return_thunks: vec![],
        fentry_targets: vec![],
        ftrace: None,
    }
}

/// A valid ftrace template (32 bytes at `_text + 0x100`, the ops load at 4,
/// the call at 16) and two tracer functions.
fn sample_ftrace() -> crate::linux::text::ftrace::FtraceReference {
    use crate::linux::text::ftrace::{FtraceReference, Template};
    let mut bytes = vec![0x90; 32];
    bytes[4..7].copy_from_slice(&[0x48, 0x8b, 0x15]);
    bytes[16] = 0xe8;
    FtraceReference {
        templates: vec![Template {
            start: 0x100,
            bytes,
            live: vec![(24, 4)],
            op_ptr: 4,
            call: 16,
            direct_jmp: None,
        }],
        tracers: vec![0x10, 0x20],
    }
}

/// The structures decoded with `crate::words` (not the derive) read each
/// member from its place: members of distinct values, decoded and encoded
/// again (by the derived encoder, in declaration order), give the same
/// bytes; two members read in each other's place would swap them. Cut
/// short, each is an error.
#[test]
fn structures_decoded_by_runs_of_words_keep_their_member_order() {
    use crate::linux::crossview::CrossViewReference;
    use crate::linux::{CredOffsets, ImaOffsets, ModuleOffsets, PathOffsets, TaskOffsets};
    use serde::{Serialize, de::DeserializeOwned};

    fn same<T: Serialize + DeserializeOwned + fmt::Debug>(bytes: &[u8]) {
        let name = core::any::type_name::<T>();
        let value: T = postcard::from_bytes(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = postcard::to_allocvec(&value).expect("encodes");
        assert_eq!(again, bytes, "{name}: {value:?}");
        for cut in 0..bytes.len() {
            assert!(
                postcard::from_bytes::<T>(&bytes[..cut]).is_err(),
                "{name} {cut}"
            );
        }
    }
    // Distinct values below 128: one byte each.
    let words = |from: u8, n: u8| (from..from + n).collect::<Vec<u8>>();
    same::<TaskOffsets>(&words(1, 9));
    same::<CredOffsets>(&words(1, 4));
    same::<ModuleOffsets>(&words(1, 6));
    same::<ImaOffsets>(&words(1, 13));
    same::<PathOffsets>(&words(1, 12));
    same::<StructSizes>(&words(1, 7));
    // 9 words, `ia32_sys_call` Some(100), 10 words, `pgdir_shift`
    // Some(101), 2 words.
    let symbols = [
        words(1, 9),
        vec![1, 100],
        words(10, 10),
        vec![1, 101],
        words(20, 2),
    ]
    .concat();
    same::<KernelSymbols>(&symbols);
    // 8 words, no pointer tables, 68 words, `pgd_user_copy` true.
    let cross = [words(1, 8), vec![0], words(9, 68), vec![1]].concat();
    same::<CrossViewReference>(&cross);
    // One pointer table between the runs.
    let table = postcard::to_allocvec(&alloc::vec![crate::linux::crossview::PointerTable {
        name: "tty_ldiscs".into(),
        address: 0xffff_ffff_8200_0000,
        entries: 30,
        structure: false,
        pointee_entries: 12,
        functions: alloc::vec![1, 3],
        hook_points: false,
    }])
    .expect("encodes");
    let cross = [words(1, 8), table, words(9, 68), vec![0]].concat();
    same::<CrossViewReference>(&cross);
}
