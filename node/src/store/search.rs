//! Full-text search across every conversation (one-to-one and group): an inverted index in
//! sled, so a query reads the index entries of one of its words and the messages they name,
//! never every message.
//!
//! Words: the text (or caption) lower-cased and split at every character that is not a
//! letter or a digit (Unicode), each cut to [`MAX_WORD_BYTES`], at most
//! [`MAX_WORDS_PER_MESSAGE`] distinct words per message. A query matches a message when
//! every query word begins one of the message's words (so a half-typed last word matches).
//!
//! Layout: `search_index`: `word ‖ 0x00 ‖ tree ‖ key` → (), `tree` being 0 for `messages`
//! and 1 for `group_messages`, `key` the message's key there. An entry is written before
//! its message, so a crash leaves at worst an entry naming nothing, which a query skips and
//! removes. Messages stored before the index existed are indexed when the store opens
//! (`meta` `search_index` marks it done).

use std::collections::{BTreeSet, HashSet};

use super::groups::GroupStoredMessage;
use super::{Store, StoreError, StoredMessage};

/// Longest word kept in the index, bytes (longer ones are cut at a character boundary).
pub const MAX_WORD_BYTES: usize = 32;

/// Most distinct words of one message indexed.
pub const MAX_WORDS_PER_MESSAGE: usize = 512;

/// Most words in a query.
pub const MAX_QUERY_WORDS: usize = 8;

/// Most messages one query looks at (the index entries of its longest word): bounds a
/// query's work whatever the history holds.
pub const MAX_CANDIDATES: usize = 10_000;

/// Where a message lives.
const ONE_TO_ONE: u8 = 0;
const GROUP: u8 = 1;

/// `meta` key set once every stored message is indexed.
const INDEXED: &str = "search_index";

/// The words of `text`, as indexed and as queried.
pub fn words(text: &str, max: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let mut w = word.to_lowercase();
        if w.len() > MAX_WORD_BYTES {
            let mut cut = MAX_WORD_BYTES;
            while !w.is_char_boundary(cut) {
                cut -= 1;
            }
            w.truncate(cut);
        }
        out.insert(w);
        if out.len() == max {
            break;
        }
    }
    out
}

fn entry(word: &str, tree: u8, key: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(word.len() + 2 + key.len());
    e.extend_from_slice(word.as_bytes());
    e.push(0);
    e.push(tree);
    e.extend_from_slice(key);
    e
}

/// A message a search found.
#[derive(Clone, Debug)]
pub enum SearchHit {
    /// In a one-to-one conversation.
    OneToOne(StoredMessage),
    /// In a group.
    Group(GroupStoredMessage),
}

impl SearchHit {
    fn text(&self) -> &str {
        match self {
            SearchHit::OneToOne(m) => &m.text,
            SearchHit::Group(m) => &m.text,
        }
    }

    fn sent_at_ms(&self) -> u64 {
        match self {
            SearchHit::OneToOne(m) => m.sent_at_ms,
            SearchHit::Group(m) => m.sent_at_ms,
        }
    }
}

impl Store {
    /// Indexes the words of `text`, the message at `key` in `tree`.
    fn index_words(&self, tree: u8, key: &[u8], text: &str) -> Result<(), StoreError> {
        for w in words(text, MAX_WORDS_PER_MESSAGE) {
            self.search_index.insert(entry(&w, tree, key), &[][..])?;
        }
        Ok(())
    }

    /// Indexes a one-to-one message about to be stored at `key` in `messages`.
    pub(super) fn index_message(&self, key: &[u8], text: &str) -> Result<(), StoreError> {
        self.index_words(ONE_TO_ONE, key, text)
    }

    /// Indexes a group message about to be stored at `key` in `group_messages`.
    pub(super) fn index_group_message(&self, key: &[u8], text: &str) -> Result<(), StoreError> {
        self.index_words(GROUP, key, text)
    }

    /// Removes a one-to-one message's index entries (it is being deleted).
    pub(super) fn unindex_message(&self, key: &[u8], text: &str) -> Result<(), StoreError> {
        for w in words(text, MAX_WORDS_PER_MESSAGE) {
            self.search_index.remove(entry(&w, ONE_TO_ONE, key))?;
        }
        Ok(())
    }

    /// Removes a group message's index entries (it is being deleted).
    pub(super) fn unindex_group_message(&self, key: &[u8], text: &str) -> Result<(), StoreError> {
        for w in words(text, MAX_WORDS_PER_MESSAGE) {
            self.search_index.remove(entry(&w, GROUP, key))?;
        }
        Ok(())
    }

    /// Indexes every stored message once (the stores made before the index existed).
    pub(super) fn build_search_index(&self) -> Result<(), StoreError> {
        if self.meta.contains_key(INDEXED)? {
            return Ok(());
        }
        let mut n = 0usize;
        for item in self.messages.iter() {
            let (k, v) = item?;
            if let Some(m) = self.decode_message(&k, &v)? {
                self.index_message(&k, &m.text)?;
                n += 1;
            }
        }
        let t = self.group_messages_tree();
        for item in t.iter() {
            let (k, v) = item?;
            if let Some(m) = self.decode::<GroupStoredMessage>(t, &k, &v)? {
                self.index_group_message(&k, &m.text)?;
                n += 1;
            }
        }
        self.meta.insert(INDEXED, &[1u8][..])?;
        if n > 0 {
            tracing::info!(messages = n, "search index built");
        }
        Ok(())
    }

    /// The messages matching `query`, newest first: skip `offset`, at most `count`; `true`
    /// when more follow. At most [`MAX_CANDIDATES`] messages are looked at.
    pub fn search(
        &self,
        query: &str,
        offset: usize,
        count: usize,
    ) -> Result<(Vec<SearchHit>, bool), StoreError> {
        let terms: Vec<String> = words(query, MAX_QUERY_WORDS).into_iter().collect();
        // The longest word names the fewest messages.
        let Some(lead) = terms.iter().max_by_key(|w| w.len()) else {
            return Ok((Vec::new(), false));
        };
        let mut seen = HashSet::new();
        let mut hits = Vec::new();
        for item in self.search_index.scan_prefix(lead.as_bytes()) {
            let (k, _) = item?;
            let Some(sep) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let (Some(&tree), Some(key)) = (k.get(sep + 1), k.get(sep + 2..)) else {
                continue;
            };
            if !seen.insert((tree, key.to_vec())) {
                continue;
            }
            if seen.len() > MAX_CANDIDATES {
                tracing::debug!(query, "search looked at its most candidates");
                break;
            }
            let hit = match tree {
                ONE_TO_ONE => match self.messages.get(key)? {
                    Some(v) => self.decode_message(key, &v)?.map(SearchHit::OneToOne),
                    None => None,
                },
                GROUP => {
                    let t = self.group_messages_tree();
                    match t.get(key)? {
                        Some(v) => self
                            .decode::<GroupStoredMessage>(t, key, &v)?
                            .map(SearchHit::Group),
                        None => None,
                    }
                }
                _ => None,
            };
            let Some(hit) = hit else {
                // The message is gone (deleted, or a crash before it was written).
                self.search_index.remove(&k)?;
                continue;
            };
            let have = words(hit.text(), MAX_WORDS_PER_MESSAGE);
            if terms
                .iter()
                .all(|t| have.iter().any(|w| w.starts_with(t.as_str())))
            {
                hits.push(hit);
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.sent_at_ms()));
        let more = hits.len() > offset.saturating_add(count);
        let page = hits.into_iter().skip(offset).take(count).collect();
        Ok((page, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_split_at_non_letters_and_cut() {
        let w = words("Hello, WORLD! héllo-wörld 42x", 10);
        let got: Vec<&str> = w.iter().map(String::as_str).collect();
        assert_eq!(got, ["42x", "hello", "héllo", "world", "wörld"]);
        let long = "ä".repeat(40);
        let cut = words(&long, 10);
        let only = cut.iter().next().expect("one word");
        assert!(only.len() <= MAX_WORD_BYTES && only.chars().all(|c| c == 'ä'));
        assert_eq!(words("a b c d e", 3).len(), 3);
        assert!(words(" ,.;", 10).is_empty());
    }
}
