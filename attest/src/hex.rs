//! Hex for digests, nonces and key names: the one implementation the A-VM,
//! the launcher and the verifier share. Lower case out, either case in;
//! decoding never panics on input.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Displays bytes as lower-case hex without allocating (the A-VM's
/// console uses it).
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Lower-case hex of bytes.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HexError {
    /// An odd number of digits (the length in characters).
    OddLength(usize),
    /// A character that is not a hex digit.
    InvalidDigit(char),
    /// Valid hex of the wrong length (bytes expected, bytes found).
    Length { expected: usize, found: usize },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OddLength(n) => write!(f, "odd number of hex digits ({n})"),
            Self::InvalidDigit(c) => write!(f, "not a hex digit: {c:?}"),
            Self::Length { expected, found } => {
                write!(f, "expected {expected} bytes of hex, found {found}")
            }
        }
    }
}

impl core::error::Error for HexError {}

fn nibble(c: char) -> Result<u8, HexError> {
    c.to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
        .ok_or(HexError::InvalidDigit(c))
}

/// Decodes hex (either case) into bytes.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let chars = text.chars().count();
    if !chars.is_multiple_of(2) {
        return Err(HexError::OddLength(chars));
    }
    let mut out = Vec::with_capacity(chars / 2);
    let mut digits = text.chars();
    while let (Some(high), Some(low)) = (digits.next(), digits.next()) {
        out.push((nibble(high)? << 4) | nibble(low)?);
    }
    Ok(out)
}

/// Decodes exactly `N` bytes of hex.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let bytes = decode(text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| HexError::Length {
        expected: N,
        found: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(Hex(&[0x00, 0xab, 0x7f]).to_string(), "00ab7f");
        assert_eq!(Hex(&[]).to_string(), "");
        assert_eq!(decode("00ABff"), Ok(vec![0x00, 0xab, 0xff]));
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("zz"), Err(HexError::InvalidDigit('z')));
        assert_eq!(decode("é0"), Err(HexError::InvalidDigit('é')));
        assert_eq!(decode_array::<2>("0011"), Ok([0, 0x11]));
        assert_eq!(
            decode_array::<2>("001122"),
            Err(HexError::Length {
                expected: 2,
                found: 3
            })
        );
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(decode(&encode(&bytes)), Ok(bytes.clone()));
            prop_assert_eq!(decode(&encode(&bytes).to_uppercase()), Ok(bytes.clone()));
            prop_assert_eq!(Hex(&bytes).to_string(), encode(&bytes));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,100}") {
            let _ = decode(&text);
            let _ = decode_array::<32>(&text);
        }
    }
}
