//! WireGuard keys, made with aws-lc-rs's X25519 where they are used: on a host for its
//! interface, in `gatehousectl` for a client. A private key is a [`PrivateKey`], which never
//! shows in `Debug` and is wiped when dropped.

use aws_lc_rs::agreement::{PrivateKey as X25519Key, X25519};
use gatehouse_proto::names::WgKey;

/// A WireGuard private (or preshared) key.
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A new private key, clamped as `wg genkey` clamps it.
    pub fn generate() -> Self {
        let mut b = Self::random().0;
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        Self(b)
    }

    /// A preshared key: 32 random bytes.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b).expect("the system RNG");
        Self(b)
    }

    /// The key `wg` would print (base64): for a config file, never for a log.
    pub fn expose(&self) -> WgKey {
        WgKey::from_bytes(&self.0)
    }

    /// The public key of this private key.
    pub fn public(&self) -> WgKey {
        let key =
            X25519Key::from_private_key(&X25519, &self.0).expect("32 bytes are an X25519 key");
        let public = key.compute_public_key().expect("an X25519 public key");
        let bytes: [u8; 32] = public.as_ref().try_into().expect("32 bytes");
        WgKey::from_bytes(&bytes)
    }

    /// The key from the bytes of `wg genkey`'s base64.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_is_x25519_of_the_private_one() {
        // RFC 7748 §6.1: Alice's private and public keys.
        let private: [u8; 32] =
            hex_bytes("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex_bytes("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(
            PrivateKey::from_bytes(private).public(),
            WgKey::from_bytes(&public)
        );
        let k = PrivateKey::generate();
        let raw = k.0;
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        assert_ne!(k.public(), PrivateKey::generate().public());
        assert_eq!(format!("{k:?}"), "PrivateKey(***)");
    }

    fn hex_bytes(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
