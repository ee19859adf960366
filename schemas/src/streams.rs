//! The streams of the three Maestro domains and the role each one plays.

use serde::{Deserialize, Serialize};

/// What a stream carries; decides how its entries are checked and handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    TemplatesRequests,
    TemplatesResults,
    TemplatesUsage,
    AutomationJobs,
    AutomationHealing,
    AutomationResults,
    AutomationErrors,
    AutomationValidation,
    K8sJobs,
    K8sResults,
    K8sStatus,
}

impl Role {
    /// Whether producers outside the engine write this stream's entries for the engine to act
    /// on (commands, heal requests, error reports, validation outcomes): the streams a router
    /// moves into partitions. The others carry answers (results, usage, status), which stay on
    /// the unpartitioned keys where the old consumers read them.
    pub fn is_routed(self) -> bool {
        matches!(
            self,
            Role::TemplatesRequests
                | Role::AutomationJobs
                | Role::AutomationHealing
                | Role::AutomationErrors
                | Role::AutomationValidation
                | Role::K8sJobs
        )
    }
}

/// The stream keys the engine reads, by role. The defaults are the old services' keys:
/// `automation:errors` is read by default (the old service consumed it); the validation
/// stream, which no old code writes, only when configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSet {
    pub templates_requests: String,
    pub templates_results: String,
    pub templates_usage: String,
    pub automation_jobs: String,
    pub automation_healing: String,
    pub automation_results: String,
    pub automation_errors: Option<String>,
    pub automation_validation: Option<String>,
    pub k8s_jobs: String,
    pub k8s_results: String,
    pub k8s_status: String,
}

impl Default for StreamSet {
    fn default() -> Self {
        StreamSet {
            templates_requests: "maestro:streams:templates:requests".into(),
            templates_results: "maestro:streams:templates:results".into(),
            templates_usage: "maestro:streams:templates:usage".into(),
            automation_jobs: "maestro:streams:automation:jobs".into(),
            automation_healing: "maestro:streams:automation:healing".into(),
            automation_results: "maestro:streams:automation:results".into(),
            automation_errors: Some("maestro:streams:automation:errors".into()),
            automation_validation: None,
            k8s_jobs: "maestro:streams:k8s:jobs".into(),
            k8s_results: "maestro:streams:k8s:results".into(),
            k8s_status: "maestro:streams:k8s:status".into(),
        }
    }
}

impl StreamSet {
    /// Every configured stream with its role, in a fixed order.
    pub fn all(&self) -> Vec<(Role, &str)> {
        let mut out = vec![
            (Role::TemplatesRequests, self.templates_requests.as_str()),
            (Role::TemplatesResults, self.templates_results.as_str()),
            (Role::TemplatesUsage, self.templates_usage.as_str()),
            (Role::AutomationJobs, self.automation_jobs.as_str()),
            (Role::AutomationHealing, self.automation_healing.as_str()),
            (Role::AutomationResults, self.automation_results.as_str()),
            (Role::K8sJobs, self.k8s_jobs.as_str()),
            (Role::K8sResults, self.k8s_results.as_str()),
            (Role::K8sStatus, self.k8s_status.as_str()),
        ];
        if let Some(key) = &self.automation_errors {
            out.push((Role::AutomationErrors, key.as_str()));
        }
        if let Some(key) = &self.automation_validation {
            out.push((Role::AutomationValidation, key.as_str()));
        }
        out
    }

    /// Every configured stream a router moves into partitions ([`Role::is_routed`]).
    pub fn routed(&self) -> Vec<(Role, &str)> {
        self.all().into_iter().filter(|(role, _)| role.is_routed()).collect()
    }

    /// The role of a configured stream key.
    pub fn role_of(&self, key: &str) -> Option<Role> {
        self.all().into_iter().find(|(_, k)| *k == key).map(|(role, _)| role)
    }

    /// The dead-letter stream of a key.
    pub fn dead_letter_key(key: &str) -> String {
        format!("{key}:dead")
    }

    /// The first key that is configured twice, if any: two roles cannot share a stream.
    pub fn duplicate_key(&self) -> Option<String> {
        let keys = self.all();
        keys.iter()
            .enumerate()
            .find(|(i, (_, k))| keys[..*i].iter().any(|(_, other)| other == k))
            .map(|(_, (_, k))| (*k).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_default_streams_and_one_optional() {
        let mut set = StreamSet::default();
        assert_eq!(set.all().len(), 10);
        assert_eq!(set.role_of("maestro:streams:k8s:status"), Some(Role::K8sStatus));
        set.automation_validation = Some("maestro:streams:automation:validation".into());
        assert_eq!(set.all().len(), 11);
        assert_eq!(set.routed().len(), 6, "requests, jobs, healing, errors, validation, k8s jobs");
        assert_eq!(set.duplicate_key(), None);
        set.k8s_status = set.k8s_results.clone();
        assert_eq!(set.duplicate_key(), Some(set.k8s_results.clone()));
    }
}
