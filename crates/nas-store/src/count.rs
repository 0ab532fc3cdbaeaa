//! The number of stored accounts, kept from this store's own writes so that reporting it
//! (`nas_accounts_stored`) does not list the store again and again.
//!
//! The count starts unknown and is seeded by one listing of keys when it is first asked for
//! ([`crate::Store::count_accounts`]). From then on every create and delete made through the
//! store moves it by one. A change this store cannot classify — one made by someone else (another
//! instance, a watched directory), or a write whose earlier attempt landed unrecorded — makes
//! it unknown again, so the next request lists once more. Changes made while a listing runs are
//! reconciled key by key: the listing's reading of a key changed meanwhile is replaced by what
//! the change left.

use std::collections::HashMap;

/// The count and, while a listing runs, the keys changed meanwhile.
#[derive(Debug, Default)]
pub(crate) struct AccountCount {
    /// The number of stored accounts, when known.
    known: Option<u64>,
    /// While a seeding listing runs: each key changed meanwhile and whether it exists now.
    touched: Option<HashMap<String, bool>>,
    /// A change that could not be classified happened during the listing.
    spoiled: bool,
}

impl AccountCount {
    /// The count, if known.
    pub(crate) fn known(&self) -> Option<u64> {
        self.known
    }

    /// `key` was created through the store.
    pub(crate) fn created(&mut self, key: &str) {
        self.changed(key, true, 1);
    }

    /// `key` was deleted through the store.
    pub(crate) fn deleted(&mut self, key: &str) {
        self.changed(key, false, -1);
    }

    fn changed(&mut self, key: &str, exists: bool, delta: i64) {
        if let Some(n) = self.known.as_mut() {
            *n = n.saturating_add_signed(delta);
        }
        if let Some(touched) = self.touched.as_mut() {
            touched.insert(key.to_owned(), exists);
        }
    }

    /// A change whose effect on the count is not known: the count must be listed again.
    pub(crate) fn unknown(&mut self) {
        self.known = None;
        if self.touched.is_some() {
            self.spoiled = true;
        }
    }

    /// A seeding listing starts.
    pub(crate) fn begin_listing(&mut self) {
        self.touched = Some(HashMap::new());
        self.spoiled = false;
    }

    /// The listing that began with [`AccountCount::begin_listing`] read `listed` (each key
    /// once, in any order); returns the count (installed unless a change spoiled it).
    pub(crate) fn end_listing(&mut self, listed: &[String]) -> u64 {
        let touched = self.touched.take().unwrap_or_default();
        let untouched = listed
            .iter()
            .filter(|key| !touched.contains_key(key.as_str()))
            .count();
        let existing = touched.values().filter(|exists| **exists).count();
        let count = (untouched + existing) as u64;
        if !std::mem::take(&mut self.spoiled) {
            self.known = Some(count);
        }
        count
    }

    /// A seeding listing failed.
    pub(crate) fn abort_listing(&mut self) {
        self.touched = None;
        self.spoiled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn creates_and_deletes_move_a_known_count() {
        let mut count = AccountCount::default();
        count.created("A");
        assert_eq!(count.known(), None, "unknown until listed");
        count.begin_listing();
        assert_eq!(count.end_listing(&keys(&["A", "B"])), 2);
        count.created("C");
        count.deleted("A");
        count.deleted("B");
        assert_eq!(count.known(), Some(1));
        count.unknown();
        assert_eq!(count.known(), None);
    }

    #[test]
    fn changes_during_a_listing_replace_its_reading_of_those_keys() {
        let mut count = AccountCount::default();
        count.begin_listing();
        // Created before the listing reached it (listed) and after (not listed); one listed
        // key deleted after being listed, one deleted before (not listed).
        count.created("A");
        count.created("B");
        count.deleted("C");
        count.deleted("D");
        assert_eq!(count.end_listing(&keys(&["A", "C", "E"])), 3); // A, B, E
        assert_eq!(count.known(), Some(3));
    }

    #[test]
    fn an_unclassified_change_during_a_listing_leaves_the_count_unknown() {
        let mut count = AccountCount::default();
        count.begin_listing();
        count.unknown();
        assert_eq!(count.end_listing(&keys(&["A"])), 1);
        assert_eq!(count.known(), None);
        count.begin_listing();
        assert_eq!(count.end_listing(&keys(&["A"])), 1);
        assert_eq!(count.known(), Some(1));
    }
}
