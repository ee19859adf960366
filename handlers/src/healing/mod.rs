//! The healing domain (domain.md section 3): failure classification, the seven repair
//! strategies as text transforms, the confidence of a fix read with a real Python parser, and
//! the handler that runs orchestrators and the repair lifecycle as the `healing` projection.

pub mod classify;
pub mod confidence;
pub mod handler;
pub mod lifecycle;
pub mod model;
pub mod python;
pub mod result_json;
pub mod strategies;

use confidence::{Assessment, Parsed};
use strategies::Strategy;

/// The repair plan of one failure: its class, the strategy, the healed source (absent when the
/// strategy found nothing to change) and its assessment.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub class: classify::FailureClass,
    pub strategy: Strategy,
    pub healed: Option<String>,
    pub assessment: Option<Assessment>,
}

/// Plans the repair of `source` failing with `message`. Two parses: the original's (which
/// also decides between syntax repair and the class's strategy) and the healed source's.
pub fn plan(source: &str, message: &str) -> Plan {
    let class = classify::classify(message);
    let original = Parsed::of(source);
    let strategy = Strategy::for_failure(class, original.parses);
    let healed = strategy.apply(source, message);
    let assessment = healed.as_deref().map(|h| confidence::assess_parsed(source, &original, h));
    Plan { class, strategy, healed, assessment }
}

#[cfg(test)]
mod tests;
