//! Per-device tokens for the built-in endpoint (`mqtt.auth = "device_credentials"`).
//!
//! A token is 32 bytes from the operating system's random generator, written as 64 hex
//! characters; the device sends it as its MQTT password (user name = serial). Only its
//! SHA-256 digest is stored ([`TokenDigest`]). A fast hash is the right tool for a
//! generated secret of this size: a slow, salted password hash protects guessable
//! passwords against a dictionary, and a 256-bit random token has no dictionary and no
//! feasible brute force. Digests are compared in constant time.

use std::fmt;

use fleetpulse_domain::credentials::TokenDigest;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// A freshly generated device token. Its `Debug` does not print it;
/// [`expose`](Self::expose) is for printing it once to whoever provisions the device.
pub struct DeviceToken(String);

/// The operating system's random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomUnavailable;

impl DeviceToken {
    /// A new token from the operating system's random generator.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        let mut bytes = [0u8; TOKEN_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| RandomUnavailable)?;
        Ok(Self(hex(&bytes)))
    }

    /// The token itself, to hand to the device. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn digest(&self) -> TokenDigest {
        token_digest(&self.0)
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceToken(<redacted>)")
    }
}

/// SHA-256 of a token as presented (its UTF-8 bytes).
pub fn token_digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    TokenDigest(out)
}

/// Whether `presented` is the token whose digest is `stored`, in time independent of
/// where the digests differ.
pub fn token_matches(presented: &str, stored: &TokenDigest) -> bool {
    let given = token_digest(presented);
    given
        .0
        .iter()
        .zip(stored.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_verified_by_digest() {
        let a = DeviceToken::generate().expect("random");
        let b = DeviceToken::generate().expect("random");
        assert_eq!(a.expose().len(), 2 * TOKEN_BYTES);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
        assert!(token_matches(a.expose(), &a.digest()));
        assert!(!token_matches(b.expose(), &a.digest()));
        assert!(!token_matches("", &a.digest()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn the_digest_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1
        assert_eq!(
            hex(&token_digest("abc").0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
