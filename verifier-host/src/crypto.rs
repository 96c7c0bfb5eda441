//! Host signature arithmetic for the shared verification core, on OpenSSL
//! (fast and well kept: ~80 us per P-256 verification, see FACTS).
//!
//! Building the OpenSSL key dominates a P-256 verification when done
//! carelessly: `EcKey::from_public_key_affine_coordinates` runs a full key
//! check (a scalar multiplication by the group order) on every call. The
//! key is decoded from its point encoding instead (which still checks the
//! point is on the curve), and parsed keys are kept in a small cache: a
//! verifier sees the same few AKs over and over.

use std::sync::Mutex;

use avm_attest::verify::SignatureVerifier;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use openssl::sign::Verifier;

/// How many parsed P-256 keys [`OpenSslVerifier`] keeps.
const KEY_CACHE_LEN: usize = 16;

/// The uncompressed SEC1 encoding of a P-256 point: `04 || x || y`.
type PointEncoding = [u8; 65];

/// Parsed P-256 public keys by point encoding, most recently used last.
#[derive(Debug, Default)]
struct P256KeyCache {
    entries: Vec<(PointEncoding, EcKey<Public>)>,
}

impl P256KeyCache {
    fn get(&mut self, point: &PointEncoding) -> Option<EcKey<Public>> {
        let at = self.entries.iter().position(|(p, _)| p == point)?;
        let entry = self.entries.remove(at);
        let key = entry.1.clone();
        self.entries.push(entry);
        Some(key)
    }

    fn insert(&mut self, point: PointEncoding, key: EcKey<Public>) {
        if self.entries.len() >= KEY_CACHE_LEN {
            self.entries.remove(0);
        }
        self.entries.push((point, key));
    }
}

/// [`SignatureVerifier`] on OpenSSL. Any malformed key or signature is a
/// failed verification, never an error or a panic.
#[derive(Debug)]
pub struct OpenSslVerifier {
    p256: EcGroup,
    p256_keys: Mutex<P256KeyCache>,
}

/// Left-pads a big-endian coordinate to 32 bytes; `None` if longer.
fn coordinate(bytes: &[u8]) -> Option<[u8; 32]> {
    // TPMs may strip leading zeros; never more than 32 significant bytes.
    let significant = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    let mut out = [0u8; 32];
    out.get_mut(32usize.checked_sub(significant.len())?..)?
        .copy_from_slice(significant);
    Some(out)
}

impl OpenSslVerifier {
    pub fn new() -> Result<Self, openssl::error::ErrorStack> {
        Ok(Self {
            p256: EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?,
            p256_keys: Mutex::new(P256KeyCache::default()),
        })
    }

    /// The OpenSSL key for a P-256 point, from the cache or decoded (an
    /// off-curve point fails to decode).
    fn p256_key(&self, x: &[u8], y: &[u8]) -> Option<EcKey<Public>> {
        let mut point: PointEncoding = [0u8; 65];
        point[0] = 0x04;
        point[1..33].copy_from_slice(&coordinate(x)?);
        point[33..].copy_from_slice(&coordinate(y)?);
        // A poisoned lock only means another thread panicked mid-update of
        // a cache of immutable keys: its contents are still valid.
        let mut cache = self.p256_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = cache.get(&point) {
            return Some(key);
        }
        let mut ctx = BigNumContext::new().ok()?;
        let decoded = EcPoint::from_bytes(&self.p256, &point, &mut ctx).ok()?;
        let key = EcKey::from_public_key(&self.p256, &decoded).ok()?;
        cache.insert(point, key.clone());
        Some(key)
    }

    fn ecdsa(&self, x: &[u8], y: &[u8], message: &[u8], r: &[u8], s: &[u8]) -> Option<bool> {
        let key = self.p256_key(x, y)?;
        let signature = EcdsaSig::from_private_components(
            BigNum::from_slice(r).ok()?,
            BigNum::from_slice(s).ok()?,
        )
        .ok()?;
        let digest = hash(MessageDigest::sha256(), message).ok()?;
        signature.verify(&digest, &key).ok()
    }

    fn rsassa(&self, modulus: &[u8], exponent: u32, message: &[u8], sig: &[u8]) -> Option<bool> {
        let rsa = Rsa::from_public_components(
            BigNum::from_slice(modulus).ok()?,
            BigNum::from_u32(exponent).ok()?,
        )
        .ok()?;
        let key = PKey::from_rsa(rsa).ok()?;
        let mut verifier = Verifier::new(MessageDigest::sha256(), &key).ok()?;
        verifier.update(message).ok()?;
        verifier.verify(sig).ok()
    }
}

impl SignatureVerifier for OpenSslVerifier {
    fn verify_ecdsa_p256_sha256(
        &self,
        public_x: &[u8],
        public_y: &[u8],
        message: &[u8],
        r: &[u8],
        s: &[u8],
    ) -> bool {
        self.ecdsa(public_x, public_y, message, r, s)
            .unwrap_or(false)
    }

    fn verify_rsassa_pkcs1v15_sha256(
        &self,
        modulus: &[u8],
        exponent: u32,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        self.rsassa(modulus, exponent, message, signature)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::BigNumContext;
    use openssl::pkey::Private;

    fn ecc_key() -> (EcKey<Private>, Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        let mut ctx = BigNumContext::new().unwrap();
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        (
            key,
            x.to_vec_padded(32).unwrap(),
            y.to_vec_padded(32).unwrap(),
        )
    }

    #[test]
    fn ecdsa_accepts_valid_and_rejects_altered() {
        let verifier = OpenSslVerifier::new().unwrap();
        let (key, x, y) = ecc_key();
        let digest = hash(MessageDigest::sha256(), b"quote").unwrap();
        let sig = EcdsaSig::sign(&digest, &key).unwrap();
        let (r, s) = (sig.r().to_vec(), sig.s().to_vec());
        assert!(verifier.verify_ecdsa_p256_sha256(&x, &y, b"quote", &r, &s));
        assert!(!verifier.verify_ecdsa_p256_sha256(&x, &y, b"quotf", &r, &s));
        let mut bad_s = s.clone();
        bad_s[0] ^= 1;
        assert!(!verifier.verify_ecdsa_p256_sha256(&x, &y, b"quote", &r, &bad_s));
        // Garbage keys and signatures are just "invalid".
        assert!(!verifier.verify_ecdsa_p256_sha256(&[1; 32], &[2; 32], b"quote", &r, &s));
        assert!(!verifier.verify_ecdsa_p256_sha256(&x, &y, b"quote", &[], &[]));
    }

    #[test]
    fn cached_keys_stay_apart() {
        // More keys than the cache holds, used round-robin twice: every
        // signature verifies only under its own key, hit or miss.
        let verifier = OpenSslVerifier::new().unwrap();
        let keys: Vec<_> = (0..KEY_CACHE_LEN + 2).map(|_| ecc_key()).collect();
        let digest = hash(MessageDigest::sha256(), b"quote").unwrap();
        let sigs: Vec<_> = keys
            .iter()
            .map(|(k, _, _)| EcdsaSig::sign(&digest, k).unwrap())
            .collect();
        for _ in 0..2 {
            for (i, (_, x, y)) in keys.iter().enumerate() {
                let own = &sigs[i];
                let other = &sigs[(i + 1) % sigs.len()];
                let (r, s) = (own.r().to_vec(), own.s().to_vec());
                assert!(verifier.verify_ecdsa_p256_sha256(x, y, b"quote", &r, &s));
                let (r, s) = (other.r().to_vec(), other.s().to_vec());
                assert!(!verifier.verify_ecdsa_p256_sha256(x, y, b"quote", &r, &s));
            }
        }
        assert!(verifier.p256_keys.lock().unwrap().entries.len() <= KEY_CACHE_LEN);
    }

    #[test]
    fn coordinates_are_left_padded_and_bounded() {
        assert_eq!(coordinate(&[1]).unwrap()[31], 1);
        assert_eq!(coordinate(&[0; 40]), Some([0; 32]));
        let mut long = [0u8; 33];
        long[0] = 1;
        assert_eq!(coordinate(&long), None);
        // A key given with a stripped leading zero byte is the same key.
        let verifier = OpenSslVerifier::new().unwrap();
        let (key, x, y) = loop {
            let k = ecc_key();
            if k.1[0] == 0 {
                break k;
            }
        };
        let digest = hash(MessageDigest::sha256(), b"quote").unwrap();
        let sig = EcdsaSig::sign(&digest, &key).unwrap();
        let (r, s) = (sig.r().to_vec(), sig.s().to_vec());
        assert!(verifier.verify_ecdsa_p256_sha256(&x[1..], &y, b"quote", &r, &s));
    }

    #[test]
    fn rsassa_accepts_valid_and_rejects_altered() {
        let verifier = OpenSslVerifier::new().unwrap();
        let rsa = Rsa::generate(2048).unwrap();
        let n = rsa.n().to_vec();
        let key = PKey::from_rsa(rsa).unwrap();
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &key).unwrap();
        signer.update(b"quote").unwrap();
        let sig = signer.sign_to_vec().unwrap();
        assert!(verifier.verify_rsassa_pkcs1v15_sha256(&n, 65537, b"quote", &sig));
        assert!(!verifier.verify_rsassa_pkcs1v15_sha256(&n, 65537, b"quotf", &sig));
        assert!(!verifier.verify_rsassa_pkcs1v15_sha256(&n, 3, b"quote", &sig));
        assert!(!verifier.verify_rsassa_pkcs1v15_sha256(&[], 65537, b"quote", &sig));
    }
}
