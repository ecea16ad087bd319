//! Message encryption for Web Push (RFC 8291 over RFC 8188 `aes128gcm`): one record, an
//! ephemeral ECDH key per message, keyed to the subscription's P-256 key and auth secret.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Record size announced in the header; a notification payload is far below it.
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext that fits one record (RFC 8291 §4: 4096 − 16 tag − 1 delimiter … we keep
/// Web Push's 3993-byte guarantee for push services).
pub const MAX_PLAINTEXT: usize = 3993;

#[derive(Debug, thiserror::Error)]
pub enum EceError {
    #[error("the subscription's p256dh is not a P-256 public key")]
    BadPublicKey,
    #[error("the subscription's auth secret is not 16 bytes")]
    BadAuthSecret,
    #[error("the payload is too large for one push message")]
    TooLarge,
    #[error("encryption failed")]
    Crypto,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

/// Whether `point` is an uncompressed point on P-256 that ECDH accepts.
pub fn is_valid_p256_point(point: &[u8]) -> bool {
    if point.len() != 65 || point[0] != 0x04 {
        return false;
    }
    let rng = SystemRandom::new();
    let Ok(ours) = EphemeralPrivateKey::generate(&ECDH_P256, &rng) else {
        return false;
    };
    agree_ephemeral(ours, &UnparsedPublicKey::new(&ECDH_P256, point), |_| ()).is_ok()
}

/// The `aes128gcm` body for a subscription with public key `ua_public` (65 bytes) and
/// `auth_secret` (16 bytes).
pub fn encrypt(
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EceError> {
    if auth_secret.len() != 16 {
        return Err(EceError::BadAuthSecret);
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge);
    }
    let rng = SystemRandom::new();
    let as_private =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EceError::Crypto)?;
    let as_public = as_private
        .compute_public_key()
        .map_err(|_| EceError::Crypto)?;
    let as_public = as_public.as_ref().to_vec();
    let ecdh_secret = agree_ephemeral(
        as_private,
        &UnparsedPublicKey::new(&ECDH_P256, ua_public),
        |s| s.to_vec(),
    )
    .map_err(|_| EceError::BadPublicKey)?;

    // RFC 8291 §3.4: IKM from the ECDH secret and the auth secret.
    let prk_key = hmac_sha256(auth_secret, &[&ecdh_secret]);
    let ikm = hmac_sha256(
        prk_key.as_ref(),
        &[b"WebPush: info\0", ua_public, &as_public, &[1]],
    );
    // RFC 8188 §2.2: content encryption key and nonce from a random salt.
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EceError::Crypto)?;
    let prk = hmac_sha256(&salt, &[&ikm.as_ref()[..32]]);
    let cek = hmac_sha256(prk.as_ref(), &[b"Content-Encoding: aes128gcm\0", &[1]]);
    let nonce = hmac_sha256(prk.as_ref(), &[b"Content-Encoding: nonce\0", &[1]]);

    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &cek.as_ref()[..16]).map_err(|_| EceError::Crypto)?,
    );
    let nonce =
        Nonce::try_assume_unique_for_key(&nonce.as_ref()[..12]).map_err(|_| EceError::Crypto)?;
    let mut record = Vec::with_capacity(plaintext.len() + 17);
    record.extend_from_slice(plaintext);
    record.push(2); // padding delimiter of the last (only) record
    key.seal_in_place_append_tag(nonce, Aad::empty(), &mut record)
        .map_err(|_| EceError::Crypto)?;

    let mut body = Vec::with_capacity(16 + 4 + 1 + as_public.len() + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_points_off_the_curve_and_bad_lengths() {
        let rng = SystemRandom::new();
        let k = EphemeralPrivateKey::generate(&ECDH_P256, &rng).unwrap();
        let good = k.compute_public_key().unwrap().as_ref().to_vec();
        assert!(is_valid_p256_point(&good));
        let mut off = good.clone();
        off[64] ^= 1;
        assert!(!is_valid_p256_point(&off));
        assert!(!is_valid_p256_point(&good[..33]));
        assert!(encrypt(&good, &[0u8; 15], b"x").is_err());
        let body = encrypt(&good, &[7u8; 16], b"{}").unwrap();
        // salt 16 + rs 4 + idlen 1 + key 65 + (2 + 1 + 16)
        assert_eq!(body.len(), 16 + 4 + 1 + 65 + 19);
        assert_eq!(&body[16..20], &4096u32.to_be_bytes());
    }
}
