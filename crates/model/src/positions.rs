//! A record's place in the store's ingest order, as a tenant is shown it.
//!
//! The store numbers every record in one order, across all tenants: that
//! number (the record's *position*) orders live tails, history ties and
//! cursors. Shown as it is, it would tell a tenant how much every other
//! tenant wrote between two of its own records. So a client never sees a
//! position: record ids, `as_of`, cursors and tail resume points carry it
//! *sealed*, encrypted as one AES-128 block under the server's key together
//! with a tag of the tenant it was given to.
//!
//! Sealing is deterministic (one position has one id, so a client can tell
//! records apart by id), reveals nothing of the number (ids of one tenant
//! are not even ordered), and binds the id to its tenant: an id, cursor or
//! resume point made for another tenant, or altered, fails to open (one
//! chance in 2^64 to pass by luck) and is refused as invalid.
//!
//! The key is the server's ([`SealKey::generate`], kept in its data folder);
//! every node that answers the same clients must share it.

use std::sync::Arc;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Bytes of a sealed position: one AES block.
pub const SEALED_LEN: usize = 16;

/// Characters of a record id: a sealed position in unpadded base64url.
pub const RECORD_ID_LEN: usize = 22;

/// The server's key for sealing positions.
#[derive(Clone)]
pub struct SealKey(Arc<Aes128>);

impl SealKey {
    /// Bytes of a key file.
    pub const LEN: usize = 16;

    pub fn new(key: [u8; Self::LEN]) -> SealKey {
        SealKey(Arc::new(Aes128::new(&key.into())))
    }

    /// The positions as `tenant` sees them.
    pub fn tenant(&self, tenant: &str) -> TenantSeal {
        let digest = Sha256::new()
            .chain_update(b"tailwater record position\0")
            .chain_update(tenant.as_bytes())
            .finalize();
        TenantSeal {
            cipher: self.0.clone(),
            tag: digest[..8].try_into().expect("a digest has 32 bytes"),
        }
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Seals and opens the positions of one tenant.
#[derive(Clone)]
pub struct TenantSeal {
    cipher: Arc<Aes128>,
    tag: [u8; 8],
}

impl TenantSeal {
    pub fn seal(&self, position: u64) -> [u8; SEALED_LEN] {
        let mut block = Block::default();
        block[..8].copy_from_slice(&position.to_be_bytes());
        block[8..].copy_from_slice(&self.tag);
        self.cipher.encrypt_block(&mut block);
        block.into()
    }

    /// `None` for bytes this tenant was never given.
    pub fn open(&self, sealed: &[u8; SEALED_LEN]) -> Option<u64> {
        let mut block = Block::from(*sealed);
        self.cipher.decrypt_block(&mut block);
        (block[8..] == self.tag).then(|| u64::from_be_bytes(block[..8].try_into().unwrap()))
    }

    /// Gives `record` its `id`, as it leaves the server.
    pub fn fill_id(&self, record: &mut crate::LogRecord) {
        record.id = self.id(record.position);
    }

    /// A record's `id`.
    pub fn id(&self, position: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.seal(position))
    }

    /// The position behind a record `id`; `None` for anything that is not
    /// an id this tenant was given.
    pub fn position(&self, id: &str) -> Option<u64> {
        if id.len() != RECORD_ID_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
        let sealed = bytes.as_slice().try_into().ok()?;
        self.open(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::new([byte; SealKey::LEN])
    }

    #[test]
    fn ids_round_trip_within_their_tenant_only() {
        let key = key(7);
        let acme = key.tenant("acme");
        for position in [0, 1, 2, 1 << 40, u64::MAX] {
            let id = acme.id(position);
            assert_eq!(id.len(), RECORD_ID_LEN);
            assert_eq!(acme.position(&id), Some(position));
            assert_eq!(key.tenant("globex").position(&id), None);
            assert_eq!(self::key(8).tenant("acme").position(&id), None);
        }
    }

    #[test]
    fn ids_say_nothing_of_the_distance_between_positions() {
        let acme = key(7).tenant("acme");
        let (a, b) = (acme.seal(1000), acme.seal(1001));
        // Neighbouring positions differ in about half of their bits.
        let differing: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
        assert!((32..=96).contains(&differing), "{differing} bits differ");
        // Nor is one tenant's id of a position like another's.
        assert_ne!(acme.id(5), key(7).tenant("globex").id(5));
    }

    #[test]
    fn altered_or_malformed_ids_do_not_open() {
        let acme = key(7).tenant("acme");
        let id = acme.id(42);
        for bad in ["", "42", "nope", &id[1..], &format!("{id}A")] {
            assert_eq!(acme.position(bad), None, "{bad:?}");
        }
        let mut flipped = acme.seal(42);
        flipped[3] ^= 1;
        assert_eq!(acme.open(&flipped), None);
    }
}
