//! How far a fix can be trusted (domain.md section 3): 0.7 when the healed source parses (0.3
//! when not) plus 0.3 times its similarity to the original, capped at 1.0. Similarity is the
//! mean of the non-blank line-count ratio (smaller over larger) and the Jaccard index of the
//! `def` names (1.0 when either side defines none).

use super::python;
use std::collections::BTreeSet;

/// What to do with a fix, by confidence band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Apply,
    ApplyWithReview,
    ProposeForReview,
    ReportOnly,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Apply => "apply",
            Decision::ApplyWithReview => "apply_with_review",
            Decision::ProposeForReview => "propose_for_review",
            Decision::ReportOnly => "report_only",
        }
    }

    /// The band of `confidence`: >= 0.90, 0.75-0.89, 0.60-0.74, below. A hair of tolerance
    /// keeps 0.7 + 0.3 x 2/3 in the band it is on paper.
    pub fn of(confidence: f64) -> Decision {
        let at_least = |band: f64| confidence + 1e-9 >= band;
        if at_least(0.90) {
            Decision::Apply
        } else if at_least(0.75) {
            Decision::ApplyWithReview
        } else if at_least(0.60) {
            Decision::ProposeForReview
        } else {
            Decision::ReportOnly
        }
    }
}

/// The verdict on one fix.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub parses: bool,
    pub similarity: f64,
    pub confidence: f64,
    /// The fix parses and stays similar (> 0.5) to the original.
    pub success: bool,
    pub decision: Decision,
}

fn non_blank_lines(source: &str) -> usize {
    source.lines().filter(|l| !l.trim().is_empty()).count()
}

/// `def` names without a parse tree, for a side that does not parse: the similarity still has
/// to be computed for it (its confidence then starts at 0.3).
fn def_names_by_line(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("async ").unwrap_or(l.trim_start()).strip_prefix("def "))
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// What one parse tells about a source: its `def` names, and whether it parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub parses: bool,
    pub names: BTreeSet<String>,
    /// Its top-level statements, when it parsed, for judging an edit of it.
    statements: Vec<python::TopLevel>,
}

impl Parsed {
    pub fn of(source: &str) -> Parsed {
        match python::outline(source) {
            Some(statements) => {
                let names = statements.iter().flat_map(|s| s.names.iter().cloned()).collect();
                Parsed { parses: true, names, statements }
            }
            None => Parsed { parses: false, names: def_names_by_line(source), statements: Vec::new() },
        }
    }

    /// What a parse of `edited`, an edit of `original` (parsed as `self`), tells: from the
    /// statements the edit touches when that is enough (see [`python::edited_def_names`]).
    fn of_edit(&self, original: &str, edited: &str) -> Parsed {
        match python::edited_def_names(original, &self.statements, edited) {
            Some(names) => Parsed { parses: true, names, statements: Vec::new() },
            None => Parsed::of(edited),
        }
    }
}

/// Similarity of `healed` to `original`, 0.0-1.0.
pub fn similarity(original: &str, healed: &str) -> f64 {
    similarity_of(original, &Parsed::of(original), healed, &Parsed::of(healed))
}

fn similarity_of(original: &str, parsed_original: &Parsed, healed: &str, parsed_healed: &Parsed) -> f64 {
    let (a, b) = (non_blank_lines(original), non_blank_lines(healed));
    let ratio = if a.max(b) == 0 { 1.0 } else { a.min(b) as f64 / a.max(b) as f64 };
    let (x, y) = (&parsed_original.names, &parsed_healed.names);
    let jaccard =
        if x.is_empty() || y.is_empty() { 1.0 } else { x.intersection(y).count() as f64 / x.union(y).count() as f64 };
    (ratio + jaccard) / 2.0
}

/// Assesses a fix.
pub fn assess(original: &str, healed: &str) -> Assessment {
    assess_parsed(original, &Parsed::of(original), healed)
}

/// Assesses a fix when the original was parsed already: one parse, of the healed source's
/// changed statements when they tell.
pub fn assess_parsed(original: &str, parsed_original: &Parsed, healed: &str) -> Assessment {
    let parsed_healed = parsed_original.of_edit(original, healed);
    let parses = parsed_healed.parses;
    let similarity = similarity_of(original, parsed_original, healed, &parsed_healed);
    let confidence = ((if parses { 0.7 } else { 0.3 }) + 0.3 * similarity).min(1.0);
    Assessment {
        parses,
        similarity,
        confidence,
        success: parses && similarity > 0.5,
        decision: Decision::of(confidence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_examples() {
        let original = "def test_a():\n    assert 1\n\ndef test_b():\n    assert 2\n";
        // Same text: similarity 1, confidence 0.7 + 0.3 = 1.0.
        let same = assess(original, original);
        assert_eq!((same.parses, same.similarity, same.confidence), (true, 1.0, 1.0));
        assert_eq!(same.decision, Decision::Apply);
        // One more line (5 vs 4 non-blank... 4 vs 5): ratio 0.8, names equal: 0.9; 0.7 + 0.27.
        let longer = "import time\ndef test_a():\n    assert 1\n\ndef test_b():\n    assert 2\n";
        let a = assess(original, longer);
        assert!((a.similarity - 0.9).abs() < 1e-12 && (a.confidence - 0.97).abs() < 1e-12, "{a:?}");
        // A test lost: names {a, b} vs {a}: Jaccard 0.5; lines 4 vs 2: 0.5; similarity 0.5,
        // confidence 0.85, and not a success (similarity must be above 0.5).
        let lost = assess(original, "def test_a():\n    assert 1\n");
        assert!((lost.similarity - 0.5).abs() < 1e-12 && (lost.confidence - 0.85).abs() < 1e-12, "{lost:?}");
        assert!(!lost.success);
        assert_eq!(lost.decision, Decision::ApplyWithReview);
        // Does not parse: 0.3 + 0.3 x similarity (here 1.0 by lines, names from the lines).
        let broken = assess(original, original.replace("test_b():", "test_b()").as_str());
        assert!(!broken.parses && (broken.confidence - 0.6).abs() < 1e-12, "{broken:?}");
        assert_eq!(broken.decision, Decision::ProposeForReview);
        assert!(!broken.success);
    }

    #[test]
    fn decision_bands_at_their_edges() {
        for (confidence, decision) in [
            (1.0, Decision::Apply),
            (0.90, Decision::Apply),
            (0.7 + 0.3 * (2.0 / 3.0), Decision::Apply),
            (0.8999, Decision::ApplyWithReview),
            (0.75, Decision::ApplyWithReview),
            (0.7499, Decision::ProposeForReview),
            (0.60, Decision::ProposeForReview),
            (0.5999, Decision::ReportOnly),
            (0.0, Decision::ReportOnly),
        ] {
            assert_eq!(Decision::of(confidence), decision, "{confidence}");
        }
    }
}
