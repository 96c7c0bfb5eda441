//! An in-place heapsort for the A-VM image: `core`'s slice sorts add
//! 1.5-3 KiB of code per element type to an image whose size is capped
//! (512 KiB), this one a few hundred bytes. O(n log n) comparisons on any
//! input, no allocation, not stable (equal elements are indistinguishable
//! for every caller: they sort plain values or tuples compared whole).

/// Sorts `v` ascending, in place.
pub fn heapsort<T: Ord>(v: &mut [T]) {
    for root in (0..v.len() / 2).rev() {
        sift_down(v, root, v.len());
    }
    for end in (1..v.len()).rev() {
        v.swap(0, end);
        sift_down(v, 0, end);
    }
}

/// Moves `v[root]` down into the max-heap `v[..end]`.
fn sift_down<T: Ord>(v: &mut [T], mut root: usize, end: usize) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && v[child] < v[child + 1] {
            child += 1;
        }
        if v[root] >= v[child] {
            return;
        }
        v.swap(root, child);
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use super::heapsort;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_like_the_standard_sort(mut v in proptest::collection::vec(any::<(u8, u16)>(), 0..300)) {
            let mut expected = v.clone();
            expected.sort();
            heapsort(&mut v);
            prop_assert_eq!(v, expected);
        }
    }

    #[test]
    fn small_and_degenerate_inputs() {
        let mut empty: Vec<u32> = Vec::new();
        heapsort(&mut empty);
        assert!(empty.is_empty());
        let mut same = alloc::vec![7u32; 33];
        heapsort(&mut same);
        assert_eq!(same, alloc::vec![7u32; 33]);
        let mut down: Vec<u32> = (0..1000).rev().collect();
        heapsort(&mut down);
        assert!(down.windows(2).all(|w| w[0] < w[1]));
    }
}
