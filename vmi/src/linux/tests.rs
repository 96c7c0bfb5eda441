//! The Linux lists on crafted memory: well-formed lists read back exactly;
//! cycles, poisoned links, absurd counts and lengths end in errors.

use alloc::vec::Vec;

use super::*;
use crate::addr::GuestVirtAddr;
use crate::craft::PageTableBuilder;
use crate::list::ListError;
use crate::memory::SliceMemory;
use crate::paging::{AddressSpace, PagingMode};

const DIRECT: u64 = 0xffff_8880_0000_0000;
const RAM: u64 = 0x4_0000;

fn va(phys: u64) -> GuestVirtAddr {
    GuestVirtAddr::new(DIRECT + phys).expect("canonical")
}

/// Guest RAM of 256 KiB mapped at the direct map, tables above it.
fn builder() -> PageTableBuilder {
    let mut b = PageTableBuilder::new(RAM, PagingMode::FourLevel);
    b.map_range(DIRECT, 0, RAM);
    b
}

fn with_space<R>(
    b: &PageTableBuilder,
    f: impl FnOnce(&AddressSpace<'_, SliceMemory<'_>>) -> R,
) -> R {
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
    f(&space)
}

const T: TaskOffsets = TaskOffsets {
    tasks: 0x100,
    pid: 0x200,
    tgid: 0x204,
    comm: 0x300,
    real_parent: 0x208,
    cred: 0x210,
    real_cred: 0x220,
    mm: 0x218,
    flags: 0x22c,
};
const C: CredOffsets = CredOffsets {
    uid: 4,
    gid: 8,
    euid: 20,
    egid: 24,
};

/// Tasks at phys 0x1000 * (i + 1), creds at 0x8000 + 0x100 * i.
fn write_tasks(b: &mut PageTableBuilder, tasks: &[(u32, &str, usize, bool)]) -> Vec<u64> {
    let at: Vec<u64> = (0..tasks.len()).map(|i| 0x1000 * (i as u64 + 1)).collect();
    let n = tasks.len();
    for (i, &(pid, comm, parent, user)) in tasks.iter().enumerate() {
        let t = at[i];
        b.write_u64(t + T.tasks, DIRECT + at[(i + 1) % n] + T.tasks);
        b.write_u64(t + T.tasks + 8, DIRECT + at[(i + n - 1) % n] + T.tasks);
        b.write(t + T.pid, &pid.to_le_bytes());
        b.write(t + T.tgid, &pid.to_le_bytes());
        let mut name = [0u8; 16];
        name[..comm.len()].copy_from_slice(comm.as_bytes());
        b.write(t + T.comm, &name);
        b.write_u64(t + T.real_parent, DIRECT + at[parent]);
        let cred = 0x8000 + 0x100 * i as u64;
        b.write_u64(t + T.cred, DIRECT + cred);
        b.write_u64(t + T.real_cred, DIRECT + cred);
        for (off, v) in [
            (C.uid, 1000 * pid),
            (C.gid, 1000 * pid),
            (C.euid, 0),
            (C.egid, 0),
        ] {
            b.write(cred + off, &v.to_le_bytes());
        }
        b.write_u64(t + T.mm, if user { DIRECT + 0x9000 } else { 0 });
    }
    at
}

#[test]
fn task_list_reads_back() {
    let mut b = builder();
    let at = write_tasks(
        &mut b,
        &[
            (0, "swapper/0", 0, false),
            (1, "init", 0, true),
            (42, "sh", 1, true),
        ],
    );
    with_space(&b, |space| {
        let got: Vec<Task> = tasks(space, va(at[0]), &T, &C, 100)
            .expect("walk")
            .collect::<Result<_, _>>()
            .expect("tasks");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].comm.as_str(), Some("swapper/0"));
        assert!(got[0].is_kernel_thread());
        assert_eq!((got[2].pid, got[2].parent_pid), (42, Some(1)));
        assert_eq!(got[2].comm.as_str(), Some("sh"));
        let creds = got[2].creds.expect("creds");
        assert_eq!((creds.uid, creds.euid), (42_000, 0));
        assert_eq!(got[2].real_cred, Some(creds.address));
        assert_eq!(got[1].parent, Some(va(at[0])));
    });
}

#[test]
fn broken_task_lists_end_in_errors() {
    // sh's next points back at init (a lasso, and a broken back link).
    let mut b = builder();
    let at = write_tasks(
        &mut b,
        &[
            (0, "swapper/0", 0, false),
            (1, "init", 0, true),
            (42, "sh", 1, true),
        ],
    );
    b.write_u64(at[2] + T.tasks, DIRECT + at[1] + T.tasks);
    with_space(&b, |space| {
        let all: Vec<_> = tasks(space, va(at[0]), &T, &C, 100)
            .expect("walk")
            .collect();
        assert!(matches!(
            all.last(),
            Some(Err(StructError::List(ListError::BrokenBackLink { .. })))
        ));
        assert!(all.len() <= 4);
    });
    // A non-canonical cred pointer.
    let mut b = builder();
    let at = write_tasks(&mut b, &[(0, "swapper/0", 0, false), (7, "x", 0, true)]);
    b.write_u64(at[1] + T.cred, 0xdead_0000_0000_0122);
    with_space(&b, |space| {
        let all: Vec<_> = tasks(space, va(at[0]), &T, &C, 100)
            .expect("walk")
            .collect();
        assert_eq!(all.len(), 2);
        assert!(matches!(all[1], Err(StructError::Walk(_))));
    });
    // The count bound.
    let mut b = builder();
    let list: Vec<(u32, &str, usize, bool)> = (0..20).map(|i| (i, "k", 0, false)).collect();
    let at = write_tasks(&mut b, &list);
    with_space(&b, |space| {
        let all: Vec<_> = tasks(space, va(at[0]), &T, &C, 5).expect("walk").collect();
        assert_eq!(all.len(), 7, "init_task, five tasks, the error");
        assert!(matches!(
            all.last(),
            Some(Err(StructError::List(ListError::TooLong { max: 5 })))
        ));
    });
}

const M: ModuleOffsets = ModuleOffsets {
    state: 0,
    list: 8,
    name: 24,
    text_base: 0x140,
    text_size: 0x148,
    taints: 0x150,
};

#[test]
fn module_list_reads_back_and_stops_on_cycles() {
    let mut b = builder();
    // Head at 0x100, modules at 0x2000 and 0x3000.
    let head = 0x100u64;
    let mods = [0x2000u64, 0x3000];
    let node = |m: u64| DIRECT + m + M.list;
    b.write_u64(head, node(mods[0]));
    b.write_u64(head + 8, node(mods[1]));
    b.write_u64(mods[0] + M.list, node(mods[1]));
    b.write_u64(mods[0] + M.list + 8, DIRECT + head);
    b.write_u64(mods[1] + M.list, DIRECT + head);
    b.write_u64(mods[1] + M.list + 8, node(mods[0]));
    for (m, name, size) in [(mods[0], "ext4", 0x5_0000u32), (mods[1], "rootkit", 0x1000)] {
        b.write(m + M.name, name.as_bytes());
        b.write_u64(m + M.text_base, 0xffff_ffff_c000_0000 + m);
        b.write(m + M.text_size, &size.to_le_bytes());
    }
    b.write_u64(mods[1] + M.taints, 1 << 12);
    with_space(&b, |space| {
        let got: Vec<Module> = modules(space, va(head), &M, 64)
            .collect::<Result<_, _>>()
            .expect("modules");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name.as_str(), Some("ext4"));
        assert_eq!(got[1].name.as_str(), Some("rootkit"));
        assert_eq!(got[1].taints, 1 << 12);
        assert_eq!(got[0].text_size, 0x5_0000);
    });
    // The second module points to itself: a cycle, reported.
    b.write_u64(mods[1] + M.list, node(mods[1]));
    with_space(&b, |space| {
        let all: Vec<_> = modules(space, va(head), &M, 64).collect();
        assert!(all.len() <= 3);
        assert!(matches!(all.last(), Some(Err(StructError::List(_)))));
    });
}

/// One ima-ng entry at `e`: queue entry at `q`, digests at `e + 0x100`,
/// descriptor shared at 0x7000, field data at `e + 0x200`.
fn write_ima_entry(b: &mut PageTableBuilder, q: u64, e: u64, path: &str, hash: [u8; 20]) {
    let o = ImaOffsets::LINUX_6;
    b.write_u64(q + o.queue_entry, DIRECT + e);
    b.write(e + o.entry_pcr, &10u32.to_le_bytes());
    b.write_u64(e + o.entry_digests, DIRECT + e + 0x100);
    b.write(e + 0x100, &4u16.to_le_bytes());
    b.write(e + 0x100 + o.tpm_digest_digest, &hash);
    b.write_u64(e + o.entry_template_desc, DIRECT + 0x7000);
    let mut d_ng = b"sha256:\0".to_vec();
    d_ng.extend_from_slice(&[0xab; 32]);
    let mut n_ng = path.as_bytes().to_vec();
    n_ng.push(0);
    let fields = [d_ng, n_ng];
    let mut data_at = e + 0x200;
    let mut total = 0u32;
    for (i, f) in fields.iter().enumerate() {
        let fd = e + o.entry_template_data + i as u64 * o.field_data_size;
        b.write_u64(fd + o.field_data, DIRECT + data_at);
        b.write(fd + o.field_len, &(f.len() as u32).to_le_bytes());
        b.write(data_at, f);
        data_at += 0x100;
        total += 4 + f.len() as u32;
    }
    b.write(e + o.entry_template_data_len, &total.to_le_bytes());
}

fn ima_image() -> (PageTableBuilder, u64, [u64; 2]) {
    let o = ImaOffsets::LINUX_6;
    let mut b = builder();
    // The descriptor: name "ima-ng", two fields.
    b.write_u64(0x7000 + o.desc_name, DIRECT + 0x7100);
    b.write(0x7100, b"ima-ng\0");
    b.write(0x7000 + o.desc_num_fields, &2u32.to_le_bytes());
    let head = 0x200u64;
    let queues = [0x3000u64, 0x3100];
    let node = |q: u64| DIRECT + q + o.queue_later;
    b.write_u64(head, node(queues[0]));
    b.write_u64(head + 8, node(queues[1]));
    b.write_u64(queues[0] + o.queue_later, node(queues[1]));
    b.write_u64(queues[0] + o.queue_later + 8, DIRECT + head);
    b.write_u64(queues[1] + o.queue_later, DIRECT + head);
    b.write_u64(queues[1] + o.queue_later + 8, node(queues[0]));
    let entries = [0x4000u64, 0x5000];
    write_ima_entry(&mut b, queues[0], entries[0], "boot_aggregate", [1; 20]);
    write_ima_entry(&mut b, queues[1], entries[1], "/usr/bin/busybox", [2; 20]);
    (b, head, entries)
}

#[test]
fn ima_list_reads_back() {
    let (b, head, _) = ima_image();
    with_space(&b, |space| {
        let got: Vec<ImaEntry> = measurements(
            space,
            va(head),
            &ImaOffsets::LINUX_6,
            &ImaLimits::default(),
            100,
        )
        .collect::<Result<_, _>>()
        .expect("entries");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].pcr, 10);
        assert_eq!(got[0].template_name, b"ima-ng");
        assert_eq!(got[0].template_hash, [1; 20]);
        assert_eq!(got[1].fields[1], b"/usr/bin/busybox\0");
        assert_eq!(got[1].fields[0].len(), 40);
        let data = got[1].template_data();
        assert_eq!(data[..4], 40u32.to_le_bytes());
        assert_eq!(data.len(), 4 + 40 + 4 + 17);
    });
}

/// A third entry appended to [`ima_image`]'s list, as the kernel does
/// (`list_add_tail`): queue entry at 0x3200, entry at 0x6000.
fn append_third_ima_entry(b: &mut PageTableBuilder, head: u64) -> u64 {
    let o = ImaOffsets::LINUX_6;
    let node = |q: u64| DIRECT + q + o.queue_later;
    let third = 0x3200u64;
    write_ima_entry(b, third, 0x6000, "/usr/sbin/sshd", [3; 20]);
    b.write_u64(0x3100 + o.queue_later, node(third));
    b.write_u64(third + o.queue_later, DIRECT + head);
    b.write_u64(third + o.queue_later + 8, node(0x3100));
    b.write_u64(head + 8, node(third));
    node(third)
}

#[test]
fn a_watcher_reads_only_the_entries_appended_after_the_last_it_took() {
    let o = ImaOffsets::LINUX_6;
    let limits = ImaLimits::default();
    let (mut b, head, _) = ima_image();
    let taken: Vec<ImaEntry> = with_space(&b, |space| {
        measurements(space, va(head), &o, &limits, 100)
            .collect::<Result<_, _>>()
            .expect("entries")
    });
    let last = taken[1].node;
    // Nothing new: the walk from the last entry ends at the head.
    with_space(&b, |space| {
        assert_eq!(
            ima::entries_after(space, va(head), last, &o, &limits, 100).count(),
            0
        );
    });
    let third = append_third_ima_entry(&mut b, head);
    with_space(&b, |space| {
        let new: Vec<ImaEntry> = ima::entries_after(space, va(head), last, &o, &limits, 100)
            .collect::<Result<_, _>>()
            .expect("the new entry");
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].node.value(), third);
        assert_eq!(new[0].template_hash, [3; 20]);
        // The bound counts new entries only.
        assert!(matches!(
            ima::entries_after(space, va(head), last, &o, &limits, 0).next(),
            Some(Err(StructError::List(ListError::TooLong { max: 0 })))
        ));
    });
    // The last entry taken out of the list (`__list_del`, its own links
    // left as they were): the walk from it does not pass unnoticed.
    b.write_u64(0x3000 + o.queue_later, third);
    b.write_u64(0x3200 + o.queue_later + 8, DIRECT + 0x3000 + o.queue_later);
    with_space(&b, |space| {
        assert!(matches!(
            ima::entries_after(space, va(head), last, &o, &limits, 100).next(),
            Some(Err(StructError::List(ListError::BrokenBackLink { .. })))
        ));
    });
}

#[test]
fn a_known_entry_reads_again_only_where_it_was_linked() {
    let o = ImaOffsets::LINUX_6;
    let limits = ImaLimits::default();
    let (mut b, head, _) = ima_image();
    let third = append_third_ima_entry(&mut b, head);
    let nodes: Vec<GuestVirtAddr> = with_space(&b, |space| {
        measurements(space, va(head), &o, &limits, 100)
            .map(|e| e.expect("entry").node)
            .collect()
    });
    assert_eq!(nodes.len(), 3);
    let reread = |b: &PageTableBuilder, prev: GuestVirtAddr, node: GuestVirtAddr| {
        with_space(b, |space| {
            ima::reread_linked(space, prev, node, &o, &limits)
        })
    };
    let hash = |r: Result<ImaEntry, ima::RereadError>| r.map(|e| e.template_hash);
    assert_eq!(hash(reread(&b, va(head), nodes[0])), Ok([1; 20]));
    assert_eq!(hash(reread(&b, nodes[0], nodes[1])), Ok([2; 20]));
    assert_eq!(hash(reread(&b, nodes[1], nodes[2])), Ok([3; 20]));
    // The middle entry taken out (`__list_del`: its own links stay): it
    // still reads from where it was, but the pair after it is broken.
    b.write_u64(nodes[0].value() - DIRECT, third);
    b.write_u64(third - DIRECT + 8, nodes[0].value());
    assert_eq!(
        hash(reread(&b, nodes[1], nodes[2])),
        Err(ima::RereadError::Relinked)
    );
    assert_eq!(
        hash(reread(&b, nodes[0], nodes[1])),
        Err(ima::RereadError::Relinked)
    );
    // A link that does not read is an error, not a pass.
    let (mut b, head, _) = ima_image();
    b.write_u64(head, 0x7fff_0000_0000);
    assert!(matches!(
        reread(&b, va(head), nodes[0]),
        Err(ima::RereadError::Relinked)
    ));
    assert!(matches!(
        reread(
            &b,
            GuestVirtAddr::new(0xffff_8000_dead_0000).expect("canonical"),
            nodes[0]
        ),
        Err(ima::RereadError::Struct(_))
    ));
}

#[test]
fn absurd_ima_entries_are_errors() {
    let o = ImaOffsets::LINUX_6;
    let walk = |b: &PageTableBuilder, head: u64| {
        with_space(b, |space| {
            measurements(space, va(head), &o, &ImaLimits::default(), 100).collect::<Vec<_>>()
        })
    };
    // Too many fields in the descriptor.
    let (mut b, head, _) = ima_image();
    b.write(0x7000 + o.desc_num_fields, &1000u32.to_le_bytes());
    assert!(matches!(
        walk(&b, head).first(),
        Some(Err(StructError::TooLarge { value: 1000, .. }))
    ));
    // A field of 4 GiB - 1.
    let (mut b, head, entries) = ima_image();
    b.write(
        entries[1] + o.entry_template_data + o.field_len,
        &u32::MAX.to_le_bytes(),
    );
    let all = walk(&b, head);
    assert!(all[0].is_ok());
    assert!(matches!(all[1], Err(StructError::TooLarge { .. })));
    // template_data_len that does not match the fields.
    let (mut b, head, entries) = ima_image();
    b.write(entries[0] + o.entry_template_data_len, &7u32.to_le_bytes());
    assert!(walk(&b, head)[0].is_err());
    // NULL digests, a name without NUL.
    let (mut b, head, entries) = ima_image();
    b.write_u64(entries[0] + o.entry_digests, 0);
    assert!(matches!(walk(&b, head)[0], Err(StructError::Null { .. })));
    let (mut b, head, _) = ima_image();
    b.write(0x7100, &[b'x'; 64]);
    assert!(matches!(
        walk(&b, head)[0],
        Err(StructError::Unterminated { .. })
    ));
    // A field data pointer outside RAM.
    let (mut b, head, entries) = ima_image();
    b.write_u64(
        entries[0] + o.entry_template_data + o.field_data,
        DIRECT + 0x100_0000,
    );
    assert!(matches!(walk(&b, head)[0], Err(StructError::Walk(_))));
}

#[test]
fn strings_stop_at_unmapped_pages_only_when_needed() {
    let mut b = builder();
    // "ok" 16 bytes before the end of the mapped RAM (a 64-byte read from
    // there would fail), "okay" without NUL in the last 4 bytes.
    b.write(RAM - 0x10, b"ok\0");
    b.write(RAM - 4, b"okay");
    with_space(&b, |space| {
        assert_eq!(
            structs::read_cstr(space, va(RAM - 0x10), 16),
            Ok(b"ok".to_vec())
        );
        assert!(matches!(
            structs::read_cstr(space, va(RAM - 4), 16),
            Err(StructError::Walk(_))
        ));
        assert_eq!(
            structs::read_cstr(space, va(RAM - 0x10), 1),
            Err(StructError::Unterminated {
                at: va(RAM - 0x10),
                max: 1
            })
        );
    });
}

/// One entry whose template claims 15 fields of 64 KiB, all pointing at
/// the same 64 KiB of RAM (its `template_data_len` agreeing): reading it
/// would take 960 KiB of heap for 64 KiB of guest memory, per entry of the
/// list. No entry is read beyond [`ImaLimits::max_data_len`].
#[test]
fn an_ima_entry_is_not_read_beyond_its_data_limit() {
    let o = ImaOffsets::LINUX_6;
    let (mut b, head, entries) = ima_image();
    let limits = ImaLimits::default();
    let fields = limits.max_fields;
    let len = limits.max_field_len;
    b.write(0x7000 + o.desc_num_fields, &fields.to_le_bytes());
    b.write(0x2_0000, &[0x41; 0x1_0000]);
    let e = entries[0];
    for i in 0..u64::from(fields) {
        let fd = e + o.entry_template_data + i * o.field_data_size;
        b.write_u64(fd + o.field_data, DIRECT + 0x2_0000);
        b.write(fd + o.field_len, &len.to_le_bytes());
    }
    let total = fields * (4 + len);
    b.write(e + o.entry_template_data_len, &total.to_le_bytes());
    let first = with_space(&b, |space| {
        measurements(space, va(head), &o, &limits, 100)
            .next()
            .map(|e| e.map(|e| e.template_data().len()))
    });
    assert!(
        matches!(first, Some(Err(StructError::TooLarge { .. }))),
        "{first:?}"
    );
}

/// A forged IMA list of many entries sharing one template entry of 60 KiB
/// (a few hundred KiB of guest memory in all): the survey keeps at most
/// [`SurveyLimits::max_ima_bytes`] of it (the A-VM's log could hold no
/// more), and says the list did not walk whole.
#[test]
fn a_survey_keeps_a_bounded_part_of_a_forged_ima_list() {
    let profile = crate::craft::sample_profile(4);
    let s = &profile.symbols;
    let text = s.text;
    // _text at 16 MiB, no slide: phys_base is 0.
    let p = 0x100_0000u64;
    let phys = |link: u64| p + (link - text);
    let mut b = PageTableBuilder::new(phys(s.init_top_pgt), PagingMode::FourLevel);
    for off in (0..0x200_0000u64).step_by(0x20_0000) {
        b.map_2m(text + off, p + off, true, false);
    }
    b.write(phys(s.linux_banner), profile.kernel.banner.as_bytes());
    b.write_u64(phys(s.kallsyms_relative_base), text);
    b.write_u64(phys(s.phys_base), 0);
    if let Some(shift) = s.pgdir_shift {
        b.write(phys(shift), &39u32.to_le_bytes());
    }
    // init_task alone, no module.
    let tasks = s.init_task + profile.offsets.task.tasks;
    b.write_u64(phys(tasks), tasks);
    b.write_u64(phys(tasks) + 8, tasks);
    b.write_u64(phys(s.modules), s.modules);
    b.write_u64(phys(s.modules) + 8, s.modules);
    // The shared entry: ima-ng with one 60 KiB field.
    let o = ImaOffsets::LINUX_6;
    let area = text + 0x1c0_0000;
    let (entry, digests, desc, name, data) = (
        area,
        area + 0x100,
        area + 0x200,
        area + 0x300,
        area + 0x1_0000,
    );
    let len = 60u32 << 10;
    b.write(phys(entry) + o.entry_pcr, &10u32.to_le_bytes());
    b.write_u64(phys(entry) + o.entry_digests, digests);
    b.write_u64(phys(entry) + o.entry_template_desc, desc);
    b.write(
        phys(entry) + o.entry_template_data_len,
        &(4 + len).to_le_bytes(),
    );
    b.write_u64(phys(entry) + o.entry_template_data + o.field_data, data);
    b.write(
        phys(entry) + o.entry_template_data + o.field_len,
        &len.to_le_bytes(),
    );
    b.write_u64(phys(desc) + o.desc_name, name);
    b.write(phys(name), b"ima-ng\0");
    b.write(phys(desc) + o.desc_num_fields, &1u32.to_le_bytes());
    b.write(phys(data), &alloc::vec![0x41; len as usize]);
    // 400 queue entries (24 MB of field data as read) at 0x40 apart.
    const N: u64 = 400;
    let head = s.ima_measurements;
    let node = |i: u64| {
        if i == 0 || i > N {
            head
        } else {
            area + 0x2_0000 + 0x40 * i + o.queue_later
        }
    };
    for i in 0..=N {
        b.write_u64(phys(node(i)), node(i + 1));
        b.write_u64(phys(node(i)) + 8, node(if i == 0 { N } else { i - 1 }));
        if i > 0 {
            b.write_u64(phys(node(i) - o.queue_later + o.queue_entry), entry);
        }
    }
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let limits = SurveyLimits::default();
    let found = survey(&mem, mem.layout().regions(), &profile, &limits).expect("located");
    assert_eq!(found.tasks.items.len(), 1);
    assert!(found.tasks.error.is_none() && found.modules.error.is_none());
    let kept: usize = found
        .ima
        .items
        .iter()
        .flat_map(|e| e.fields.iter().map(Vec::len))
        .sum();
    assert!(!found.ima.items.is_empty());
    assert!(
        kept <= (16 << 20) && found.ima.error.is_some(),
        "{} entries, {kept} bytes kept, {:?}",
        found.ima.items.len(),
        found.ima.error
    );
}

/// A forged IMA list of many entries sharing one template entry of 60 KiB
/// (about 100 KiB of guest memory): one walk (the A-VM walks the list every
/// round) reads at most [`ImaLimits::max_list_data`] of template data, not
/// the entry count times what one entry may hold.
#[test]
fn one_walk_of_a_forged_ima_list_reads_a_bounded_amount() {
    let o = ImaOffsets::LINUX_6;
    let mut b = builder();
    let (entry, desc, data) = (0x4000u64, 0x7000u64, 0x2_0000u64);
    let len = 60u32 << 10;
    b.write_u64(desc + o.desc_name, DIRECT + desc + 0x100);
    b.write(desc + 0x100, b"ima-ng\0");
    b.write(desc + o.desc_num_fields, &1u32.to_le_bytes());
    b.write_u64(entry + o.entry_digests, DIRECT + entry + 0x100);
    b.write_u64(entry + o.entry_template_desc, DIRECT + desc);
    b.write(entry + o.entry_template_data_len, &(4 + len).to_le_bytes());
    b.write_u64(entry + o.entry_template_data + o.field_data, DIRECT + data);
    b.write(
        entry + o.entry_template_data + o.field_len,
        &len.to_le_bytes(),
    );
    b.write(data, &alloc::vec![0x41; len as usize]);
    // 600 queue entries: 36 MB of template data as read.
    const N: u64 = 600;
    let head = 0x200u64;
    let node = |i: u64| {
        if i == 0 || i > N {
            head
        } else {
            0x3_0000 + 0x40 * i + o.queue_later
        }
    };
    for i in 0..=N {
        b.write_u64(node(i), DIRECT + node(i + 1));
        b.write_u64(node(i) + 8, DIRECT + node(if i == 0 { N } else { i - 1 }));
        if i > 0 {
            b.write_u64(node(i) - o.queue_later + o.queue_entry, DIRECT + entry);
        }
    }
    let (read, last) = with_space(&b, |space| {
        let mut read = 0usize;
        let mut last = None;
        for e in measurements(space, va(head), &o, &ImaLimits::default(), 1 << 20) {
            match e {
                Ok(e) => read += e.template_data().len(),
                Err(e) => last = Some(e),
            }
        }
        (read, last)
    });
    assert!(
        read <= 32 << 20 && matches!(last, Some(StructError::TooLarge { .. })),
        "{read} bytes read, {last:?}"
    );
}
