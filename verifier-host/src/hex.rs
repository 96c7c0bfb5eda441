//! Hex for nonces and names on the command line and in files.

pub use avm_attest::policy::to_hex as encode;

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("odd number of hex digits")]
    OddLength,
    #[error("not a hex digit: {0:?}")]
    BadDigit(char),
}

/// Decodes hex (either case; an optional `0x` prefix is allowed).
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    let chars: Vec<char> = text.chars().collect();
    if !chars.len().is_multiple_of(2) {
        return Err(HexError::OddLength);
    }
    chars
        .chunks_exact(2)
        .map(|pair| {
            let hi = pair[0].to_digit(16).ok_or(HexError::BadDigit(pair[0]))?;
            let lo = pair[1].to_digit(16).ok_or(HexError::BadDigit(pair[1]))?;
            Ok((hi * 16 + lo) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,100}") {
            let _ = decode(&text);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode("abc"), Err(HexError::OddLength));
        assert_eq!(decode("zz"), Err(HexError::BadDigit('z')));
        assert_eq!(decode("0xAB").unwrap(), vec![0xab]);
    }
}
