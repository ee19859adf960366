//! The search index: each tenant's template metadata, parsed and lowercased once, rebuilt from
//! the catalogue projection whenever it does not match it.
//!
//! The index is a memo of the projection, not state of its own: every change to a tenant's
//! metadata (`m/` keys) also moves the tenant's metadata version `mv/<tenant>`, a hash chain over
//! the changes. The index remembers the version it was built for; a search whose state has
//! another version (a different store, a batch that was not committed, a restart) rebuilds the
//! tenant's index from the state. So a search's answer depends only on the state, as a pure
//! handler's must, while a search over 10,000 templates reads no sled key but the version.

use super::model::key;
use super::search::{ALL_FIELDS, Candidate, Corpus, Fields, Indexed, Matching, Relevance, TemplateMeta, bigram};
use crate::contract::{Change, StateView};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The version of one tenant's metadata.
pub type Version = [u8; 32];

/// One tenant's templates at a version, with a trigram index over their searchable text.
#[derive(Debug, Default)]
pub struct TenantIndex {
    pub version: Version,
    /// Boxed, so that the spare capacity of a growing vector costs a pointer a slot.
    docs: Vec<Option<Box<Indexed>>>,
    slots: HashMap<String, u32>,
    free: Vec<u32>,
    /// Trigram -> the templates whose text contains it, sorted by slot.
    grams: HashMap<[u8; 3], Vec<Posting>>,
    /// The matches of recent queries, kept exact as templates change (see [`Memo`]).
    memo: Mutex<Memo>,
}

impl Clone for TenantIndex {
    fn clone(&self) -> TenantIndex {
        TenantIndex {
            version: self.version,
            docs: self.docs.clone(),
            slots: self.slots.clone(),
            free: self.free.clone(),
            grams: self.grams.clone(),
            memo: Mutex::new(self.memo.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        }
    }
}

/// A template holding a trigram: its slot and the fields holding the trigram, in four bytes
/// (the slot in the upper 28 bits, the fields in the lower four), because a tenant's postings
/// are most of its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Posting(u32);

impl Posting {
    fn new(slot: u32, fields: Fields) -> Posting {
        Posting(slot << 4 | u32::from(fields & ALL_FIELDS))
    }

    fn slot(self) -> u32 {
        self.0 >> 4
    }

    fn fields(self) -> Fields {
        (self.0 & u32::from(ALL_FIELDS)) as Fields
    }
}

/// The most templates a tenant's index can hold: a slot has 28 bits (see [`Posting`]).
const MAX_SLOTS: usize = 1 << 28;

/// How many queries' matches the memo keeps, and how many matches in all: at eight bytes a
/// match, at most 4 MiB a tenant.
const MEMO_QUERIES: usize = 256;
const MEMO_MATCHES: usize = 1 << 19;

/// The matches of recent queries (their words and filters; sorting and paging come after), as
/// (slot, relevance) sorted by slot. Every change to a template's text or filtered fields
/// updates each entry, so an entry always equals a fresh evaluation: the memo changes how fast
/// a search answers, never what. A retrieve only moves the usage count, which no entry holds.
#[derive(Clone, Debug, Default)]
struct Memo {
    entries: HashMap<Matching, MemoEntry>,
    matches: usize,
    clock: u64,
}

#[derive(Clone, Debug)]
struct MemoEntry {
    hits: Vec<(u32, Relevance)>,
    used: u64,
}

impl Memo {
    fn get(&mut self, m: &Matching) -> Option<&[(u32, Relevance)]> {
        self.clock += 1;
        let entry = self.entries.get_mut(m)?;
        entry.used = self.clock;
        Some(&entry.hits)
    }

    fn insert(&mut self, m: Matching, hits: Vec<(u32, Relevance)>) {
        if hits.len() > MEMO_MATCHES {
            return;
        }
        while self.entries.len() >= MEMO_QUERIES || self.matches + hits.len() > MEMO_MATCHES {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(m, _)| m.clone()) else { break };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.matches -= gone.hits.len();
            }
        }
        self.matches += hits.len();
        self.entries.insert(m, MemoEntry { hits, used: self.clock });
    }

    /// The template in `slot` changed to `now` (`None`: removed): each entry drops or rescores it.
    fn update(&mut self, slot: u32, now: Option<&Indexed>) {
        for (m, entry) in &mut self.entries {
            let at = entry.hits.binary_search_by_key(&slot, |(s, _)| *s);
            let score = now.and_then(|t| m.score_template(t));
            match (at, score) {
                (Ok(at), Some(relevance)) => entry.hits[at].1 = relevance,
                (Ok(at), None) => {
                    entry.hits.remove(at);
                    self.matches -= 1;
                }
                (Err(at), Some(relevance)) => {
                    entry.hits.insert(at, (slot, relevance));
                    self.matches += 1;
                }
                (Err(_), None) => {}
            }
        }
    }
}

impl TenantIndex {
    /// The number of templates.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The template `id`, if indexed.
    pub fn get(&self, id: &str) -> Option<&Indexed> {
        self.docs.get(*self.slots.get(id)? as usize)?.as_deref()
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&mut self, meta: TemplateMeta, json: String) {
        let indexed = Indexed::with_json(meta, json);
        if let Some(&slot) = self.slots.get(&indexed.meta.id) {
            if let Some(old) = self.docs[slot as usize].as_ref().filter(|old| old.same_text(&indexed)) {
                // The trigrams stay. Only counters changed (a retrieve's usage count) when the
                // filtered fields are the same too, and then no memo entry changes.
                if !old.same_filtered_fields(&indexed) {
                    self.memo.get_mut().unwrap_or_else(PoisonError::into_inner).update(slot, Some(&indexed));
                }
                self.docs[slot as usize] = Some(Box::new(indexed));
                return;
            }
            self.remove(&indexed.meta.id.clone());
        }
        let slot = self.free.pop().unwrap_or(self.docs.len() as u32);
        if slot as usize >= MAX_SLOTS {
            // Not reachable in practice (at 2 KB or more a body, that many templates would be
            // over 500 GB in one tenant); a posting must never carry a slot it cannot hold.
            return;
        }
        for (gram, fields) in indexed.trigrams() {
            let postings = self.grams.entry(gram).or_default();
            // A new slot comes after every other: no search needed.
            let at = match postings.last() {
                Some(last) if last.slot() > slot => postings.partition_point(|p| p.slot() < slot),
                _ => postings.len(),
            };
            postings.insert(at, Posting::new(slot, fields));
        }
        self.memo.get_mut().unwrap_or_else(PoisonError::into_inner).update(slot, Some(&indexed));
        self.slots.insert(indexed.meta.id.clone(), slot);
        match self.docs.get_mut(slot as usize) {
            Some(place) => *place = Some(Box::new(indexed)),
            None => self.docs.push(Some(Box::new(indexed))),
        }
    }

    /// Gives back the spare capacity that building up the index left: most of a tenant's
    /// index is postings, and a vector that grew one push at a time can be half empty.
    fn shrink(&mut self) {
        self.docs.shrink_to_fit();
        self.slots.shrink_to_fit();
        self.grams.shrink_to_fit();
        for postings in self.grams.values_mut() {
            postings.shrink_to_fit();
        }
    }

    fn remove(&mut self, id: &str) {
        let Some(slot) = self.slots.remove(id) else { return };
        self.memo.get_mut().unwrap_or_else(PoisonError::into_inner).update(slot, None);
        if let Some(old) = self.docs[slot as usize].take() {
            for gram in old.trigrams().into_keys() {
                if let Some(postings) = self.grams.get_mut(&gram)
                    && let Ok(at) = postings.binary_search_by_key(&slot, |p| p.slot())
                {
                    postings.remove(at);
                }
            }
        }
        self.free.push(slot);
    }
}

impl Corpus for TenantIndex {
    fn matching(&self, m: &Matching) -> Vec<(&Indexed, Relevance)> {
        let resolve = |hits: &[(u32, Relevance)]| -> Vec<(&Indexed, Relevance)> {
            let mut found = Vec::with_capacity(hits.len());
            for (slot, relevance) in hits {
                if let Some(Some(template)) = self.docs.get(*slot as usize) {
                    found.push((&**template, *relevance));
                }
            }
            found
        };
        if let Some(hits) = self.memo().get(m) {
            return resolve(hits);
        }
        let mut hits: Vec<(u32, Relevance)> =
            self.candidates(&m.words).into_iter().filter_map(|c| Some((c.slot, m.score(&c)?))).collect();
        hits.sort_unstable_by_key(|(slot, _)| *slot);
        let found = resolve(&hits);
        self.memo().insert(m.clone(), hits);
        found
    }

    fn candidates(&self, words: &[String]) -> Vec<Candidate<'_>> {
        // Per word: the templates holding all its trigrams, with the fields holding them all,
        // packed four bits per word (see `Candidate`).
        let mut matched: Option<Vec<(u32, u32)>> = None;
        let mut unknown = u32::MAX;
        for (i, word) in words.iter().enumerate() {
            let Some(per_word) = self.word_candidates(word) else { continue };
            let Some(shift) = (i < 8).then_some(4 * i as u32) else { continue };
            unknown &= !(u32::from(ALL_FIELDS) << shift);
            let packed = |f: Fields| u32::from(f) << shift;
            matched = Some(match matched {
                None => per_word.into_iter().map(|(slot, f)| (slot, packed(f))).collect(),
                Some(mut so_far) => {
                    so_far.retain_mut(|(slot, fields)| match per_word.binary_search_by_key(slot, |(s, _)| *s) {
                        Ok(at) => {
                            *fields |= packed(per_word[at].1);
                            true
                        }
                        Err(_) => false,
                    });
                    so_far
                }
            });
        }
        let Some(slots) = matched else {
            // Only one-byte words: every template is a candidate, any field.
            return self
                .docs
                .iter()
                .enumerate()
                .filter_map(|(slot, t)| {
                    Some(Candidate { template: t.as_deref()?, slot: slot as u32, fields: u32::MAX, indexed: false })
                })
                .collect();
        };
        slots
            .into_iter()
            .filter_map(|(slot, fields)| {
                let template = self.docs[slot as usize].as_deref()?;
                Some(Candidate { template, slot, fields: fields | unknown, indexed: true })
            })
            .collect()
    }
}

impl TenantIndex {
    /// The (slot, fields) holding every trigram of `word`, or `None` when it has none.
    fn word_candidates(&self, word: &str) -> Option<Vec<(u32, Fields)>> {
        let mut lists: Vec<&[Posting]> = Vec::new();
        let postings = |key: [u8; 3]| self.grams.get(&key).map_or(&[][..], Vec::as_slice);
        match word.as_bytes() {
            [a, b] => return Some(self.pair_candidates(*a, *b)),
            bytes => lists.extend(bytes.windows(3).map(|g| postings([g[0], g[1], g[2]]))),
        }
        lists.sort_by_key(|l| l.len());
        let (first, rest) = lists.split_first()?;
        let mut out: Vec<(u32, Fields)> = first.iter().map(|p| (p.slot(), p.fields())).collect();
        for list in rest {
            let mut at = 0;
            // A merge of two slot-sorted lists, linear in both.
            out.retain_mut(|(slot, fields)| {
                while at < list.len() && list[at].slot() < *slot {
                    at += 1;
                }
                let found = at < list.len() && list[at].slot() == *slot;
                if found {
                    *fields &= list[at].fields();
                }
                found && *fields != 0
            });
        }
        Some(out)
    }

    /// The (slot, fields) holding the two bytes `a b`: the union of the trigrams that start or
    /// end with them and of the bigram of two-byte fields (see [`Indexed::trigrams`]).
    fn pair_candidates(&self, a: u8, b: u8) -> Vec<(u32, Fields)> {
        let mut fields = vec![0 as Fields; self.docs.len()];
        let mut add = |key: [u8; 3]| {
            for posting in self.grams.get(&key).map_or(&[][..], Vec::as_slice) {
                if let Some(f) = fields.get_mut(posting.slot() as usize) {
                    *f |= posting.fields();
                }
            }
        };
        add(bigram(a, b));
        for x in 0..=u8::MAX {
            add([a, b, x]);
            add([x, a, b]);
        }
        let found = fields.into_iter().enumerate().filter(|(_, f)| *f != 0);
        found.map(|(slot, f)| (slot as u32, f)).collect()
    }
}

/// The index of every tenant searched so far.
#[derive(Debug, Default)]
pub struct SearchIndex {
    tenants: Mutex<HashMap<String, Arc<TenantIndex>>>,
}

fn version_of(state: &dyn StateView, tenant: &str) -> Version {
    state.get(&key("mv", tenant, &[])).and_then(|v| v.as_slice().try_into().ok()).unwrap_or([0; 32])
}

impl SearchIndex {
    /// The tenant's index as of `state`, rebuilt from the state when the remembered one is of
    /// another version.
    pub fn tenant(&self, state: &dyn StateView, tenant: &str) -> Arc<TenantIndex> {
        let version = version_of(state, tenant);
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = tenants.get(tenant).filter(|i| i.version == version) {
            return Arc::clone(index);
        }
        let mut index = TenantIndex { version, ..TenantIndex::default() };
        for (_, value) in state.scan(&key("m", tenant, &[""])) {
            if let Ok(meta) = serde_json::from_slice::<TemplateMeta>(&value)
                && let Ok(json) = String::from_utf8(value)
            {
                index.put(meta, json);
            }
        }
        index.shrink();
        let index = Arc::new(index);
        tenants.insert(tenant.to_string(), Arc::clone(&index));
        index
    }

    /// Forgets every remembered query's matches, so the next search of each evaluates it
    /// afresh: for measuring that cost (answers are the same either way).
    pub fn forget_matches(&self) {
        for index in self.tenants.lock().unwrap_or_else(PoisonError::into_inner).values() {
            *index.memo() = Memo::default();
        }
    }

    /// The changes that store (`Some`) or remove (`None`) one template's metadata and move the
    /// tenant's version; the remembered index follows when it was current.
    pub fn change(&self, state: &dyn StateView, tenant: &str, id: &str, meta: Option<&TemplateMeta>) -> Vec<Change> {
        let before = version_of(state, tenant);
        let json = meta.map(|m| serde_json::to_string(m).unwrap_or_default());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&before);
        hasher.update(&(id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
        hasher.update(json.as_ref().map_or(&b"\xffdeleted"[..], |j| j.as_bytes()));
        let after = *hasher.finalize().as_bytes();
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = tenants.get_mut(tenant).filter(|i| i.version == before) {
            let index = Arc::make_mut(index);
            index.version = after;
            match meta {
                Some(meta) => index.put(meta.clone(), json.clone().unwrap_or_default()),
                None => index.remove(id),
            }
        }
        let meta_key = key("m", tenant, &[id]);
        vec![
            match json {
                Some(json) => Change::Put { key: meta_key, value: json.into_bytes() },
                None => Change::Delete { key: meta_key },
            },
            Change::Put { key: key("mv", tenant, &[]), value: after.to_vec() },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::apply_changes;
    use std::collections::BTreeMap;

    fn ids(index: &TenantIndex, words: &[&str]) -> Vec<String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let mut ids: Vec<String> = index.candidates(&words).into_iter().map(|c| c.template.meta.id.clone()).collect();
        ids.sort();
        ids
    }

    /// A repeatable stream of numbers below `n`, from `seed`.
    fn numbers(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        }
    }

    fn meta(id: &str, name: &str) -> TemplateMeta {
        TemplateMeta { id: id.into(), name: name.into(), ..TemplateMeta::default() }
    }

    #[test]
    fn the_index_follows_its_state_and_rebuilds_for_another() {
        let index = SearchIndex::default();
        let mut state = BTreeMap::new();
        let changes = index.change(&state, "acme", "a", Some(&meta("a", "alpha")));
        apply_changes(&mut state, &changes);
        assert_eq!(index.tenant(&state, "acme").len(), 1);
        // Changes made while the index is current update it in place.
        let changes = index.change(&state, "acme", "b", Some(&meta("b", "beta")));
        apply_changes(&mut state, &changes);
        let current = index.tenant(&state, "acme");
        assert_eq!(ids(&current, &[]), ["a", "b"]);
        assert_eq!(ids(&current, &["lph"]), ["a"], "trigrams narrow the candidates");
        assert_eq!(ids(&current, &["al", "zzz"]), Vec::<String>::new());
        // A change decided but never committed leaves the index ahead of the state: rebuilt.
        index.change(&state, "acme", "a", None);
        assert_eq!(index.tenant(&state, "acme").len(), 2);
        // Another state (another store) with other content is never answered from this one.
        let mut other = BTreeMap::new();
        let changes = index.change(&other, "acme", "z", Some(&meta("z", "zeta")));
        apply_changes(&mut other, &changes);
        assert_eq!(ids(&index.tenant(&other, "acme"), &[]), ["z"]);
        assert_eq!(ids(&index.tenant(&state, "acme"), &[]), ["a", "b"]);
    }

    /// The trigram index answers exactly as a scan of every template does.
    #[test]
    fn index_search_equals_a_full_scan() {
        use crate::templates::search::{Query, search};
        let words = ["api", "service", "fast", "ml", "naïve", "worker", "grpc", "docker", "data-pipe", "x"];
        let mut next = numbers(42);
        let index = SearchIndex::default();
        let mut state = BTreeMap::new();
        let mut all = Vec::new();
        for i in 0..400 {
            let meta = TemplateMeta {
                id: format!("t{i:03}"),
                name: format!("{}-{}", words[next(10)], words[next(10)]),
                description: format!("A {} template for {}", words[next(10)], words[next(10)]),
                category: ["backend", "data", "ml"][next(3)].into(),
                language: ["python", "go", "typescript"][next(3)].into(),
                framework: [None, Some("fastapi".to_string()), Some("gin".to_string())][next(3)].clone(),
                tags: (0..next(4)).map(|_| words[next(10)].to_string()).collect(),
                usage_count: next(50) as u64,
                created_at: next(1000) as u64,
                ..TemplateMeta::default()
            };
            let changes = index.change(&state, "acme", &meta.id, Some(&meta));
            apply_changes(&mut state, &changes);
            all.push(Indexed::new(meta));
        }
        let tenant = index.tenant(&state, "acme");
        let mut found = 0;
        for _ in 0..300 {
            // Two-byte words inside longer fields ("at" in "data") too.
            let asked = [&words[..], &["at", "go"]].concat();
            let text: Vec<&str> = (0..1 + next(3)).map(|_| asked[next(asked.len())]).collect();
            let mut query = Query { query: Some(text.join(" ").to_uppercase()), ..Query::default() };
            query.sort_by = [None, Some("name"), Some("usage_count"), Some("relevance")][next(4)].map(str::to_string);
            query.page_size = Some(1 + next(30) as u64);
            query.page = Some(1 + next(3) as u64);
            let from_index = search(tenant.as_ref(), &query).unwrap();
            let from_scan = search(all.as_slice(), &query).unwrap();
            assert_eq!(from_index, from_scan, "{query:?}");
            found += usize::from(from_scan.total > 0);
        }
        assert!(found > 100, "only {found} queries found anything: the comparison proves little");
    }

    /// Remembered matches stay exact while templates are created, renamed, refiltered,
    /// counted and deleted between queries that repeat.
    #[test]
    fn remembered_matches_equal_a_full_scan_as_templates_change() {
        use crate::templates::search::{Filters, Query, search};
        let words = ["api", "service", "ml", "worker", "docker", "x"];
        let mut next = numbers(7);
        let index = SearchIndex::default();
        let mut state = BTreeMap::new();
        let mut live: BTreeMap<String, TemplateMeta> = BTreeMap::new();
        let queries: Vec<Query> = (0..12)
            .map(|i| Query {
                query: Some(format!("{} {}", words[i % 6], ["", "api", "docker"][i % 3]).trim().to_string()),
                language: (i % 4 == 0).then(|| "py".to_string()),
                filters: Filters {
                    tags: if i % 5 == 0 { vec!["ml".to_string()] } else { Vec::new() },
                    min_quality_score: (i % 3 == 0).then_some(50),
                    ..Filters::default()
                },
                sort_by: Some(["usage_count", "relevance", "name"][i % 3].to_string()),
                page_size: Some(100),
                ..Query::default()
            })
            .collect();
        let (mut answered, mut changed_filters) = (0, 0);
        for step in 0..1500 {
            let id = format!("t{:02}", next(60));
            let mut meta =
                live.get(&id).cloned().unwrap_or_else(|| TemplateMeta { id: id.clone(), ..TemplateMeta::default() });
            match (live.contains_key(&id), next(6)) {
                (true, 0) => {
                    let changes = index.change(&state, "acme", &id, None);
                    apply_changes(&mut state, &changes);
                    live.remove(&id);
                    continue;
                }
                (true, 1 | 2) => meta.usage_count += 1,
                (true, 3) => {
                    meta.quality_score = next(100) as i64;
                    meta.tags = vec![words[next(6)].to_string()];
                    changed_filters += 1;
                }
                _ => {
                    meta.name = format!("{}-{}", words[next(6)], words[next(6)]);
                    meta.description = format!("A {} template", words[next(6)]);
                    meta.language = ["python", "go"][next(2)].into();
                    meta.quality_score = next(100) as i64;
                }
            }
            let changes = index.change(&state, "acme", &id, Some(&meta));
            apply_changes(&mut state, &changes);
            live.insert(id, meta);
            if step % 3 == 0 {
                let query = &queries[next(queries.len())];
                let tenant = index.tenant(&state, "acme");
                let all: Vec<Indexed> = live.values().cloned().map(Indexed::new).collect();
                assert_eq!(
                    search(tenant.as_ref(), query).unwrap(),
                    search(all.as_slice(), query).unwrap(),
                    "step {step}: {query:?}"
                );
                answered += 1;
            }
        }
        assert!(answered > 400 && changed_filters > 100, "{answered} queries, {changed_filters} filter changes");
        let distinct: std::collections::HashSet<Matching> = queries.iter().map(Matching::of).collect();
        let remembered = index.tenant(&state, "acme").memo().entries.len();
        assert_eq!(remembered, distinct.len(), "every query's matches were remembered, and kept current");
    }
}
