//! The ordering rule: which of two versions of one account is the newer one.
//!
//! Every place that can install a version — the store's compare-and-swap write, a PACK merge,
//! a replica import, the tombstone check — decides with [`Rank`], so every instance and every
//! nats-server fed by them converges on the same JWT:
//!
//! 1. the greater `iat` wins;
//! 2. on equal `iat` (two `nsc edit` runs within one second give two JWTs with the same `iat`
//!    and, since `jti` covers only the standard claims, possibly the same `jti`), the greater
//!    SHA-256 of the token bytes wins. The loser is refused with a conflict so the client
//!    re-issues, and a success answer always means the pushed bytes are what is served;
//! 3. identical bytes are the same version.
//!
//! A tombstone (a deleted account) ranks by the `iat` of the delete request that made it, with
//! the greatest possible digest, so only an account JWT issued strictly later re-creates it.

use sha2::{Digest, Sha256};

/// The position of a version in the order of one key's versions (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// `iat` of the token (0 when absent).
    pub iat: i64,
    /// SHA-256 of the token bytes (all ones for a tombstone).
    pub digest: [u8; 32],
}

impl Rank {
    /// The rank of token `bytes` issued at `iat`.
    pub fn of(iat: i64, bytes: &[u8]) -> Rank {
        Rank {
            iat,
            digest: Sha256::digest(bytes).into(),
        }
    }

    /// The rank of a tombstone made by a delete request issued at `iat`: above every account
    /// JWT with the same `iat`.
    pub fn tombstone(iat: i64) -> Rank {
        Rank {
            iat,
            digest: [0xff; 32],
        }
    }
}

/// How an offered version compares with the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The offered version is newer: replace.
    Newer,
    /// The same bytes are stored.
    Same,
    /// The stored version has a greater `iat`.
    Older,
    /// Same `iat`, different bytes, and the stored one wins the tie-break.
    TieLost,
}

/// Compares an offered version with the stored one: the one rule every writer calls.
pub fn compare(offered: &Rank, stored: &Rank) -> Verdict {
    use std::cmp::Ordering::*;
    match (
        offered.iat.cmp(&stored.iat),
        offered.digest.cmp(&stored.digest),
    ) {
        (Greater, _) => Verdict::Newer,
        (Less, _) => Verdict::Older,
        (Equal, Greater) => Verdict::Newer,
        (Equal, Equal) => Verdict::Same,
        (Equal, Less) => Verdict::TieLost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iat_first_then_digest() {
        let a = Rank::of(10, b"a");
        let b = Rank::of(10, b"b");
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        assert_eq!(compare(&hi, &lo), Verdict::Newer);
        assert_eq!(compare(&lo, &hi), Verdict::TieLost);
        assert_eq!(compare(&lo, &lo), Verdict::Same);
        assert_eq!(compare(&Rank::of(11, b"a"), &hi), Verdict::Newer);
        assert_eq!(compare(&Rank::of(9, b"z"), &lo), Verdict::Older);
    }

    #[test]
    fn a_tombstone_beats_every_jwt_of_its_second() {
        let t = Rank::tombstone(10);
        assert_eq!(compare(&Rank::of(10, b"x"), &t), Verdict::TieLost);
        assert_eq!(compare(&Rank::of(11, b"x"), &t), Verdict::Newer);
    }
}
