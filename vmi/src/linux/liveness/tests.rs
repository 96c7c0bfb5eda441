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
    let mut l = LeftBehind::new(Some(1_000), 0);
    for (n, value) in [1_125u64, 1_250, 1_375].into_iter().enumerate() {
        let running = l.read(Some(value), true, (n as u64 + 1) * HALF_S);
        assert_eq!(running, n == 2, "read {n}");
    }
    // For good, whatever follows.
    assert!(l.read(None, false, 4 * HALF_S));
    assert!(l.running());
    // Idle reads in between do not break the count.
    let mut l = LeftBehind::new(Some(1_000), 0);
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
    let mut l = LeftBehind::new(Some(1_000), 0);
    for n in 1..100 {
        assert!(!l.read(Some(1_000), true, n * HALF_S));
    }
    // Rewritten with anything: jumps, falls, unreadable, image gone.
    let mut l = LeftBehind::new(Some(1_000), 0);
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
        let mut l = LeftBehind::new(Some(start), 0);
        let mut value = start;
        let mut now = 0u64;
        let mut rises = 0u32;
        let mut running = false;
        for (delta, intact, elapsed) in steps {
            now += elapsed;
            let next = value.wrapping_add(delta);
            let most = elapsed * MAX_HZ / 1_000_000 + 1;
            if intact && next > value && next - value <= most {
                rises += 1;
            } else if !(intact && next == value) {
                rises = 0;
            }
            running |= rises >= LEFT_BEHIND_RISES;
            value = next;
            prop_assert_eq!(l.read(Some(next), intact, now), running);
        }
        let mut frozen = LeftBehind::new(Some(start), 0);
        for n in 1..20 {
            prop_assert!(!frozen.read(Some(start), true, n * HALF_S));
        }
    }
}
