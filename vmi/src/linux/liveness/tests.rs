//! The tick-count rules on made-up read sequences: a watched kernel that
//! stops counting stalls after the limit; a left-behind kernel that keeps
//! counting is seen running, one whose memory is reused for anything else
//! is not.

use proptest::prelude::*;

use super::*;

const STALL_US: u64 = 60_000_000;
const HALF_S: u64 = 500_000;

#[test]
fn a_watched_kernel_that_stops_counting_stalls_after_the_limit() {
    let mut t = Ticking::default();
    assert!(!t.read(Some(100), 0, STALL_US));
    // Idle for 59 s, then a tick: not stalled.
    assert!(!t.read(Some(100), 59_000_000, STALL_US));
    assert!(!t.read(Some(101), 59_500_000, STALL_US));
    // Unchanged (or unreadable) for more than the limit from that tick.
    assert!(!t.read(Some(101), 119_500_000, STALL_US));
    assert!(!t.read(None, 119_500_000, STALL_US));
    assert!(t.read(None, 119_500_001, STALL_US));
    assert!(t.read(Some(101), 120_000_000, STALL_US));
    // Counting again ends it; so does a value gone back (a fresh kernel).
    assert!(!t.read(Some(5), 120_500_000, STALL_US));
    // A first read that fails starts the clock too.
    let mut t = Ticking::default();
    assert!(!t.read(None, 10, STALL_US));
    assert!(t.read(None, 10 + STALL_US + 1, STALL_US));
}

#[test]
fn a_left_behind_kernel_that_counts_on_is_running() {
    // Debian's 250 Hz, read every half second.
    let mut l = LeftBehind::new(Some(1_000), 0, None);
    for (n, value) in [1_125u64, 1_250, 1_375].into_iter().enumerate() {
        let running = l.read(Some(value), true, (n as u64 + 1) * HALF_S);
        assert_eq!(running, n == 2, "read {n}");
    }
    // For good, whatever follows.
    assert!(l.read(None, false, 4 * HALF_S));
    assert!(l.running());
    // Idle reads in between do not break the count.
    let mut l = LeftBehind::new(Some(1_000), 0, None);
    let reads = [1_000, 1_001, 1_001, 1_001, 1_002, 1_002, 1_003];
    let seen: Vec<bool> = reads
        .iter()
        .enumerate()
        .map(|(n, &v)| l.read(Some(v), true, (n as u64 + 1) * HALF_S))
        .collect();
    assert_eq!(seen, [false, false, false, false, false, false, true]);
}

#[test]
fn a_dead_kernel_or_its_reused_memory_is_not_running() {
    // Frozen.
    let mut l = LeftBehind::new(Some(1_000), 0, None);
    for n in 1..100 {
        assert!(!l.read(Some(1_000), true, n * HALF_S));
    }
    // Past the window, a count rising there is the new kernel's (a time
    // stamp of its own in reused memory), even with the image intact:
    // three rises from 30.5 s on run nothing; three within it run.
    let mut l = LeftBehind::new(Some(1_000), 0, None);
    for n in 0..10u64 {
        let at = LEFT_BEHIND_WINDOW_US + (n + 1) * HALF_S;
        assert!(!l.read(Some(1_000 + 100 * n), true, at), "read {n}");
    }
    let mut l = LeftBehind::new(Some(1_000), 0, None);
    let within: Vec<bool> = (0..3u64)
        .map(|n| {
            l.read(
                Some(1_100 + 100 * n),
                true,
                LEFT_BEHIND_WINDOW_US - HALF_S * (2 - n),
            )
        })
        .collect();
    assert_eq!(within, [false, false, true]);
    // Rewritten with anything: jumps, falls, unreadable, image gone.
    let mut l = LeftBehind::new(Some(1_000), 0, None);
    let reads: [(Option<u64>, bool); 9] = [
        (Some(1_100), true),
        (Some(1_200), true),
        // Further than 1000 Hz allows in half a second.
        (Some(2_000), true),
        (Some(2_100), true),
        (Some(2_200), true),
        (Some(0), true),
        (Some(100), true),
        (Some(200), false),
        (None, true),
    ];
    for (n, (value, intact)) in reads.into_iter().enumerate() {
        assert!(!l.read(value, intact, (n as u64 + 1) * HALF_S), "read {n}");
    }
}

proptest! {
    /// Whatever is read, `running` needs LEFT_BEHIND_RISES plausible rises
    /// of an intact image since the last implausible read: never from
    /// fewer reads, and a frozen count never.
    #[test]
    fn running_needs_enough_plausible_rises(
        steps in proptest::collection::vec((0u64..2_000, any::<bool>(), 1u64..2_000_000), 0..40),
        start in 0u64..1_000_000,
    ) {
        let mut l = LeftBehind::new(Some(start), 0, None);
        let mut value = start;
        let mut now = 0u64;
        let mut rises = 0u32;
        let mut running = false;
        for (delta, intact, elapsed) in steps {
            now += elapsed;
            let next = value.wrapping_add(delta);
            let most = elapsed * MAX_HZ / 1_000_000 + 1;
            if now > LEFT_BEHIND_WINDOW_US {
                // Past the window: nothing counts any more.
            } else if intact && next > value && next - value <= most {
                rises += 1;
            } else if !(intact && next == value) {
                rises = 0;
            }
            running |= rises >= LEFT_BEHIND_RISES;
            value = next;
            prop_assert_eq!(l.read(Some(next), intact, now), running);
        }
        let mut frozen = LeftBehind::new(Some(start), 0, None);
        for n in 1..20 {
            prop_assert!(!frozen.read(Some(start), true, n * HALF_S));
        }
    }
}

/// Debian's 250 Hz, with the idle lag of NO_HZ: a move is seen up to a
/// read late and the count lags its clock by up to half a second.
#[test]
fn the_watched_kernels_rate_is_learnt_from_its_moves() {
    let mut t = Ticking::default();
    t.read(Some(5_000), 0, STALL_US);
    assert_eq!(t.rate(), None);
    // Moves seen every half second, some reads idle in between.
    let mut now = 0;
    for n in 1..=24u64 {
        now = n * HALF_S;
        let value = if n % 3 == 0 {
            5_000 + 125 * (n - 1)
        } else {
            5_000 + 125 * n
        };
        t.read(Some(value), now, STALL_US);
        if now < RATE_SPAN_US {
            assert_eq!(t.rate(), None, "at {now}");
        }
    }
    let rate = t.rate().expect("a rate after 10 s");
    assert!((240..=260).contains(&rate), "{rate}");
    // A count gone back is a new kernel: its span starts anew, the rate
    // learnt stands until a new one is (the same kernel build).
    t.read(Some(10), now + HALF_S, STALL_US);
    t.read(Some(135), now + 2 * HALF_S, STALL_US);
    assert_eq!(t.rate(), Some(rate));
    // A count written forward by hand (further than 1000 Hz allows) does
    // not unlearn the rate either, nor teach a new one.
    let mut t = Ticking::default();
    t.read(Some(0), 0, STALL_US);
    for n in 1..=22u64 {
        t.read(Some(125 * n), n * HALF_S, STALL_US);
    }
    assert_eq!(t.rate(), Some(250));
    t.read(Some(10_000_000), 23 * HALF_S, STALL_US);
    assert_eq!(t.rate(), Some(250));
    for n in 24..=30u64 {
        t.read(Some(10_000_000 + 125 * (n - 23)), n * HALF_S, STALL_US);
    }
    assert_eq!(t.rate(), Some(250));
    // Before any rate was learnt, a jump leaves none.
    let mut t = Ticking::default();
    t.read(Some(0), 0, STALL_US);
    t.read(Some(1), HALF_S, STALL_US);
    t.read(Some(50_000), HALF_S + RATE_SPAN_US, STALL_US);
    assert_eq!(t.rate(), None);
}

/// The real kernel behind a decoy with one byte of its banner changed:
/// never intact, but counting on from where it was at 250 Hz (idle reads
/// between) is seen running in three rises.
#[test]
fn a_left_behind_kernel_counting_on_its_clock_runs_whatever_its_image() {
    let j0 = 4_295_000_000u64;
    let mut l = LeftBehind::new(Some(j0), 0, Some(250));
    let reads = [j0 + 125, j0 + 125, j0 + 240, j0 + 370];
    let seen: Vec<bool> = reads
        .iter()
        .enumerate()
        .map(|(n, &v)| l.read(Some(v), false, (n as u64 + 1) * HALF_S))
        .collect();
    assert_eq!(seen, [false, false, false, true]);
    // Without a rate (watched too short), only an intact image counts.
    let mut l = LeftBehind::new(Some(j0), 0, None);
    for (n, v) in reads.into_iter().enumerate() {
        assert!(!l.read(Some(v), false, (n as u64 + 1) * HALF_S));
    }
}

/// What a new kernel writes into the old one's memory is not the old
/// clock: its own count or a time stamp from it (below the old count by
/// the old kernel's uptime), a count rising at another rate, or one that
/// starts rising only after the clock window.
#[test]
fn counts_off_the_left_behind_clock_do_not_run() {
    let j0 = 4_295_000_000u64;
    let feed = |start: u64, step: u64, from_us: u64| {
        let mut l = LeftBehind::new(Some(j0), 0, Some(250));
        (1..=40u64).any(|n| l.read(Some(start + step * n), false, from_us + n * HALF_S))
    };
    // The new kernel's own count, 250 Hz but 20 s behind (the old
    // kernel's uptime was 20 s more than the new one's).
    assert!(!feed(j0 - 20 * 250 + 500, 125, 0));
    // Another rate: 1000 Hz from the old count.
    assert!(!feed(j0, 500, 0));
    // The old clock, but met only after the window.
    let late = LEFT_BEHIND_WINDOW_US + HALF_S;
    let mut l = LeftBehind::new(Some(j0), 0, Some(250));
    for n in 0..4u64 {
        let at = late + n * HALF_S;
        assert!(
            !l.read(Some(j0 + 250 * at / 1_000_000), false, at),
            "read {n}"
        );
    }
}

proptest! {
    /// The clock rule never fires on fewer than LEFT_BEHIND_RISES reads,
    /// nor on values at or below the count at the reboot.
    #[test]
    fn the_clock_rule_needs_rises_above_the_start(
        values in proptest::collection::vec(0u64..10_000, 0..40),
        rate in 1u64..1_100,
    ) {
        let j0 = 1_000_000u64;
        let mut l = LeftBehind::new(Some(j0), 0, Some(rate));
        for (n, v) in values.iter().enumerate() {
            let value = j0 - 5_000 + v;
            let running = l.read(Some(value), false, (n as u64 + 1) * HALF_S);
            prop_assert!(!running || n + 1 >= LEFT_BEHIND_RISES as usize);
            if values[..=n].iter().all(|&v| v <= 5_000) {
                prop_assert!(!running);
            }
        }
    }
}

/// A kernel image at `phys` with KASLR slide `slide`.
fn at(phys: u64, slide: u64) -> KernelLocation {
    let link = 0xffff_ffff_8100_0000u64;
    KernelLocation {
        phys_text: crate::addr::GuestPhysAddr(phys),
        link_text: link,
        runtime_text: link + slide,
    }
}

/// A reboot whose new kernel lands where the old one was (physical KASLR
/// can pick the same 2 MiB slot; the slide changes): the old kernel's tick
/// count is the new one's, read first at the reboot and counting on at
/// the old rate, which would read as the old kernel running (seen once in
/// CI). Such a reboot leaves nothing behind to watch; one elsewhere does.
#[test]
fn a_new_kernel_in_the_old_ones_place_leaves_nothing_behind() {
    let old = at(0x9c0_0000, 0x2fa0_0000);
    let same_place = at(0x9c0_0000, 0x23e0_0000);
    // Watched, the new kernel's own count (250 Hz from its boot) is on
    // the old clock from the count read at the reboot.
    let j0 = 4_294_968_000u64;
    let mut l = LeftBehind::new(Some(j0), 0, Some(250));
    let running = (1..=8u64).any(|n| l.read(Some(j0 + 125 * n), false, n * HALF_S));
    assert!(
        running,
        "the new kernel's count reads as the old one running"
    );
    assert!(!leaves_old_kernel_behind(&old, &same_place));
    assert!(!leaves_old_kernel_behind(&old, &old));
    assert!(leaves_old_kernel_behind(&old, &at(0x2a0_0000, 0x23e0_0000)));
    assert!(leaves_old_kernel_behind(&old, &at(0xbc0_0000, 0x2fa0_0000)));
}

/// Old images are remembered where they still lie: a kernel put where an
/// old one was overwrote it, so a later kernel there (even with the old
/// slide: the same slot twice, then the first slide again) is new, not an
/// old image, and the watch is not stuck searching for a reboot it refuses.
#[test]
fn old_kernels_are_remembered_where_their_images_still_lie() {
    let (a, b) = (at(0x9c0_0000, 0x2fa0_0000), at(0x2a0_0000, 0x1000_0000));
    let mut old = OldKernels::default();
    // To another place: the first image stays behind, even if the search
    // missed it (it comes and goes while the new kernel boots over it).
    old.rebooted(a, b, &[b]);
    assert!(old.contains(&a) && !old.contains(&b));
    // Back to the first slot with another slide: its old image is gone,
    // the one just left is behind.
    let a2 = at(0x9c0_0000, 0x23e0_0000);
    old.rebooted(b, a2, &[a2]);
    assert!(!old.contains(&a) && old.contains(&b) && !old.contains(&a2));
    // The same slot again, with the first slide: a new kernel.
    old.rebooted(a2, a, &[a]);
    assert!(!old.contains(&a) && !old.contains(&a2) && old.contains(&b));
    // In place (same slot, same slide): nothing behind.
    old.rebooted(a, a, &[a, b]);
    assert!(!old.contains(&a) && old.contains(&b));
}

/// Many reboots whose images all stay in RAM are all remembered up to the
/// bound (the ninth reboot no longer makes the first image a second new
/// kernel, as a bound of 8 did); beyond it, an image the search did not
/// find makes room first, else the oldest.
#[test]
fn old_kernels_make_room_with_images_no_longer_found() {
    let kernels: Vec<KernelLocation> = (0..=MAX_OLD_KERNELS as u64 + 1)
        .map(|n| at(0x100_0000 + n * 0x20_0000, 0x1000_0000))
        .collect();
    let mut old = OldKernels::default();
    for (n, pair) in kernels.windows(2).take(MAX_OLD_KERNELS).enumerate() {
        old.rebooted(pair[0], pair[1], &kernels[..=n + 1]);
    }
    assert!(kernels[..MAX_OLD_KERNELS].iter().all(|k| old.contains(k)));
    // Full: image 5 was not found, it makes room.
    let found: Vec<KernelLocation> = kernels
        .iter()
        .copied()
        .filter(|k| *k != kernels[5])
        .collect();
    let (last, next) = (kernels[MAX_OLD_KERNELS], kernels[MAX_OLD_KERNELS + 1]);
    old.rebooted(last, next, &found);
    assert!(!old.contains(&kernels[5]) && old.contains(&kernels[0]) && old.contains(&last));
    // Full, every image found: the oldest makes room.
    old.rebooted(next, at(0x8000_0000, 0), &kernels);
    assert!(!old.contains(&kernels[0]) && old.contains(&kernels[1]) && old.contains(&next));
}

#[test]
fn an_old_image_whose_count_rises_twice_in_a_row_was_booted_again() {
    let (a, b) = (at(0x500_0000, 0x1c00_0000), at(0x800_0000, 0x2000_0000));
    let mut revived = Revived::default();
    // Both images still; then `b` counts at 250 Hz, read every 100 ms.
    let mut search = |t: u64, va: u64, vb: u64| {
        let ra = revived.read(a, Some(va), t);
        let rb = revived.read(b, Some(vb), t);
        (ra, rb)
    };
    assert_eq!(search(0, 7, 100), (false, false));
    assert_eq!(search(100_000, 7, 100), (false, false));
    assert_eq!(search(200_000, 7, 125), (false, false));
    assert_eq!(search(300_000, 7, 150), (false, true));
}

#[test]
fn an_old_image_count_that_jumps_goes_back_or_is_unreadable_starts_over() {
    let a = at(0x500_0000, 0x1c00_0000);
    let mut revived = Revived::default();
    let mut t = 0;
    let mut read = |value: Option<u64>| {
        t += 100_000;
        revived.read(a, value, t)
    };
    assert!(!read(Some(1000)));
    assert!(!read(Some(1010)));
    // Further than 1000 Hz counts in 100 ms: written, not counted.
    assert!(!read(Some(5000)));
    assert!(!read(Some(5010)));
    // Back: starts over.
    assert!(!read(Some(4000)));
    assert!(!read(Some(4010)));
    // Unreadable once: starts over.
    assert!(!read(None));
    assert!(!read(Some(4020)));
    assert!(!read(Some(4030)));
    assert!(read(Some(4040)));
    // At most one entry per old kernel: a further image is not tracked.
    let mut revived = Revived::default();
    for i in 0..MAX_OLD_KERNELS as u64 {
        assert!(!revived.read(at(0x100_0000 * (i + 1), 0), Some(1), 0));
    }
    let extra = at(0x200_0000_0000, 0);
    assert!(!revived.read(extra, Some(1), 0));
    assert!(!revived.read(extra, Some(2), 100_000));
    assert!(!revived.read(extra, Some(3), 200_000));
}

proptest! {
    /// A count that never rises (still, or any mix of still and falling
    /// values) never makes an image revived.
    #[test]
    fn a_count_that_never_rises_is_never_revived(values in proptest::collection::vec(0u64..1000, 1..64)) {
        let a = at(0x500_0000, 0x1c00_0000);
        let mut revived = Revived::default();
        let mut last = u64::MAX;
        for (i, v) in values.into_iter().enumerate() {
            let v = v.min(last);
            last = v;
            prop_assert!(!revived.read(a, Some(v), i as u64 * 100_000));
        }
    }
}
