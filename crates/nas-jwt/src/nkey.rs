//! NKeys as text: role-checked public keys and seeds.
//!
//! The `nkeys` crate does signing and key generation, but its conversions accept any prefix byte
//! (and fall back to a default role on bad input), so every key that arrives from outside is
//! checked here first: base32, length, CRC16 and role.

use std::fmt;

use crc::{Crc, CRC_16_XMODEM};
use data_encoding::BASE32_NOPAD;
use ed25519_dalek::VerifyingKey;

/// CRC-16/XMODEM, the checksum nkeys append (little-endian) to every encoded key.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// Length of a public key in text form: base32 of prefix (1) + key (32) + CRC (2).
pub const PUBLIC_KEY_LEN: usize = 56;
/// Length of a seed in text form: base32 of prefix (2) + seed (32) + CRC (2).
pub const SEED_LEN: usize = 58;

const SEED_PREFIX: u8 = 18 << 3;

/// The role an nkey plays, identified by its prefix byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// `O…` — operator identity and signing keys.
    Operator,
    /// `A…` — accounts and account signing keys.
    Account,
    /// `U…` — users.
    User,
    /// `N…` — servers.
    Server,
    /// `C…` — clusters.
    Cluster,
    /// `X…` — curve (x25519) keys used by auth callout encryption.
    Curve,
}

impl KeyRole {
    /// The prefix byte that starts the decoded key.
    pub const fn prefix_byte(self) -> u8 {
        match self {
            KeyRole::Account => 0,
            KeyRole::Cluster => 2 << 3,
            KeyRole::Server => 13 << 3,
            KeyRole::Operator => 14 << 3,
            KeyRole::User => 20 << 3,
            KeyRole::Curve => 23 << 3,
        }
    }

    /// The role for a prefix byte, if it is one of the public roles.
    pub const fn from_prefix_byte(byte: u8) -> Option<KeyRole> {
        match byte {
            0 => Some(KeyRole::Account),
            16 => Some(KeyRole::Cluster),
            104 => Some(KeyRole::Server),
            112 => Some(KeyRole::Operator),
            160 => Some(KeyRole::User),
            184 => Some(KeyRole::Curve),
            _ => None,
        }
    }

    /// Lower-case role name as used in messages (`account`, `operator`, …).
    pub const fn name(self) -> &'static str {
        match self {
            KeyRole::Operator => "operator",
            KeyRole::Account => "account",
            KeyRole::User => "user",
            KeyRole::Server => "server",
            KeyRole::Cluster => "cluster",
            KeyRole::Curve => "curve",
        }
    }
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a text key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NkeyError {
    /// Not base32 (standard alphabet, upper case, unpadded).
    #[error("invalid encoding: not base32")]
    Base32,
    /// Wrong number of characters for the kind of key.
    #[error("invalid length: {found} characters, expected {expected}")]
    Length {
        /// Characters expected.
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// The CRC16 does not match the key bytes.
    #[error("invalid checksum")]
    Checksum,
    /// The prefix byte names no public role.
    #[error("invalid prefix byte {0:#04x}")]
    UnknownPrefix(u8),
    /// A valid key of another role.
    #[error("expected {expected} key, found {found} key")]
    WrongRole {
        /// The role that was required.
        expected: KeyRole,
        /// The role the key has.
        found: KeyRole,
    },
    /// A public key where a seed was expected, or the reverse.
    #[error("not a seed")]
    NotASeed,
    /// The 32 key bytes are not a valid Ed25519 point.
    #[error("invalid ed25519 public key")]
    InvalidCurvePoint,
}

/// Decodes base32 text and verifies its trailing little-endian CRC16; returns the bytes before it.
fn decode_checked(text: &str, expected_len: usize) -> Result<Vec<u8>, NkeyError> {
    if text.len() != expected_len {
        return Err(NkeyError::Length {
            expected: expected_len,
            found: text.len(),
        });
    }
    let mut raw = BASE32_NOPAD
        .decode(text.as_bytes())
        .map_err(|_| NkeyError::Base32)?;
    let split = raw.len() - 2;
    let crc = u16::from_le_bytes([raw[split], raw[split + 1]]);
    raw.truncate(split);
    if CRC16.checksum(&raw) != crc {
        return Err(NkeyError::Checksum);
    }
    Ok(raw)
}

/// A validated public nkey: text form plus its role and raw 32 key bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    text: String,
    role: KeyRole,
    bytes: [u8; 32],
}

impl PublicKey {
    /// Parses a public key of any public role.
    pub fn parse(text: &str) -> Result<PublicKey, NkeyError> {
        if text.len() == SEED_LEN && text.starts_with('S') {
            return Err(NkeyError::NotASeed);
        }
        let raw = decode_checked(text, PUBLIC_KEY_LEN)?;
        let role = KeyRole::from_prefix_byte(raw[0]).ok_or(NkeyError::UnknownPrefix(raw[0]))?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw[1..33]);
        Ok(PublicKey {
            text: text.to_owned(),
            role,
            bytes,
        })
    }

    /// Parses a public key and requires `role`.
    pub fn parse_role(text: &str, role: KeyRole) -> Result<PublicKey, NkeyError> {
        let key = PublicKey::parse(text)?;
        if key.role != role {
            return Err(NkeyError::WrongRole {
                expected: role,
                found: key.role,
            });
        }
        Ok(key)
    }

    /// The key as text (`A…`, `O…`, …).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The role encoded in the prefix.
    pub fn role(&self) -> KeyRole {
        self.role
    }

    /// The raw Ed25519 public key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The Ed25519 verifying key (fails for bytes that are not a curve point).
    pub fn verifying_key(&self) -> Result<VerifyingKey, NkeyError> {
        VerifyingKey::from_bytes(&self.bytes).map_err(|_| NkeyError::InvalidCurvePoint)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.text)
    }
}

/// True when `text` is a valid public key of `role` (the common "is this an account key?" test).
pub fn is_valid_public_key(text: &str, role: KeyRole) -> bool {
    PublicKey::parse_role(text, role).is_ok()
}

/// Reads the role of a seed (`SO…`, `SA…`, `SU…`, …) after checking encoding and checksum.
pub fn seed_role(seed: &str) -> Result<KeyRole, NkeyError> {
    let raw = decode_checked(seed, SEED_LEN).map_err(|e| match e {
        NkeyError::Length { .. } if seed.len() == PUBLIC_KEY_LEN => NkeyError::NotASeed,
        other => other,
    })?;
    if raw[0] & 0xF8 != SEED_PREFIX {
        return Err(NkeyError::NotASeed);
    }
    let prefix = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3);
    KeyRole::from_prefix_byte(prefix).ok_or(NkeyError::UnknownPrefix(prefix))
}

/// A key pair that can sign, built from a role-checked seed.
pub struct SigningKey {
    pair: nkeys::KeyPair,
    public: PublicKey,
    seed: String,
}

impl SigningKey {
    /// Loads a seed, requiring its role.
    pub fn from_seed(seed: &str, role: KeyRole) -> Result<SigningKey, NkeyError> {
        let found = seed_role(seed)?;
        if found != role {
            return Err(NkeyError::WrongRole {
                expected: role,
                found,
            });
        }
        let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| NkeyError::NotASeed)?;
        let public = PublicKey::parse_role(&pair.public_key(), role)?;
        Ok(SigningKey {
            pair,
            public,
            seed: seed.to_owned(),
        })
    }

    /// Generates a fresh random key pair of `role`.
    pub fn generate(role: KeyRole) -> SigningKey {
        let pair = match role {
            KeyRole::Operator => nkeys::KeyPair::new_operator(),
            KeyRole::Account => nkeys::KeyPair::new_account(),
            KeyRole::User => nkeys::KeyPair::new_user(),
            KeyRole::Server => nkeys::KeyPair::new_server(),
            KeyRole::Cluster => nkeys::KeyPair::new_cluster(),
            KeyRole::Curve => nkeys::KeyPair::new(nkeys::KeyPairType::Curve),
        };
        let seed = pair.seed().unwrap_or_default();
        // A freshly generated pair always has a seed of the requested role.
        SigningKey::from_seed(&seed, role)
            .unwrap_or_else(|e| panic!("nkeys generated a bad {role} seed: {e}"))
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The seed text (`S…`).
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The role of this key.
    pub fn role(&self) -> KeyRole {
        self.public.role()
    }

    /// Ed25519 signature of `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        // nkeys only fails to sign when the pair has no seed, and ours always has one.
        self.pair.sign(data).unwrap_or_default()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
    }

    #[test]
    fn zero_keys_encode_as_documented() {
        let account = "A".repeat(56);
        let key = PublicKey::parse_role(&account, KeyRole::Account).unwrap();
        assert_eq!(key.bytes(), &[0u8; 32]);
        let op = "OAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWMG";
        assert_eq!(PublicKey::parse(op).unwrap().role(), KeyRole::Operator);
    }

    #[test]
    fn spec_seed_vector() {
        let seed = "SUAPCDMU5TSHHLWUUZSOUABJXP2GXRCZVEOVWPSVM5XRSXYGQMRRFDYNMY";
        assert_eq!(seed_role(seed).unwrap(), KeyRole::User);
        let kp = SigningKey::from_seed(seed, KeyRole::User).unwrap();
        assert_eq!(
            kp.public_key().as_str(),
            "UDCIBGGGHCJBQPOO4SCJJBHZDR37NQGGCIWMNG2DDAKJ6WMKBMAKXIMO"
        );
        assert!(matches!(
            SigningKey::from_seed(seed, KeyRole::Account),
            Err(NkeyError::WrongRole {
                expected: KeyRole::Account,
                found: KeyRole::User
            })
        ));
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let good = "UDCIBGGGHCJBQPOO4SCJJBHZDR37NQGGCIWMNG2DDAKJ6WMKBMAKXIMO";
        assert!(matches!(
            PublicKey::parse(&good[..55]),
            Err(NkeyError::Length { .. })
        ));
        let mut bad_crc = good.to_owned();
        bad_crc.replace_range(10..11, "A");
        assert_eq!(PublicKey::parse(&bad_crc), Err(NkeyError::Checksum));
        let lower = good.to_lowercase();
        assert_eq!(PublicKey::parse(&lower), Err(NkeyError::Base32));
        assert!(matches!(
            PublicKey::parse_role(good, KeyRole::Account),
            Err(NkeyError::WrongRole { .. })
        ));
        assert_eq!(
            PublicKey::parse("SUAPCDMU5TSHHLWUUZSOUABJXP2GXRCZVEOVWPSVM5XRSXYGQMRRFDYNMY"),
            Err(NkeyError::NotASeed)
        );
        assert_eq!(seed_role(good), Err(NkeyError::NotASeed));
    }

    #[test]
    fn generated_keys_round_trip() {
        for role in [KeyRole::Operator, KeyRole::Account, KeyRole::User] {
            let key = SigningKey::generate(role);
            assert_eq!(key.role(), role);
            let again = SigningKey::from_seed(key.seed(), role).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let sig = key.sign(b"hello");
            let vk = key.public_key().verifying_key().unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            assert!(vk.verify_strict(b"hello", &sig).is_ok());
        }
    }
}
