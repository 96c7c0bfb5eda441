//! Structures whose `u64` members are decoded with one loop per run.
//!
//! The kernel profile holds about 130 member offsets and addresses, most
//! in structures of `u64` members. serde's derived decoder reads each
//! member with code of its own (a varint decode inlined per member: about
//! 45 bytes each in the A-VM image, which has a 512 KiB limit).
//! [`deserialize_members!`] decodes such a structure as a tuple, each run
//! of `u64` members with one loop ([`next_words`]) and any other member
//! on its own ([`next`]). Postcard encodes a structure exactly as such a
//! tuple (its members in order), so the bytes and the profile format are
//! those of the derive. The members given to the macro must be in
//! declaration order: each use has a round-trip test with distinct values
//! (`profile::tests`).

use serde::de::{Error, SeqAccess};

/// The next `N` members of a sequence, each a `u64`, with one loop.
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

/// `Deserialize` for a structure from its members in declaration order,
/// in segments: `words [a, b, ...]` for a run of `u64` members (one
/// loop), `one [c]` for a member of any other type.
macro_rules! deserialize_members {
    ($ty:ident { $($kind:ident [$($member:ident),+ $(,)?]),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                struct Members;
                impl<'de> serde::de::Visitor<'de> for Members {
                    type Value = $ty;
                    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                        f.write_str(stringify!($ty))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$ty, A::Error> {
                        $($crate::words::deserialize_members!(@read seq $kind [$($member),+]);)+
                        Ok($ty { $($($member,)+)+ })
                    }
                }
                let members = [$($(stringify!($member)),+),+].len();
                deserializer.deserialize_tuple(members, Members)
            }
        }
    };
    (@read $seq:ident words [$($member:ident),+]) => {
        let [$($member),+] = $crate::words::next_words(&mut $seq)?;
    };
    (@read $seq:ident one [$member:ident]) => {
        let $member = $crate::words::next(&mut $seq)?;
    };
}
pub(crate) use deserialize_members;
