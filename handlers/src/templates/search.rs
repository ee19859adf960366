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
}

impl Indexed {
    pub fn new(meta: TemplateMeta) -> Indexed {
        Indexed {
            name: meta.name.to_lowercase(),
            // Description and category weigh the same, so one haystack serves both.
            text: format!("{}\n{}", meta.description, meta.category).to_lowercase(),
            tags: meta.tags.iter().map(|t| t.to_lowercase()).collect(),
            language: meta.language.to_lowercase(),
            framework: meta.framework.as_deref().unwrap_or("").to_lowercase(),
            meta,
        }
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
fn relevance(t: &Indexed, words: &[String]) -> Option<u64> {
    words.iter().try_fold(0, |total, word| {
        let word = word.as_str();
        let weight = u64::from(t.name.contains(word)) * NAME
            + u64::from(t.text.contains(word)) * DESCRIPTION_CATEGORY
            + u64::from(t.tags.iter().any(|tag| tag.contains(word))) * TAGS
            + u64::from(t.language.contains(word) || t.framework.contains(word)) * LANGUAGE_FRAMEWORK;
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
pub fn search<'a>(templates: impl IntoIterator<Item = &'a Indexed>, q: &Query) -> Result<Page<'a>, String> {
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
    let mut hits: Vec<(u64, &TemplateMeta)> = templates
        .into_iter()
        .filter(|t| filters_pass(t, q, language.as_deref()))
        .filter_map(|t| relevance(t, &words).map(|r| (r, &t.meta)))
        .collect();
    let key = |(relevance, t): &(u64, &TemplateMeta)| -> (u64, String) {
        match sort_by {
            "created_at" => (t.created_at, String::new()),
            "quality_score" => (t.quality_score.max(0) as u64, String::new()),
            "usage_count" => (t.usage_count, String::new()),
            "name" => (0, t.name.to_lowercase()),
            _ => (*relevance, String::new()),
        }
    };
    // Ties fall back to the id, so the same state always pages the same way.
    hits.sort_by(|a, b| {
        let primary = if descending { key(b).cmp(&key(a)) } else { key(a).cmp(&key(b)) };
        primary.then_with(|| a.1.id.cmp(&b.1.id))
    });
    let total = hits.len();
    let start = ((page - 1) * page_size) as usize;
    let templates = hits.into_iter().skip(start).take(page_size as usize).map(|(_, t)| t).collect();
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
            ids(&search(&all, &Query { language: Some(language.into()), ..Query::default() }).unwrap())
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
        let q = |text: &str| ids(&search(&all, &Query { query: Some(text.into()), ..Query::default() }).unwrap());
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
        let page = search(&all, &Query { tags: vec!["rest".into()], min_quality_score: Some(80), ..Query::default() })
            .unwrap();
        assert_eq!(ids(&page), vec!["t5", "t1"], "newest first by default");
        let by_score = search(
            &all,
            &Query { sort_by: Some("quality_score".into()), sort_order: Some("asc".into()), ..Query::default() },
        )
        .unwrap();
        assert_eq!(ids(&by_score), vec!["t4", "t2", "t3", "t1", "t5"]);
        let by_name = search(&all, &Query { sort_by: Some("name".into()), ..Query::default() }).unwrap();
        assert_eq!(ids(&by_name), vec!["t2", "t1", "t5", "t3", "t4"]);
        let second = search(&all, &Query { page: Some(2), page_size: Some(2), ..Query::default() }).unwrap();
        assert_eq!((second.total, ids(&second)), (5, vec!["t3".to_string(), "t2".to_string()]));
        for bad in [
            Query { page: Some(0), ..Query::default() },
            Query { page_size: Some(101), ..Query::default() },
            Query { sort_by: Some("size".into()), ..Query::default() },
            Query { sort_order: Some("up".into()), ..Query::default() },
        ] {
            assert!(search(&all, &bad).is_err(), "{bad:?}");
        }
    }
}
