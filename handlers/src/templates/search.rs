//! Search over template metadata (domain.md section 2): filters, language variant sets, free
//! text where every word must match (AND) with field weights, sorting and paging. Results carry
//! metadata, never bodies. Pure: the caller hands over one tenant's templates.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// What search sees of a template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub language: String,
    pub framework: Option<String>,
    pub tags: Vec<String>,
    pub quality_score: i64,
    pub is_pinned: bool,
    pub quality_tier: String,
    pub usage_count: u64,
    /// Entry time of the create, in Unix milliseconds (naive ISO on the wire, as the old
    /// REST models read it).
    #[serde(with = "naive_time")]
    pub created_at: u64,
    #[serde(default, with = "naive_time")]
    pub updated_at: u64,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub created_by: String,
    /// `draft`, `review`, `approved` or `deprecated`.
    #[serde(default)]
    pub status: String,
}

/// Unix milliseconds written as the old services' naive ISO time; read from either form.
mod naive_time {
    use maestro_schemas::ids::{naive_iso, parse_utc_ms};
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&naive_iso(*ms))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Time {
        Ms(u64),
        Iso(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        match Time::deserialize(deserializer)? {
            Time::Ms(ms) => Ok(ms),
            Time::Iso(text) => parse_utc_ms(&text).ok_or_else(|| D::Error::custom(format!("not a time: {text:?}"))),
        }
    }
}

/// A template's metadata with its text fields lowercased once, so a query over thousands of
/// templates compares without allocating.
///
/// Every template of a searched tenant is held in memory, so nothing is held twice: `meta`
/// keeps only what filters and sorting compare (its name, description and language are
/// empty: they are searched lowercased, and shown from `json`), and tags already lowercase
/// are not copied.
#[derive(Clone, Debug, PartialEq)]
pub struct Indexed {
    pub meta: TemplateMeta,
    name: String,
    text: String,
    /// The tags lowercased when some tag is not; else empty, and `meta.tags` serve.
    lower_tags: Vec<String>,
    language: String,
    framework: String,
    /// The id's first 16 bytes as a big-endian number: orders like the id, except for ties.
    id_prefix: u128,
    /// The lowercased name's first eight bytes, the same way (see [`prefix`]).
    name_prefix: u64,
    /// The variant sets of the language (see [`LANGUAGE_SETS`]).
    language_sets: u8,
    /// `meta` as JSON, as a page of results shows it.
    json: String,
    /// `{template_id, name, category}`, the old stream answer's search hit.
    brief: String,
}

impl Indexed {
    pub fn new(meta: TemplateMeta) -> Indexed {
        let json = serde_json::to_string(&meta).unwrap_or_default();
        Indexed::with_json(meta, json)
    }

    /// The template with `json`, its metadata already serialised (as stored).
    pub fn with_json(mut meta: TemplateMeta, json: String) -> Indexed {
        let mut prefix = [0u8; 16];
        let n = meta.id.len().min(16);
        prefix[..n].copy_from_slice(&meta.id.as_bytes()[..n]);
        let brief =
            serde_json::json!({"template_id": meta.id, "name": meta.name, "category": meta.category}).to_string();
        let language = std::mem::take(&mut meta.language).to_lowercase();
        let name = std::mem::take(&mut meta.name).to_lowercase();
        let text = format!("{}\n{}", std::mem::take(&mut meta.description), meta.category).to_lowercase();
        let lowercase = |tag: &String| tag.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase());
        let lower_tags = if meta.tags.iter().all(lowercase) {
            Vec::new()
        } else {
            meta.tags.iter().map(|t| t.to_lowercase()).collect()
        };
        Indexed {
            id_prefix: u128::from_be_bytes(prefix),
            name_prefix: self::prefix(&name),
            name,
            // Description and category weigh the same, so one haystack serves both.
            text,
            lower_tags,
            language_sets: language_sets(&language),
            language,
            framework: meta.framework.as_deref().unwrap_or("").to_lowercase(),
            meta,
            json,
            brief,
        }
    }

    /// The tags, lowercased.
    fn tags(&self) -> &[String] {
        if self.lower_tags.is_empty() { &self.meta.tags } else { &self.lower_tags }
    }

    /// Whether `other` has the same searchable text (so only counters changed).
    pub fn same_text(&self, other: &Indexed) -> bool {
        (&self.name, &self.text, self.tags(), &self.language, &self.framework)
            == (&other.name, &other.text, other.tags(), &other.language, &other.framework)
    }

    /// Whether `other` has the same values in the fields search filters on (the lowercased
    /// language and framework are compared by [`Indexed::same_text`]).
    pub fn same_filtered_fields(&self, other: &Indexed) -> bool {
        let (a, b) = (&self.meta, &other.meta);
        (&a.framework, &a.category, &a.tags, a.quality_score, a.is_pinned, &a.quality_tier)
            == (&b.framework, &b.category, &b.tags, b.quality_score, b.is_pinned, &b.quality_tier)
    }

    /// Every byte trigram of the searchable text, and the bigram (as a [`bigram`] key) of each
    /// two-byte field, with the fields (a [`Fields`] mask) it occurs in: a word can be in a
    /// field only if all of its trigrams are. A two-byte word is in exactly the fields of the
    /// trigrams that start or end with it, and of its bigram: in a field of three bytes or
    /// more every pair of bytes is in a trigram. Bigrams of longer fields would double the
    /// postings, which are most of the index's memory.
    pub fn trigrams(&self) -> std::collections::BTreeMap<[u8; 3], Fields> {
        let mut grams = std::collections::BTreeMap::new();
        let fields = [(NAME_FIELD, &self.name), (TEXT_FIELD, &self.text), (LANGUAGE_FIELD, &self.language)]
            .into_iter()
            .chain([(LANGUAGE_FIELD, &self.framework)])
            .chain(self.tags().iter().map(|t| (TAGS_FIELD, t)));
        for (field, text) in fields {
            for w in text.as_bytes().windows(3) {
                *grams.entry([w[0], w[1], w[2]]).or_insert(0) |= field;
            }
            if let [a, b] = text.as_bytes() {
                *grams.entry(bigram(*a, *b)).or_insert(0) |= field;
            }
        }
        grams
    }
}

/// The gram key of a two-byte sequence: 0xFF never occurs in UTF-8, so it cannot collide with
/// a trigram.
pub fn bigram(a: u8, b: u8) -> [u8; 3] {
    [a, b, 0xFF]
}

/// A set of searchable fields, one bit each.
pub type Fields = u8;
pub const NAME_FIELD: Fields = 1;
pub const TEXT_FIELD: Fields = 2;
pub const TAGS_FIELD: Fields = 4;
pub const LANGUAGE_FIELD: Fields = 8;
pub const ALL_FIELDS: Fields = 15;

/// A template that may match, with the fields each query word may be in: four bits per word,
/// word `i` at bits `4i..4i+4` (words beyond the eighth may be anywhere).
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub template: &'a Indexed,
    /// Where the corpus keeps it.
    pub slot: u32,
    pub fields: u32,
    /// Whether `fields` comes from a trigram index (exact for two- and three-byte words).
    pub indexed: bool,
}

impl Candidate<'_> {
    /// The fields word `i` may be in.
    pub fn fields_of(&self, i: usize) -> Fields {
        if i < 8 { (self.fields >> (4 * i)) as Fields & ALL_FIELDS } else { ALL_FIELDS }
    }
}

/// Where a search looks: something that narrows the templates down to those that may contain
/// every query word. A plain slice offers all of them; the tenant index uses trigrams.
pub trait Corpus {
    /// A superset of the templates containing every word (lowercase), in any order.
    fn candidates(&self, words: &[String]) -> Vec<Candidate<'_>>;

    /// Every template that `m` matches, with its relevance, in any order.
    fn matching(&self, m: &Matching) -> Vec<(&Indexed, Relevance)> {
        self.candidates(&m.words).into_iter().filter_map(|c| Some((c.template, m.score(&c)?))).collect()
    }
}

impl Corpus for [Indexed] {
    fn candidates(&self, _words: &[String]) -> Vec<Candidate<'_>> {
        self.iter()
            .enumerate()
            .map(|(slot, template)| Candidate { template, slot: slot as u32, fields: u32::MAX, indexed: false })
            .collect()
    }
}

/// A search request's parameters.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Query {
    pub query: Option<String>,
    pub language: Option<String>,
    #[serde(flatten)]
    pub filters: Filters,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub page: Option<u64>,
    pub page_size: Option<u64>,
}

/// The filters of a search compared as given (the language, in variant sets, is apart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub framework: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub min_quality_score: Option<i64>,
    pub pinned: Option<bool>,
    pub quality_tier: Option<String>,
}

/// What decides whether a template matches a query and how relevant it is: the query's words
/// and filters, normalised (sorting and paging only order the matches).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Matching {
    /// The free-text words, lowercased.
    pub words: Vec<String>,
    /// The language filter, lowercased, and the variant sets it is in.
    pub language: Option<String>,
    language_sets: u8,
    pub filters: Filters,
}

impl Matching {
    pub fn of(q: &Query) -> Matching {
        Matching {
            words: q.query.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect(),
            language: q.language.as_deref().map(str::to_lowercase),
            language_sets: q.language.as_deref().map_or(0, |l| language_sets(&l.to_lowercase())),
            filters: q.filters.clone(),
        }
    }

    /// The relevance of a candidate, or `None` when a filter or a word does not match it.
    pub fn score(&self, c: &Candidate<'_>) -> Option<Relevance> {
        self.filters_pass(c.template).then(|| relevance(c, &self.words))?
    }

    /// [`Matching::score`] of a template the index has not narrowed down.
    pub fn score_template(&self, template: &Indexed) -> Option<Relevance> {
        self.score(&Candidate { template, slot: 0, fields: u32::MAX, indexed: false })
    }

    fn filters_pass(&self, indexed: &Indexed) -> bool {
        let (t, f) = (&indexed.meta, &self.filters);
        // A template answers a language when it names it, or a variant of the same set.
        self.language
            .as_deref()
            .is_none_or(|l| l == indexed.language || self.language_sets & indexed.language_sets != 0)
            && f.framework.as_deref().is_none_or(|w| t.framework.as_deref() == Some(w))
            && f.category.as_deref().is_none_or(|c| t.category == c)
            && (f.tags.is_empty() || f.tags.iter().any(|tag| t.tags.contains(tag)))
            && f.min_quality_score.is_none_or(|min| t.quality_score >= min)
            && f.pinned.is_none_or(|p| t.is_pinned == p)
            && f.quality_tier.as_deref().is_none_or(|tier| t.quality_tier == tier)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<'a> {
    pub total: usize,
    pub page: u64,
    pub page_size: u64,
    pub templates: Vec<&'a Indexed>,
}

impl Page<'_> {
    /// The page as JSON: the old stream answer's `results` and `total`, then the old REST
    /// list's `page`, `page_size` and `templates` (each template's metadata as stored).
    pub fn json(&self) -> String {
        let join = |part: fn(&Indexed) -> &str| self.templates.iter().map(|t| part(t)).collect::<Vec<_>>().join(",");
        format!(
            r#"{{"results":[{}],"total":{},"page":{},"page_size":{},"templates":[{}]}}"#,
            join(|t| &t.brief),
            self.total,
            self.page,
            self.page_size,
            join(|t| &t.json)
        )
    }
}

const LANGUAGE_SETS: [&[&str]; 5] = [
    &["js", "ts", "javascript", "typescript"],
    &["python", "python3", "py"],
    &["node", "nodejs", "node.js", "js", "ts", "javascript", "typescript"],
    &["ruby", "rb"],
    &["go", "golang"],
];

/// The variant sets `language` (lowercase) is in, one bit each.
fn language_sets(language: &str) -> u8 {
    LANGUAGE_SETS.iter().enumerate().filter(|(_, set)| set.contains(&language)).fold(0, |bits, (i, _)| bits | 1 << i)
}

/// What a search sorts by, decided once per query so that the loop over the hits branches the
/// same way every time.
#[derive(Clone, Copy, PartialEq)]
enum SortBy {
    CreatedAt,
    QualityScore,
    UsageCount,
    Name,
    Relevance,
}

/// The `sort_by` values a request may name.
const SORTS: [(&str, SortBy); 5] = [
    ("created_at", SortBy::CreatedAt),
    ("quality_score", SortBy::QualityScore),
    ("usage_count", SortBy::UsageCount),
    ("name", SortBy::Name),
    ("relevance", SortBy::Relevance),
];

impl SortBy {
    fn named(name: &str) -> Result<SortBy, String> {
        SORTS.iter().find(|(key, _)| *key == name).map(|(_, sort)| *sort).ok_or_else(|| {
            let keys: Vec<&str> = SORTS.iter().map(|(key, _)| *key).collect();
            format!("sort_by {name:?} must be one of {}", keys.join(", "))
        })
    }

    /// The primary key of a hit; a name by its first eight bytes.
    fn key(self, t: &Indexed, relevance: Relevance) -> u64 {
        match self {
            SortBy::CreatedAt => t.meta.created_at,
            SortBy::QualityScore => t.meta.quality_score.max(0) as u64,
            SortBy::UsageCount => t.meta.usage_count,
            SortBy::Name => t.name_prefix,
            SortBy::Relevance => u64::from(relevance),
        }
    }
}

/// A hit's free-text relevance: at most 15 a word, so 32 bits hold a query of hundreds of
/// millions of words, and a remembered match takes eight bytes.
pub type Relevance = u32;

/// Field weights of the free-text relevance: name highest, language and framework lowest.
const NAME: Relevance = 8;
const DESCRIPTION_CATEGORY: Relevance = 4;
const TAGS: Relevance = 2;
const LANGUAGE_FRAMEWORK: Relevance = 1;

/// Relevance of `t` for the query words, or `None` when some word matches no field (AND).
fn relevance(c: &Candidate<'_>, words: &[String]) -> Option<Relevance> {
    let t = c.template;
    words.iter().enumerate().try_fold(0 as Relevance, |total, (i, word)| {
        let word = word.as_str();
        let may = c.fields_of(i);
        // For a two- or three-byte word the index's field set is exact: a three-byte word is
        // its own trigram, a two-byte word the trigrams that start or end with it.
        let exact = (word.len() == 2 || word.len() == 3) && c.indexed;
        let has = |field: Fields, found: &dyn Fn() -> bool| may & field != 0 && (exact || found());
        let weight = Relevance::from(has(NAME_FIELD, &|| t.name.contains(word))) * NAME
            + Relevance::from(has(TEXT_FIELD, &|| t.text.contains(word))) * DESCRIPTION_CATEGORY
            + Relevance::from(has(TAGS_FIELD, &|| t.tags().iter().any(|tag| tag.contains(word)))) * TAGS
            + Relevance::from(has(LANGUAGE_FIELD, &|| t.language.contains(word) || t.framework.contains(word)))
                * LANGUAGE_FRAMEWORK;
        (weight > 0).then_some(total.saturating_add(weight))
    })
}

/// The first eight bytes of `text` as a big-endian number: orders like the text, except for ties.
fn prefix(text: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = text.len().min(8);
    bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

/// The `k` smallest of `items` by `order`, in order: one pass with a heap of the `k` kept, whose
/// largest is at the root, so most items are turned away by one comparison with it.
fn smallest<T: Copy>(items: impl Iterator<Item = T>, k: usize, order: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    let less = |a: &T, b: &T| order(a, b) == Ordering::Less;
    let mut heap: Vec<T> = Vec::with_capacity(k.min(1 << 16));
    for item in items {
        if heap.len() < k {
            heap.push(item);
            let mut at = heap.len() - 1;
            while at > 0 && less(&heap[(at - 1) / 2], &heap[at]) {
                heap.swap(at, (at - 1) / 2);
                at = (at - 1) / 2;
            }
        } else if heap.first().is_some_and(|root| less(&item, root)) {
            heap[0] = item;
            let mut at = 0;
            loop {
                let (left, right) = (2 * at + 1, 2 * at + 2);
                let mut largest = at;
                if left < heap.len() && less(&heap[largest], &heap[left]) {
                    largest = left;
                }
                if right < heap.len() && less(&heap[largest], &heap[right]) {
                    largest = right;
                }
                if largest == at {
                    break;
                }
                heap.swap(at, largest);
                at = largest;
            }
        }
    }
    heap.sort_by(order);
    heap
}

/// Runs a query. Errors name the bad parameter.
pub fn search<'a, C: Corpus + ?Sized>(corpus: &'a C, q: &Query) -> Result<Page<'a>, String> {
    let page = q.page.unwrap_or(1);
    let page_size = q.page_size.unwrap_or(20);
    if page < 1 {
        return Err("page must be at least 1".into());
    }
    if !(1..=100).contains(&page_size) {
        return Err(format!("page_size {page_size} must be 1-100"));
    }
    let matching = Matching::of(q);
    let sort_by = q.sort_by.as_deref().unwrap_or(if matching.words.is_empty() { "created_at" } else { "relevance" });
    let descending = match q.sort_order.as_deref().unwrap_or(if sort_by == "name" { "asc" } else { "desc" }) {
        "asc" => false,
        "desc" => true,
        other => return Err(format!("sort_order {other:?} must be asc or desc")),
    };
    let sort_by = SortBy::named(sort_by)?;
    let found = corpus.matching(&matching);
    // Each hit gets a sort key of plain numbers, computed once: the primary key turned so that
    // smaller comes first (a name by its first eight bytes), then the id's first 16 bytes. Only
    // hits whose keys tie are compared in full: by name, then by id, so the same state always
    // pages the same way.
    let turn = |key: u64| if descending { !key } else { key };
    let by_name = sort_by == SortBy::Name;
    let order = |a: &(u64, u128, u32), b: &(u64, u128, u32)| {
        let (x, y) = (|| found[a.2 as usize].0, || found[b.2 as usize].0);
        let names = || match (by_name, descending) {
            (false, _) => Ordering::Equal,
            (true, false) => x().name.cmp(&y().name),
            (true, true) => y().name.cmp(&x().name),
        };
        a.0.cmp(&b.0).then_with(names).then_with(|| a.1.cmp(&b.1)).then_with(|| x().meta.id.cmp(&y().meta.id))
    };
    let keys =
        found.iter().enumerate().map(|(i, (t, relevance))| (turn(sort_by.key(t, *relevance)), t.id_prefix, i as u32));
    let start = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    // Only the pages up to the asked one need ordering.
    let wanted = start.saturating_add(page_size as usize);
    let top = smallest(keys, wanted, order);
    let total = found.len();
    let templates = top.into_iter().skip(start).map(|(_, _, i)| found[i as usize].0).collect();
    Ok(Page { total, page, page_size, templates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, name: &str, language: &str, tags: &[&str], score: i64, created_at: u64) -> TemplateMeta {
        TemplateMeta {
            id: id.into(),
            name: name.into(),
            description: format!("{name} template with tests and docker"),
            category: "backend".into(),
            language: language.into(),
            framework: Some("fastapi".into()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            quality_score: score,
            quality_tier: "standard".into(),
            created_at,
            ..TemplateMeta::default()
        }
    }

    fn catalogue() -> Vec<Indexed> {
        [
            meta("t1", "fastapi-service", "python", &["rest", "docker"], 90, 10),
            meta("t2", "express-api", "javascript", &["rest"], 75, 20),
            meta("t3", "nest-service", "typescript", &["grpc"], 80, 30),
            meta("t4", "rails-app", "ruby", &["web"], 60, 40),
            meta("t5", "gin-api", "golang", &["rest", "api"], 95, 50),
        ]
        .into_iter()
        .map(Indexed::new)
        .collect()
    }

    fn ids(page: &Page<'_>) -> Vec<String> {
        page.templates.iter().map(|t| t.meta.id.clone()).collect()
    }

    #[test]
    fn language_variant_sets() {
        let all = catalogue();
        let by = |language: &str| {
            ids(&search(all.as_slice(), &Query { language: Some(language.into()), ..Query::default() }).unwrap())
        };
        assert_eq!(by("py"), vec!["t1"]);
        assert_eq!(by("ts"), vec!["t3", "t2"], "js and ts share a set");
        assert_eq!(by("nodejs"), vec!["t3", "t2"]);
        assert_eq!(by("go"), vec!["t5"]);
        assert_eq!(by("rb"), vec!["t4"]);
        assert!(by("cobol").is_empty());
    }

    #[test]
    fn every_word_must_match_and_the_name_weighs_most() {
        let all = catalogue();
        let q =
            |text: &str| ids(&search(all.as_slice(), &Query { query: Some(text.into()), ..Query::default() }).unwrap());
        assert_eq!(q("service docker"), vec!["t1", "t3"], "AND over the words; both in name and description");
        // Words match inside fields: "api" is in every framework ("fastapi", weight 1), in three
        // names (8) and their descriptions (4), and in one tag (2): 15, 13, 13, 1, 1.
        assert_eq!(q("api"), vec!["t5", "t1", "t2", "t3", "t4"], "ties fall back to the id");
        assert!(q("service cobol").is_empty());
        let rest = q("rest");
        assert_eq!(rest, vec!["t1", "t2", "t5"], "tag-only matches tie and fall back to the id");
        // Case never matters: not in the words, nor in any field.
        let shouting = Indexed::new(meta("t9", "Loud-Service", "Python", &["GRPC", "Rest"], 50, 1));
        let found =
            search(std::slice::from_ref(&shouting), &Query { query: Some("grpc LOUD".into()), ..Query::default() });
        assert_eq!(ids(&found.unwrap()), vec!["t9"]);
        let found = search(std::slice::from_ref(&shouting), &Query { query: Some("rest".into()), ..Query::default() });
        assert_eq!(ids(&found.unwrap()), vec!["t9"]);
        // An unknown sort key is refused with the ones there are.
        let wrong = Query { sort_by: Some("popularity".into()), ..Query::default() };
        let error = search(std::slice::from_ref(&shouting), &wrong).err().unwrap_or_default();
        assert!(error.contains("\"popularity\"") && error.contains("created_at, quality_score"), "{error}");
        let by_name = Query { sort_by: Some("name".into()), ..Query::default() };
        assert!(search(std::slice::from_ref(&shouting), &by_name).is_ok());
    }

    /// Pages cut from the order the docs define (key, then name for a name sort, then id),
    /// with many ties, small pages and a later large one.
    #[test]
    fn pages_follow_the_documented_order_through_ties() {
        let all: Vec<Indexed> = (0..300u64)
            .map(|i| {
                let name = format!("{}-template", ["alpha", "beta", "alphabet"][(i % 3) as usize]);
                let mut t = meta(&format!("t{:03}", (i * 7919) % 300), &name, "go", &[], (i % 4) as i64, i % 5);
                t.usage_count = i % 6;
                Indexed::new(t)
            })
            .collect();
        for (sort_by, order) in [
            ("created_at", "desc"),
            ("usage_count", "asc"),
            ("name", "asc"),
            ("name", "desc"),
            ("quality_score", "desc"),
        ] {
            let mut expected: Vec<&Indexed> = all.iter().collect();
            let key = |t: &Indexed| match sort_by {
                "created_at" => (t.meta.created_at, String::new()),
                "usage_count" => (t.meta.usage_count, String::new()),
                "quality_score" => (t.meta.quality_score as u64, String::new()),
                _ => (0, t.name.clone()),
            };
            expected.sort_by(|a, b| {
                let primary = if order == "desc" { key(b).cmp(&key(a)) } else { key(a).cmp(&key(b)) };
                primary.then_with(|| a.meta.id.cmp(&b.meta.id))
            });
            let expected: Vec<String> = expected.iter().map(|t| t.meta.id.clone()).collect();
            let q = |page: u64, page_size: u64| {
                let query = Query {
                    sort_by: Some(sort_by.into()),
                    sort_order: Some(order.into()),
                    page: Some(page),
                    page_size: Some(page_size),
                    ..Query::default()
                };
                ids(&search(all.as_slice(), &query).unwrap())
            };
            let small: Vec<String> = (1..=5).flat_map(|page| q(page, 7)).collect();
            assert_eq!(small, expected[..35], "{sort_by} {order}");
            assert_eq!(q(2, 100), expected[100..200], "{sort_by} {order}");
        }
    }

    #[test]
    fn parameters_parse_with_their_filters() {
        let json = r#"{"query":"api","language":"py","tags":["rest"],"min_quality_score":80,"pinned":true,
                       "quality_tier":"gold","framework":"fastapi","category":"backend","page":2,"page_size":5}"#;
        let q: Query = serde_json::from_str(json).unwrap();
        let filters = Filters {
            framework: Some("fastapi".into()),
            category: Some("backend".into()),
            tags: vec!["rest".into()],
            min_quality_score: Some(80),
            pinned: Some(true),
            quality_tier: Some("gold".into()),
        };
        assert_eq!((q.filters, q.page, q.page_size), (filters, Some(2), Some(5)));
        let bad = serde_json::from_str::<Query>(r#"{"min_quality_score":"high"}"#).unwrap_err().to_string();
        assert!(bad.contains("invalid type"), "{bad}");
    }

    #[test]
    fn filters_sorting_and_paging() {
        let all = catalogue();
        let page = search(
            all.as_slice(),
            &Query {
                filters: Filters { tags: vec!["rest".into()], min_quality_score: Some(80), ..Filters::default() },
                ..Query::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&page), vec!["t5", "t1"], "newest first by default");
        let by_score = search(
            all.as_slice(),
            &Query { sort_by: Some("quality_score".into()), sort_order: Some("asc".into()), ..Query::default() },
        )
        .unwrap();
        assert_eq!(ids(&by_score), vec!["t4", "t2", "t3", "t1", "t5"]);
        let by_name = search(all.as_slice(), &Query { sort_by: Some("name".into()), ..Query::default() }).unwrap();
        assert_eq!(ids(&by_name), vec!["t2", "t1", "t5", "t3", "t4"]);
        let second = search(all.as_slice(), &Query { page: Some(2), page_size: Some(2), ..Query::default() }).unwrap();
        assert_eq!((second.total, ids(&second)), (5, vec!["t3".to_string(), "t2".to_string()]));
        let beyond = search(all.as_slice(), &Query { page: Some(u64::MAX), page_size: Some(100), ..Query::default() });
        assert_eq!(beyond.map(|p| (p.total, p.templates.len())), Ok((5, 0)), "a page past the end is empty");
        for bad in [
            Query { page: Some(0), ..Query::default() },
            Query { page_size: Some(101), ..Query::default() },
            Query { sort_by: Some("size".into()), ..Query::default() },
            Query { sort_order: Some("up".into()), ..Query::default() },
        ] {
            assert!(search(all.as_slice(), &bad).is_err(), "{bad:?}");
        }
    }
}
