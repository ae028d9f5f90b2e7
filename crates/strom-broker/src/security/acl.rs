//! ACL bindings as Kafka defines them: a resource pattern (type, name,
//! pattern type) and an access control entry (principal, host, operation,
//! permission), plus the filters DescribeAcls/DeleteAcls match with.
//!
//! The numeric codes are the wire codes of Kafka's `ResourceType`,
//! `PatternType`, `AclOperation` and `AclPermissionType`; the JSON form
//! (persisted in the metadata image) uses Kafka's upper-case names.

use serde::{Deserialize, Serialize};

macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $( $variant:ident = $code:literal, $wire:literal; )* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( #[serde(rename = $wire)] $variant = $code, )*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The wire code; unknown codes read as `Unknown`, as Kafka does.
            pub fn from_code(code: i8) -> $name {
                match code {
                    $( $code => $name::$variant, )*
                    _ => $name::Unknown,
                }
            }

            pub fn code(self) -> i8 {
                self as i8
            }

            /// Kafka's name (`TOPIC`, `PREFIXED`, `READ`, `ALLOW`).
            pub fn name(self) -> &'static str {
                match self { $( $name::$variant => $wire, )* }
            }

            /// Parses Kafka's name, case-insensitively, ignoring `_` and `-`
            /// (so `IdempotentWrite`, `IDEMPOTENT_WRITE` and
            /// `idempotent-write` all work, as in kafka-acls).
            pub fn parse(s: &str) -> Option<$name> {
                let norm = |x: &str| -> String {
                    x.chars().filter(|c| *c != '_' && *c != '-').map(|c| c.to_ascii_uppercase()).collect()
                };
                let want = norm(s);
                Self::ALL.iter().copied().find(|v| norm(v.name()) == want)
            }
        }
    };
}

kafka_enum!(
    /// Kafka's `ResourceType`.
    ResourceType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

kafka_enum!(
    /// Kafka's `PatternType`. Bindings are LITERAL or PREFIXED; ANY and
    /// MATCH only appear in filters.
    PatternType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// Kafka's `AclOperation`.
    AclOperation {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    /// Kafka's `AclPermissionType`.
    PermissionType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// The only name a CLUSTER resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal resource name and host that match everything.
pub const WILDCARD: &str = "*";

/// Kafka's `ResourcePattern`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern_type: PatternType,
}

/// Kafka's `AccessControlEntry`; the principal is in `Type:name` form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccessControlEntry {
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

/// One ACL: who may (or may not) do what on which resources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub pattern: ResourcePattern,
    pub entry: AccessControlEntry,
}

impl AclBinding {
    /// Kafka's `AclControlManager.validateNewAcl`: what CreateAcls refuses
    /// with INVALID_REQUEST.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.pattern;
        let e = &self.entry;
        if matches!(p.resource_type, ResourceType::Unknown | ResourceType::Any) {
            return Err(format!("Invalid resourceType {}", p.resource_type.name()));
        }
        if !matches!(p.pattern_type, PatternType::Literal | PatternType::Prefixed) {
            return Err(format!("Invalid patternType {}", p.pattern_type.name()));
        }
        if matches!(e.operation, AclOperation::Unknown | AclOperation::Any) {
            return Err(format!("Invalid operation {}", e.operation.name()));
        }
        if !matches!(e.permission, PermissionType::Allow | PermissionType::Deny) {
            return Err(format!("Invalid permissionType {}", e.permission.name()));
        }
        if p.name.is_empty() {
            return Err("Resource name should not be empty".into());
        }
        if p.resource_type == ResourceType::Cluster && p.name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if !e.principal.contains(':') {
            return Err(format!(
                "Could not parse principal from `{}` (no colon is found separating the principal type from the principal name)",
                e.principal
            ));
        }
        if e.host.is_empty() {
            return Err("Host should not be empty".into());
        }
        Ok(())
    }
}

impl std::fmt::Display for AclBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.pattern.resource_type.name(),
            self.pattern.name,
            self.pattern.pattern_type.name(),
            self.entry.principal,
            self.entry.host,
            self.entry.operation.name(),
            self.entry.permission.name()
        )
    }
}

/// Kafka's `AclBindingFilter`: `None` strings match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: PermissionType::Any,
        }
    }

    /// Kafka's `findIndefiniteField`: a filter with an UNKNOWN element
    /// cannot be applied (INVALID_REQUEST).
    pub fn unknown_element(&self) -> Option<&'static str> {
        if self.resource_type == ResourceType::Unknown {
            Some("Resource type is UNKNOWN.")
        } else if self.pattern_type == PatternType::Unknown {
            Some("Resource pattern type is UNKNOWN.")
        } else if self.operation == AclOperation::Unknown {
            Some("Operation is UNKNOWN.")
        } else if self.permission == PermissionType::Unknown {
            Some("Permission type is UNKNOWN.")
        } else {
            None
        }
    }

    /// Kafka's `AclBindingFilter.matches`, including MATCH, which selects
    /// the LITERAL, wildcard and PREFIXED bindings that apply to the
    /// filter's resource name.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.matches_pattern(&b.pattern) && self.matches_entry(&b.entry)
    }

    fn matches_pattern(&self, p: &ResourcePattern) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != p.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != p.pattern_type
        {
            return false;
        }
        let Some(name) = &self.name else { return true };
        if self.pattern_type == PatternType::Any || self.pattern_type == p.pattern_type {
            return *name == p.name;
        }
        match p.pattern_type {
            PatternType::Literal => *name == p.name || p.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&p.name),
            _ => false,
        }
    }

    fn matches_entry(&self, e: &AccessControlEntry) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == e.principal)
            && self.host.as_ref().is_none_or(|h| *h == e.host)
            && (self.operation == AclOperation::Any || self.operation == e.operation)
            && (self.permission == PermissionType::Any || self.permission == e.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn binding(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        principal: &str,
        op: AclOperation,
        perm: PermissionType,
    ) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern {
                resource_type: rt,
                name: name.into(),
                pattern_type: pt,
            },
            entry: AccessControlEntry {
                principal: principal.into(),
                host: "*".into(),
                operation: op,
                permission: perm,
            },
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for op in AclOperation::ALL {
            assert_eq!(AclOperation::from_code(op.code()), *op);
            assert_eq!(AclOperation::parse(op.name()), Some(*op));
        }
        assert_eq!(AclOperation::from_code(99), AclOperation::Unknown);
        assert_eq!(
            AclOperation::parse("IdempotentWrite"),
            Some(AclOperation::IdempotentWrite)
        );
        assert_eq!(
            ResourceType::parse("transactional-id"),
            Some(ResourceType::TransactionalId)
        );
        assert_eq!(PatternType::parse("prefixed"), Some(PatternType::Prefixed));
        assert_eq!(PatternType::parse("nope"), None);
    }

    #[test]
    fn creation_validation_follows_kafka() {
        use AclOperation as O;
        use PatternType as P;
        use PermissionType as A;
        use ResourceType as R;
        let ok = binding(R::Topic, "a", P::Literal, "User:alice", O::Read, A::Allow);
        assert!(ok.validate().is_ok());
        let bad = [
            binding(R::Any, "a", P::Literal, "User:alice", O::Read, A::Allow),
            binding(R::Unknown, "a", P::Literal, "User:alice", O::Read, A::Allow),
            binding(R::Topic, "a", P::Match, "User:alice", O::Read, A::Allow),
            binding(R::Topic, "a", P::Any, "User:alice", O::Read, A::Allow),
            binding(R::Topic, "a", P::Literal, "User:alice", O::Any, A::Allow),
            binding(
                R::Topic,
                "a",
                P::Literal,
                "User:alice",
                O::Unknown,
                A::Allow,
            ),
            binding(R::Topic, "a", P::Literal, "User:alice", O::Read, A::Any),
            binding(R::Topic, "", P::Literal, "User:alice", O::Read, A::Allow),
            binding(R::Topic, "a", P::Literal, "alice", O::Read, A::Allow),
            binding(
                R::Cluster,
                "c",
                P::Literal,
                "User:alice",
                O::Alter,
                A::Allow,
            ),
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b} should be refused");
        }
    }

    #[test]
    fn filters_match_like_kafka() {
        use AclOperation as O;
        use PatternType as P;
        use PermissionType as A;
        use ResourceType as R;
        let lit = binding(R::Topic, "foo", P::Literal, "User:a", O::Read, A::Allow);
        let wild = binding(R::Topic, "*", P::Literal, "User:a", O::Read, A::Allow);
        let pre = binding(R::Topic, "fo", P::Prefixed, "User:b", O::Write, A::Deny);
        let grp = binding(R::Group, "foo", P::Literal, "User:a", O::Read, A::Allow);
        let all = [&lit, &wild, &pre, &grp];
        let count = |f: &AclBindingFilter| all.iter().filter(|b| f.matches(b)).count();

        assert_eq!(count(&AclBindingFilter::any()), 4);
        let mut f = AclBindingFilter::any();
        f.resource_type = R::Topic;
        f.name = Some("foo".into());
        // ANY with a name: exact name match whatever the pattern type
        assert_eq!(count(&f), 1);
        f.pattern_type = P::Match;
        assert_eq!(count(&f), 3, "literal, wildcard and prefix apply to foo");
        f.pattern_type = P::Prefixed;
        assert_eq!(count(&f), 0, "PREFIXED filter needs the exact prefix");
        f.name = Some("fo".into());
        assert_eq!(count(&f), 1);
        let mut f = AclBindingFilter::any();
        f.principal = Some("User:a".into());
        f.operation = O::Read;
        assert_eq!(count(&f), 3);
        f.permission = A::Deny;
        assert_eq!(count(&f), 0);
        let mut f = AclBindingFilter::any();
        f.operation = O::Unknown;
        assert!(f.unknown_element().is_some());
    }
}
