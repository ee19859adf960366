//! Search over template metadata (domain.md section 2): filters, language variant sets, free
//! text where every word must match (AND) with field weights, sorting and paging. Results carry
//! metadata, never bodies. Pure: the caller hands over one tenant's templates.

use serde::{Deserialize, Serialize};

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
    /// Entry time of the create, in Unix milliseconds.
    pub created_at: u64,
}

/// A template's metadata with its text fields lowercased once, so a query over thousands of
/// templates compares without allocating.
#[derive(Clone, Debug, PartialEq)]
pub struct Indexed {
    pub meta: TemplateMeta,
    name: String,
    text: String,
    tags: Vec<String>,
    language: String,
    framework: String,
    /// The id's first 16 bytes as a big-endian number: orders like the id, except for ties.
    id_prefix: u128,
}

impl Indexed {
    pub fn new(meta: TemplateMeta) -> Indexed {
        let mut prefix = [0u8; 16];
        let n = meta.id.len().min(16);
        prefix[..n].copy_from_slice(&meta.id.as_bytes()[..n]);
        Indexed {
            id_prefix: u128::from_be_bytes(prefix),
            name: meta.name.to_lowercase(),
            // Description and category weigh the same, so one haystack serves both.
            text: format!("{}\n{}", meta.description, meta.category).to_lowercase(),
            tags: meta.tags.iter().map(|t| t.to_lowercase()).collect(),
            language: meta.language.to_lowercase(),
            framework: meta.framework.as_deref().unwrap_or("").to_lowercase(),
            meta,
        }
    }

    /// Whether `other` has the same searchable text (so only counters changed).
    pub fn same_text(&self, other: &Indexed) -> bool {
        (&self.name, &self.text, &self.tags, &self.language, &self.framework)
            == (&other.name, &other.text, &other.tags, &other.language, &other.framework)
    }

    /// Every byte trigram of the searchable text, and every bigram (as [`bigram`] keys), with
    /// the fields (a [`Fields`] mask) it occurs in: a word can be in a field only if all of its
    /// trigrams are; a two-byte word is in exactly the fields of its bigram.
    pub fn trigrams(&self) -> std::collections::BTreeMap<[u8; 3], Fields> {
        let mut grams = std::collections::BTreeMap::new();
        let fields = [(NAME_FIELD, &self.name), (TEXT_FIELD, &self.text), (LANGUAGE_FIELD, &self.language)]
            .into_iter()
            .chain([(LANGUAGE_FIELD, &self.framework)])
            .chain(self.tags.iter().map(|t| (TAGS_FIELD, t)));
        for (field, text) in fields {
            for w in text.as_bytes().windows(3) {
                *grams.entry([w[0], w[1], w[2]]).or_insert(0) |= field;
            }
            for w in text.as_bytes().windows(2) {
                *grams.entry(bigram(w[0], w[1])).or_insert(0) |= field;
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
    pub fields: u32,
    /// Whether `fields` comes from a trigram index (exact for three-byte words).
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
}

impl Corpus for [Indexed] {
    fn candidates(&self, _words: &[String]) -> Vec<Candidate<'_>> {
        self.iter().map(|template| Candidate { template, fields: u32::MAX, indexed: false }).collect()
    }
}

/// A search request's parameters.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Query {
    pub query: Option<String>,
    pub language: Option<String>,
    pub framework: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub min_quality_score: Option<i64>,
    pub pinned: Option<bool>,
    pub quality_tier: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub page: Option<u64>,
    pub page_size: Option<u64>,
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page<'a> {
    pub total: usize,
    pub page: u64,
    pub page_size: u64,
    pub templates: Vec<&'a TemplateMeta>,
}

const LANGUAGE_SETS: [&[&str]; 5] = [
    &["js", "ts", "javascript", "typescript"],
    &["python", "python3", "py"],
    &["node", "nodejs", "node.js", "js", "ts", "javascript", "typescript"],
    &["ruby", "rb"],
    &["go", "golang"],
];

/// Whether a template in `language` answers a query for `wanted` (both lowercase).
pub fn language_matches(wanted: &str, language: &str) -> bool {
    wanted == language || LANGUAGE_SETS.iter().any(|set| set.contains(&wanted) && set.contains(&language))
}

const SORT_KEYS: [&str; 5] = ["created_at", "quality_score", "usage_count", "name", "relevance"];

/// Field weights of the free-text relevance: name highest, language and framework lowest.
const NAME: u64 = 8;
const DESCRIPTION_CATEGORY: u64 = 4;
const TAGS: u64 = 2;
const LANGUAGE_FRAMEWORK: u64 = 1;

/// Relevance of `t` for the query words, or `None` when some word matches no field (AND).
fn relevance(c: &Candidate<'_>, words: &[String]) -> Option<u64> {
    let t = c.template;
    words.iter().enumerate().try_fold(0, |total, (i, word)| {
        let word = word.as_str();
        let may = c.fields_of(i);
        // A two- or three-byte word is its own gram: the index's field set is exact for it.
        let exact = (word.len() == 2 || word.len() == 3) && c.indexed;
        let has = |field: Fields, found: &dyn Fn() -> bool| may & field != 0 && (exact || found());
        let weight = u64::from(has(NAME_FIELD, &|| t.name.contains(word))) * NAME
            + u64::from(has(TEXT_FIELD, &|| t.text.contains(word))) * DESCRIPTION_CATEGORY
            + u64::from(has(TAGS_FIELD, &|| t.tags.iter().any(|tag| tag.contains(word)))) * TAGS
            + u64::from(has(LANGUAGE_FIELD, &|| t.language.contains(word) || t.framework.contains(word)))
                * LANGUAGE_FRAMEWORK;
        (weight > 0).then_some(total + weight)
    })
}

fn filters_pass(indexed: &Indexed, q: &Query, language: Option<&str>) -> bool {
    let t = &indexed.meta;
    language.is_none_or(|l| language_matches(l, &indexed.language))
        && q.framework.as_deref().is_none_or(|f| t.framework.as_deref() == Some(f))
        && q.category.as_deref().is_none_or(|c| t.category == c)
        && (q.tags.is_empty() || q.tags.iter().any(|tag| t.tags.contains(tag)))
        && q.min_quality_score.is_none_or(|min| t.quality_score >= min)
        && q.pinned.is_none_or(|p| t.is_pinned == p)
        && q.quality_tier.as_deref().is_none_or(|tier| t.quality_tier == tier)
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
    let words: Vec<String> = q.query.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
    let sort_by = q.sort_by.as_deref().unwrap_or(if words.is_empty() { "created_at" } else { "relevance" });
    let descending = match q.sort_order.as_deref().unwrap_or(if sort_by == "name" { "asc" } else { "desc" }) {
        "asc" => false,
        "desc" => true,
        other => return Err(format!("sort_order {other:?} must be asc or desc")),
    };
    if !SORT_KEYS.contains(&sort_by) {
        return Err(format!("sort_by {sort_by:?} must be one of {}", SORT_KEYS.join(", ")));
    }
    let language = q.language.as_deref().map(str::to_lowercase);
    // Each hit carries its sort key, computed once: (primary number, name, template).
    let mut hits: Vec<(u64, &str, &Indexed)> = corpus
        .candidates(&words)
        .into_iter()
        .filter(|c| filters_pass(c.template, q, language.as_deref()))
        .filter_map(|c| {
            let relevance = relevance(&c, &words)?;
            let t = c.template;
            Some(match sort_by {
                "created_at" => (t.meta.created_at, "", t),
                "quality_score" => (t.meta.quality_score.max(0) as u64, "", t),
                "usage_count" => (t.meta.usage_count, "", t),
                "name" => (0, t.name.as_str(), t),
                _ => (relevance, "", t),
            })
        })
        .collect();
    // Ties fall back to the id, so the same state always pages the same way.
    let order = |a: &(u64, &str, &Indexed), b: &(u64, &str, &Indexed)| {
        let primary = if descending { (b.0, b.1).cmp(&(a.0, a.1)) } else { (a.0, a.1).cmp(&(b.0, b.1)) };
        primary.then_with(|| a.2.id_prefix.cmp(&b.2.id_prefix)).then_with(|| a.2.meta.id.cmp(&b.2.meta.id))
    };
    let total = hits.len();
    let start = ((page - 1) * page_size) as usize;
    // Only the pages up to the asked one need ordering: select them, then sort those.
    let wanted = start.saturating_add(page_size as usize);
    if wanted < hits.len() {
        hits.select_nth_unstable_by(wanted, order);
        hits.truncate(wanted);
    }
    hits.sort_by(order);
    let templates = hits.into_iter().skip(start).map(|(_, _, t)| &t.meta).collect();
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
        page.templates.iter().map(|t| t.id.clone()).collect()
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
    }

    #[test]
    fn filters_sorting_and_paging() {
        let all = catalogue();
        let page = search(
            all.as_slice(),
            &Query { tags: vec!["rest".into()], min_quality_score: Some(80), ..Query::default() },
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
