//! Expected PCR values of a measured launch.
//!
//! The launcher measures the A-VM image as an H-CRTM event through swtpm's
//! control channel before boot. The TPM then resets PCR0 to the startup
//! locality (4: 31 zero bytes followed by 0x04) and extends it with
//! SHA-256(image). Firmware (SeaBIOS) later extends its own PCR0 events, at
//! least the separator, on top of that start value.

use sha2::{Digest as _, Sha256};

/// The PCR arithmetic is the verifier's own (avm-attest), so the launcher's
/// expectations and the verifier's replay cannot drift apart.
pub use avm_attest::eventlog::{extend_sha256 as extend, hcrtm_pcr0_start, sha256};

/// A SHA-256 digest, also the size of one SHA-256 PCR.
pub type Sha256Digest = [u8; 32];

/// SHA-256 of a file's contents, streamed.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<Sha256Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// PCR0 after the firmware extended `firmware_pcr0_events` (the SHA-256
/// digests of its PCR0 events, in log order) on top of the H-CRTM value.
pub fn predict_pcr0<'a>(
    image_digest: &Sha256Digest,
    firmware_pcr0_events: impl IntoIterator<Item = &'a Sha256Digest>,
) -> Sha256Digest {
    firmware_pcr0_events
        .into_iter()
        .fold(hcrtm_pcr0_start(image_digest), |pcr, event| {
            extend(&pcr, event)
        })
}

/// Digest of SeaBIOS's separator event (it measures 0xFFFFFFFF, not the
/// 0x00000000 of the TCG spec), the only PCR0 event SeaBIOS logs.
pub fn seabios_separator_digest() -> Sha256Digest {
    sha256(&[0xff; 4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            hex::encode(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn extend_is_hash_of_concatenation() {
        let old = [1u8; 32];
        let digest = [2u8; 32];
        let mut concatenated = old.to_vec();
        concatenated.extend_from_slice(&digest);
        assert_eq!(extend(&old, &digest), sha256(&concatenated));
    }

    #[test]
    fn hcrtm_start_uses_locality_four_reset_value() {
        let image = sha256(b"image");
        let mut reset = [0u8; 32];
        reset[31] = 4;
        assert_eq!(hcrtm_pcr0_start(&image), extend(&reset, &image));
        // A zero reset value (locality 0) would give something else.
        assert_ne!(hcrtm_pcr0_start(&image), extend(&[0u8; 32], &image));
    }

    #[test]
    fn predict_folds_events_in_order() {
        let image = sha256(b"image");
        let a = sha256(b"a");
        let b = sha256(b"b");
        let start = hcrtm_pcr0_start(&image);
        assert_eq!(predict_pcr0(&image, []), start);
        assert_eq!(
            predict_pcr0(&image, [&a, &b]),
            extend(&extend(&start, &a), &b)
        );
        assert_ne!(
            predict_pcr0(&image, [&a, &b]),
            predict_pcr0(&image, [&b, &a])
        );
    }

    #[test]
    fn sha256_file_matches_in_memory_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256(&data));
    }
}
