//! A decoy kernel (docs/monitoring.md, "Which kernel runs"): a rootkit
//! copies the running kernel's image elsewhere in RAM, its `phys_base`
//! adjusted so that it reads as a kernel loaded there, for the A-VM to
//! take for the rebooted Mon-VM's kernel while the real one runs on,
//! unwatched. The test writes such a copy through the RAM file into a
//! range the Mon-VM's kernel was told to leave alone (`memmap=...$...`,
//! so the Mon-VM keeps running), as the rootkit would from inside:
//! - the A-VM takes it for a reboot (a `reboot` event: whatever a guest
//!   makes it reset is on record);
//! - the kernel left behind keeps ticking: `decoy` violation
//!   `left-behind-kernel-running@PHYS`, although the rootkit also changed
//!   a byte of its banner (so that it no longer reads as a kernel image):
//!   it counts on along the clock it counted by while watched;
//! - the copy's page tables still map the image onto the real one: `text`
//!   violation `remapped@...`;
//! - nobody runs the copy, so its tick count stands still: `decoy`
//!   violation `watched-kernel-stalled` after 30 s.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{BOOT_TIMEOUT, avm_events, console_sh, wait_for_avm_serial};
use vmi::memory::GuestMemory;

/// The reserved range the copy goes to (2 MiB-aligned, as a kernel's
/// load address is), in a Mon-VM of [`RAM_MIB`].
const DECOY_AT: u64 = 0x1000_0000;
const RESERVED_MIB: u64 = 128;
const RAM_MIB: u64 = 512;

fn hex(value: &str) -> u64 {
    u64::from_str_radix(value.trim_start_matches("0x"), 16).expect("hex")
}

/// A symbol's runtime address, as the Mon-VM's own kernel tells root.
fn kallsyms(console: &mut MonVmConsole, name: &str) -> u64 {
    let out = console_sh(console, &format!("grep ' {name}$' /proc/kallsyms"));
    hex(out.split_whitespace().next().expect("an address"))
}

#[test]
fn a_decoy_copy_of_the_6_1_kernel_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = avm_qemu::testing::tcg_config(dir.path());
    let mut monvm = avm_qemu::testing::monvm_config("6.1", RAM_MIB);
    monvm
        .extra_cmdline
        .push(format!("memmap={RESERVED_MIB}M${DECOY_AT:#x}"));
    config.monvm = Some(monvm);
    let node = avm_qemu::Node::up_on_free_port(&config, BOOT_TIMEOUT)
        .unwrap_or_else(|err| panic!("node did not come up: {err}"));
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        Duration::from_secs(60),
    )
    .expect("console");
    assert_eq!(avm_events(&record), Vec::<String>::new(), "clean node");
    // Long enough for the A-VM to learn the kernel's tick rate
    // (vmi::linux::liveness::RATE_SPAN_US), as on any node up for a while.
    std::thread::sleep(Duration::from_micros(
        vmi::linux::liveness::RATE_SPAN_US + 1_000_000,
    ));

    // The running image, _text.._end (text, data, bss), as it is now.
    let text = kallsyms(&mut console, "_text");
    let end = kallsyms(&mut console, "_end");
    let len = (end - text).div_ceil(0x1000) * 0x1000;
    assert!(len <= RESERVED_MIB << 20, "image of {len} bytes");
    let layout = vmi::RamLayout::parse_cmdline(record.monvm_ram_layout.as_deref().expect("layout"))
        .expect("layout parses");
    let ram = record.monvm_ram.clone().expect("a RAM file");
    let memory = vmi::file::FileMemory::open(&ram, layout).expect("RAM file");
    let profile = vmi::profile::KernelProfile::decode(
        &std::fs::read(record.monvm_profile.as_ref().expect("profile")).expect("profile"),
    )
    .expect("profile decodes");
    let location = vmi::linux::view(&memory, layout.regions(), &profile)
        .expect("kernel")
        .location;
    assert_eq!(location.runtime_text, text);
    let phys_text = location.phys_text.value();
    let mut image = vec![0u8; len as usize];
    memory.read(location.phys_text, &mut image).expect("image");
    // Loaded at DECOY_AT instead: `phys_base` moves with it.
    let at = (profile.symbols.phys_base - profile.symbols.text) as usize;
    let phys_base = u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"));
    // (KASLR may have put the kernel above the reserved range or below.)
    let moved = phys_base.wrapping_add(DECOY_AT).wrapping_sub(phys_text);
    image[at..at + 8].copy_from_slice(&moved.to_le_bytes());
    let (offset, room) = layout
        .locate(vmi::GuestPhysAddr(DECOY_AT))
        .expect("the reserved range is RAM");
    assert!(room >= len);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&ram)
        .expect("RAM file writable");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&image).expect("decoy written");
    // The real kernel's banner no longer its own ("linux version"): to a
    // search of RAM it is not a kernel image any more.
    let banner = phys_text + (profile.symbols.linux_banner - profile.symbols.text);
    let (banner_offset, _) = layout
        .locate(vmi::GuestPhysAddr(banner))
        .expect("the banner is in RAM");
    assert_eq!(image[(banner - phys_text) as usize], b'L');
    file.seek(SeekFrom::Start(banner_offset)).expect("seek");
    file.write_all(b"l").expect("banner changed");
    file.flush().expect("flushed");

    wait_for_avm_serial(&record, ":reboot:slide ");
    wait_for_avm_serial(
        &record,
        &format!(":violation:decoy:left-behind-kernel-running@{phys_text:#x}"),
    );
    wait_for_avm_serial(&record, ":violation:text:remapped@");
    // The Mon-VM runs on, on the real kernel.
    assert_eq!(console_sh(&mut console, "echo alive").trim(), "alive");
    // 30 s without a tick from the switch on.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !avm_events(&record)
        .iter()
        .any(|e| e.contains(":violation:decoy:watched-kernel-stalled"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no stall reported: {:#?}",
            avm_events(&record)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = avm_events(&record);
    eprintln!("events: {events:#?}");
    let reboot = events
        .iter()
        .position(|e| e.contains(":reboot:"))
        .expect("a reboot event");
    assert!(
        events[reboot..]
            .iter()
            .any(|e| e.contains(":violation:decoy:left-behind-kernel-running@")),
        "{events:#?}"
    );
}
