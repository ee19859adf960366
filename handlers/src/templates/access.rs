//! Roles and tenancy (domain.md section 2). The old service defined scopes and enforced none;
//! the engine enforces them: a user acts only inside a tenant where it holds a role, and each
//! operation needs at least a given role there.

use maestro_schemas::proto::templates::Operation;

/// A user's role in one tenant, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read and search.
    Viewer,
    /// A viewer that may also create and update.
    Developer,
    /// A developer that may also delete, pin and grant.
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

/// The weakest role that may perform `operation` (`None` for an operation nobody may perform).
pub fn required_role(operation: Operation) -> Option<Role> {
    Some(match operation {
        Operation::Retrieve | Operation::Search | Operation::Versions | Operation::Validate => Role::Viewer,
        Operation::Create | Operation::Update => Role::Developer,
        Operation::Delete | Operation::Pin | Operation::Unpin | Operation::Grant | Operation::Revoke => Role::Admin,
        Operation::Unspecified => return None,
    })
}

/// Whether a user holding `held` in the request's tenant may perform `operation`; the error
/// says why not, for the request's error result.
pub fn authorize(user: &str, tenant: &str, held: Option<Role>, operation: Operation) -> Result<(), String> {
    let Some(needed) = required_role(operation) else {
        return Err("the operation is not known".into());
    };
    match held {
        None => Err(format!("user {user:?} holds no role in tenant {tenant:?}")),
        Some(role) if role < needed => Err(format!(
            "user {user:?} is {} in tenant {tenant:?}; {} needs {}",
            role.name(),
            operation.as_str_name().trim_start_matches("OPERATION_").to_lowercase(),
            needed.name()
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_exactly_its_operations() {
        let all = [
            Operation::Retrieve,
            Operation::Search,
            Operation::Versions,
            Operation::Validate,
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Pin,
            Operation::Unpin,
            Operation::Grant,
            Operation::Revoke,
        ];
        let allowed = |role: Option<Role>| all.iter().filter(|op| authorize("u", "t", role, **op).is_ok()).count();
        assert_eq!(allowed(None), 0);
        assert_eq!(allowed(Some(Role::Viewer)), 4);
        assert_eq!(allowed(Some(Role::Developer)), 6);
        assert_eq!(allowed(Some(Role::Admin)), 11);
        assert!(authorize("u", "t", Some(Role::Admin), Operation::Unspecified).is_err());
    }

    #[test]
    fn a_denial_says_why() {
        let err = authorize("bob", "acme", Some(Role::Viewer), Operation::Delete).unwrap_err();
        assert_eq!(err, "user \"bob\" is viewer in tenant \"acme\"; delete needs admin");
        let err = authorize("eve", "acme", None, Operation::Retrieve).unwrap_err();
        assert_eq!(err, "user \"eve\" holds no role in tenant \"acme\"");
        assert_eq!(Role::parse("developer"), Some(Role::Developer));
        assert_eq!(Role::parse("root"), None);
    }
}
