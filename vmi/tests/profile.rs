//! Property tests of the kernel profile format: random profiles round-trip
//! and their digest names their bytes; random, mutated, truncated and
//! oversized inputs are refused or decode to a profile that re-encodes to
//! exactly those bytes; never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use vmi::craft::sample_profile;
use vmi::profile::{
    FORMAT_VERSION, KernelProfile, MAGIC, MAX_PROFILE_LEN, MAX_SYSCALLS, NamedAddress,
    ProfileError, digest,
};

/// Whatever `decode` says about `bytes`, it holds up: an accepted profile
/// validates and is exactly these bytes.
fn decode_holds(bytes: &[u8]) -> Result<KernelProfile, ProfileError> {
    let result = KernelProfile::decode(bytes);
    // The A-VM's decoder accepts at least as much, and the same content.
    let measured = KernelProfile::decode_measured(bytes);
    match (&result, &measured) {
        (Ok(p), m) => assert_eq!(m.as_ref(), Ok(p)),
        (Err(ProfileError::NotCanonical), m) => assert!(m.is_ok()),
        (Err(e), m) => assert_eq!(m.as_ref(), Err(e)),
    }
    if let Ok(p) = &result {
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.encode().as_deref(), Ok(bytes));
        assert_eq!(p.digest(), Ok(digest(bytes)));
    }
    result
}

fn header() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    v
}

/// Random profiles within the format's bounds: slot counts, handler names
/// and addresses, offsets inside their structs.
fn profiles() -> impl Strategy<Value = KernelProfile> {
    (
        1usize..=MAX_SYSCALLS,
        prop::collection::vec(("[a-z_]{1,40}", 0u64..0xe0_0000), 1..32),
        (0u64..0x2600 - 16, 0u64..0xb0 - 4, 0u64..0x380 - 56),
        "[0-9a-z.+-]{1,40}",
    )
        .prop_map(|(slots, handlers, (task, cred, module), release)| {
            let mut p = sample_profile(slots);
            for (i, slot) in p.syscalls.slots.iter_mut().enumerate() {
                let (name, off) = &handlers[i % handlers.len()];
                *slot = NamedAddress {
                    name: format!("__x64_sys_{name}"),
                    address: p.symbols.text + off,
                };
            }
            p.offsets.task.comm = task;
            p.offsets.cred.euid = cred;
            p.offsets.module.name = module;
            let rest = p
                .kernel
                .banner
                .strip_prefix(&format!("Linux version {} ", p.kernel.release))
                .unwrap()
                .to_string();
            p.kernel.banner = format!("Linux version {release} {rest}");
            p.kernel.release = release;
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_profiles_round_trip(p in profiles()) {
        let bytes = p.encode().unwrap();
        prop_assert!(bytes.len() <= MAX_PROFILE_LEN);
        prop_assert_eq!(decode_holds(&bytes), Ok(p.clone()));
        prop_assert_eq!(p.digest(), Ok(digest(&bytes)));
    }

    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_holds(&bytes);
    }

    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = header();
        bytes.extend_from_slice(&body);
        let _ = decode_holds(&bytes);
    }

    /// Bit flips, byte changes, cuts and insertions anywhere in a real-size
    /// encoding (451 slots).
    #[test]
    fn mutated_profiles_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in any::<prop::sample::Index>(),
        insert in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        truncate in any::<bool>(),
    ) {
        let good = sample_profile(451).encode().unwrap();
        let mut bytes = good.clone();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some((at, b)) = insert {
            let i = at.index(bytes.len());
            bytes.insert(i, b);
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(p) = decode_holds(&bytes) {
            // Something else that is still a valid profile: then it is
            // another profile with another digest.
            prop_assert_ne!(digest(&bytes), digest(&good));
            prop_assert_ne!(p, sample_profile(451));
        }
    }

    #[test]
    fn truncated_profiles_are_refused(cut in any::<prop::sample::Index>()) {
        let good = sample_profile(64).encode().unwrap();
        let n = cut.index(good.len());
        prop_assert!(KernelProfile::decode(&good[..n]).is_err());
    }

    #[test]
    fn oversized_inputs_are_refused(extra in 1usize..4096, fill in any::<u8>()) {
        let mut bytes = sample_profile(8).encode().unwrap();
        bytes.resize(MAX_PROFILE_LEN + extra, fill);
        prop_assert_eq!(
            KernelProfile::decode(&bytes),
            Err(ProfileError::TooLarge { len: MAX_PROFILE_LEN + extra, max: MAX_PROFILE_LEN })
        );
    }
}

/// A body claiming far more slots than it holds (a varint count of 2^32)
/// fails on the input, without allocating for the claim.
#[test]
fn absurd_counts_are_refused() {
    let good = sample_profile(8).encode().unwrap();
    let p = sample_profile(8);
    // The slot count (8) follows the table address in the encoding: find
    // the table address's varint and replace the count after it.
    let mut address = Vec::new();
    let mut v = p.syscalls.address;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            address.push(b);
            break;
        }
        address.push(b | 0x80);
    }
    let at = good
        .windows(address.len() + 1)
        .position(|w| w[..address.len()] == address[..] && w[address.len()] == 8)
        .expect("table address and slot count")
        + address.len();
    for count in [
        [0x80, 0x80, 0x80, 0x80, 0x10],
        [0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        let mut bytes = good[..at].to_vec();
        bytes.extend_from_slice(&count);
        bytes.extend_from_slice(&good[at + 1..]);
        assert!(KernelProfile::decode(&bytes).is_err());
    }
    // And the same count with too many real slots is refused by bound.
    let mut p = sample_profile(8);
    let slot = p.syscalls.slots[0].clone();
    p.syscalls.slots = vec![slot; MAX_SYSCALLS + 1];
    assert!(matches!(p.encode(), Err(ProfileError::Invalid(_))));
}

/// A pointer table's function words are ascending, none twice, each a word
/// of the structure they describe (the table's own for a structure, its
/// pointee's for an array): anything else is refused.
#[test]
fn pointer_table_function_words_are_checked() {
    use vmi::linux::crossview::PointerTable;
    let with = |structure: bool, functions: Vec<u32>| {
        let mut p = sample_profile(8);
        let address = p.symbols.text + 0x1000;
        let mut cross = vmi::craft::SETUID_REFERENCE;
        (cross.module_kset, cross.init_cred) = (address + 0x100, address + 0x200);
        cross.init_pid_ns = address + 0x500;
        (cross.per_cpu_offset, cross.nr_cpu_ids) = (address + 0x600, address + 0x700);
        cross.css_set_table = address + 0x800;
        cross.vmap_area_list = address + 0x900;
        cross.pointer_tables = vec![PointerTable {
            name: "tty_ldiscs".into(),
            address,
            entries: if structure { 4 } else { 31 },
            structure,
            pointee_entries: if structure { 0 } else { 4 },
            functions,
            hook_points: false,
        }];
        p.cross_view = Some(cross);
        p.encode()
    };
    for structure in [false, true] {
        let bytes = with(structure, vec![0, 2, 3]).expect("valid function words");
        assert_eq!(
            KernelProfile::decode(&bytes)
                .map(|p| p.cross_view.unwrap().pointer_tables[0].functions.clone()),
            Ok(vec![0, 2, 3])
        );
        assert!(with(structure, vec![]).is_ok());
        for bad in [vec![2, 0], vec![1, 1], vec![4], vec![0, u32::MAX]] {
            assert!(
                matches!(with(structure, bad.clone()), Err(ProfileError::Invalid(_))),
                "{structure} {bad:?}"
            );
        }
    }
}

/// A profile with netfilter hook points says where every network
/// namespace is: the list and `init_net` in the image, the members within
/// a structure, each table of hook points within `init_net`'s.
#[test]
fn netfilter_namespaces_are_checked() {
    use vmi::linux::crossview::{CrossViewReference, PointerTable};
    let with = |edit: &dyn Fn(&mut CrossViewReference)| {
        let mut p = sample_profile(8);
        let base = p.symbols.text + 0x1000;
        let mut cross = vmi::craft::SETUID_REFERENCE;
        (cross.module_kset, cross.init_cred) = (base + 0x100, base + 0x200);
        cross.init_pid_ns = base + 0x500;
        (cross.per_cpu_offset, cross.nr_cpu_ids) = (base + 0x600, base + 0x700);
        cross.css_set_table = base + 0x800;
        cross.vmap_area_list = base + 0x900;
        (cross.net_namespace_list, cross.init_net) = (base + 0x300, base + 0x400);
        (cross.net_list, cross.net_inum) = (0x90, 0xa8);
        (cross.net_dev_base_head, cross.netdev_dev_list) = (0xb0, 0x50);
        (cross.netdev_nf_hooks_ingress, cross.netdev_nf_hooks_egress) = (0x900, 0x380);
        cross.pointer_tables = vec![PointerTable {
            name: "nf_hooks_ipv4".into(),
            address: base + 0x400 + 0x788,
            entries: 5,
            structure: false,
            pointee_entries: 0,
            functions: Vec::new(),
            hook_points: true,
        }];
        edit(&mut cross);
        p.cross_view = Some(cross);
        p.encode()
    };
    let bytes = with(&|_| {}).expect("a valid profile");
    let cross = KernelProfile::decode(&bytes).unwrap().cross_view.unwrap();
    assert_eq!((cross.net_list, cross.net_inum), (0x90, 0xa8));
    // (With the PID table's root and node layout among them.)
    let bad: [&dyn Fn(&mut CrossViewReference); 22] = [
        &|c| c.init_pid_ns = 0,
        &|c| c.vmap_area_list = 0,
        &|c| c.vmap_nodes = c.vmap_area_list,
        &|c| c.cached_stacks = 1 << 30,
        &|c| c.task_stack = 1 << 20,
        &|c| {
            (c.vmap_nodes, c.vmap_area_list) = (c.vmap_area_list, 0);
            c.nr_vmap_nodes = 0;
        },
        &|c| c.css_set_table = 0,
        &|c| c.task_cg_list = 1 << 20,
        &|c| c.per_cpu_offset = 0,
        &|c| c.nr_cpu_ids = 0,
        &|c| c.runqueues = 1 << 30,
        &|c| c.xa_node_slots = 0x29,
        &|c| c.pid_tasks = 1 << 20,
        &|c| c.task_pid_links = 1 << 20,
        &|c| c.netdev_nf_hooks_ingress = 0x901,
        &|c| c.net_dev_base_head = 1 << 20,
        &|c| c.net_namespace_list = 0,
        &|c| c.init_net = 0x1000,
        &|c| c.net_list = 0x91,
        &|c| c.net_inum = 1 << 20,
        &|c| c.pointer_tables[0].address = c.init_net - 8,
        &|c| c.pointer_tables[0].address = c.init_net + (1 << 20),
    ];
    for (i, edit) in bad.iter().enumerate() {
        assert!(
            matches!(with(edit), Err(ProfileError::Invalid(_))),
            "edit {i}"
        );
    }
    // Without hook points nothing is read from them.
    assert!(
        with(&|c| {
            c.pointer_tables.clear();
            c.net_namespace_list = 0;
        })
        .is_ok()
    );
}
