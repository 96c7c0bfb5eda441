//! Structures of `u64` members decoded with one loop.
//!
//! The kernel profile holds about 130 member offsets and addresses, most
//! in structures of `u64` members only. serde's derived decoder reads each
//! member with code of its own (a varint decode inlined per member: about
//! a hundred bytes each in the A-VM image, which has a 512 KiB limit).
//! [`deserialize_u64_fields!`] decodes such a structure as a tuple of that
//! many `u64`s, which postcard encodes exactly as the derived encoder
//! encodes the structure (its members in order, each a varint), so the
//! bytes and the profile format are unchanged. The member list given to
//! the macro must be in declaration order: each use has a round-trip
//! test with distinct values ([`tests`] of the profile).

use core::fmt;
use serde::de::{Deserializer, Error, SeqAccess, Visitor};

/// `N` consecutive `u64`s, as a tuple.
pub fn deserialize_words<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u64; N], D::Error> {
    struct Words<const N: usize>;
    impl<'de, const N: usize> Visitor<'de> for Words<N> {
        type Value = [u64; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} integers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u64; N], A::Error> {
            next_words(&mut seq)
        }
    }
    deserializer.deserialize_tuple(N, Words::<N>)
}

/// The next `N` members of a sequence, each a `u64`, with one loop (for
/// a structure whose `u64` members are interleaved with others).
pub fn next_words<'de, A: SeqAccess<'de>, const N: usize>(
    seq: &mut A,
) -> Result<[u64; N], A::Error> {
    let mut out = [0u64; N];
    for word in out.iter_mut() {
        *word = next(seq)?;
    }
    Ok(out)
}

/// The next member of a sequence, which must be there.
pub fn next<'de, A: SeqAccess<'de>, T: serde::Deserialize<'de>>(
    seq: &mut A,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| A::Error::custom("a structure cut short"))
}

/// `Deserialize` for a structure of `u64` members only, listed in
/// declaration order: see the module's comment.
macro_rules! deserialize_u64_fields {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let [$($field),+] = $crate::words::deserialize_words(deserializer)?;
                Ok($ty { $($field),+ })
            }
        }
    };
}
pub(crate) use deserialize_u64_fields;
