//! Failure classification (domain.md section 3): the first matching rule wins, on the real
//! error message. The old service passed the message under the wrong key, so everything came
//! out as flaky; here the message itself is read.

/// The six failure classes, each with the strategy that repairs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureClass {
    ImportError,
    AssertionFailure,
    Timeout,
    ApiChange,
    EnvironmentIssue,
    FlakyBehavior,
}

impl FailureClass {
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::ImportError => "import_error",
            FailureClass::AssertionFailure => "assertion_failure",
            FailureClass::Timeout => "timeout",
            FailureClass::ApiChange => "api_change",
            FailureClass::EnvironmentIssue => "environment_issue",
            FailureClass::FlakyBehavior => "flaky_behavior",
        }
    }
}

/// `needle` then, later in `text`, `after`.
fn followed_by(text: &str, needle: &str, after: &str) -> bool {
    text.find(needle).is_some_and(|at| text[at + needle.len()..].contains(after))
}

/// Classifies an error message; rules in domain.md's order, first match wins.
pub fn classify(message: &str) -> FailureClass {
    let lower = message.to_lowercase();
    let has = |needle: &str| message.contains(needle);
    if has("ImportError") || has("ModuleNotFoundError") || has("No module named") {
        FailureClass::ImportError
    } else if has("AssertionError") || has("assertEqual") || has("assertIn") || has("expect") {
        FailureClass::AssertionFailure
    } else if lower.contains("timeout") || has("TimeoutError") || followed_by(&lower, "time", "exceeded") {
        FailureClass::Timeout
    } else if has("404") || has("401") || has("500") || followed_by(message, "AttributeError", "has no attribute") {
        FailureClass::ApiChange
    } else if lower.contains("permission") || has("FileNotFoundError") || has("ConnectionError") {
        FailureClass::EnvironmentIssue
    } else {
        FailureClass::FlakyBehavior
    }
}

#[cfg(test)]
mod tests {
    use super::FailureClass::*;
    use super::*;

    #[test]
    fn every_rule_and_its_order() {
        let table = [
            ("ModuleNotFoundError: No module named 'requests_mock'", ImportError),
            ("ImportError: cannot import name 'Client' from 'app.api'", ImportError),
            ("E   No module named yaml", ImportError),
            ("AssertionError: assert 404 == 200", AssertionFailure),
            ("self.assertEqual(total, 3) failed", AssertionFailure),
            ("assertIn('id', body) failed", AssertionFailure),
            ("expect(received).toBe(expected)", AssertionFailure),
            ("requests.exceptions.ReadTimeout: read timeout=5", Timeout),
            ("TimeoutError: operation took too long", Timeout),
            ("Time limit of 30s exceeded", Timeout),
            ("HTTPError: 404 Client Error: Not Found for url", ApiChange),
            ("HTTPError: 401 Unauthorized", ApiChange),
            ("500 Internal Server Error", ApiChange),
            ("AttributeError: 'Response' object has no attribute 'json_body'", ApiChange),
            ("PermissionError: [Errno 13] Permission denied: '/var/data'", EnvironmentIssue),
            ("FileNotFoundError: [Errno 2] No such file or directory: 'fixtures/users.json'", EnvironmentIssue),
            ("ConnectionError: Max retries exceeded with url", EnvironmentIssue),
            ("random seed mismatch on the second run", FlakyBehavior),
            ("", FlakyBehavior),
        ];
        for (message, expected) in table {
            assert_eq!(classify(message), expected, "{message:?}");
        }
        // First match wins: an assertion about a 404 is an assertion failure, an import error
        // that mentions a timeout is an import error.
        assert_eq!(classify("AssertionError: expected 404"), AssertionFailure);
        assert_eq!(classify("ImportError while waiting: timeout"), ImportError);
        assert_eq!(classify("AttributeError: 'X' object has no attribute 'y'").name(), "api_change");
    }
}
