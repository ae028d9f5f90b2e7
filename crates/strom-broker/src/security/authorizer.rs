//! The authorizer: Kafka's `StandardAuthorizer` semantics over the ACLs in
//! the metadata image.
//!
//! Decision for (principal, host, operation, resource):
//! 1. authorizer off (`authorizer.class.name` unset) → allowed;
//! 2. principal in `super.users` → allowed;
//! 3. the ACLs that apply to the resource are its LITERAL name, the LITERAL
//!    `*` and every PREFIXED pattern the name starts with; among those whose
//!    principal (or `User:*`) and host (or `*`) match: any DENY for the
//!    operation (or ALL) → denied; else any ALLOW for it, ALL, or an
//!    operation implying it (Read/Write/Delete/Alter imply Describe,
//!    AlterConfigs implies DescribeConfigs) → allowed;
//! 4. no ACL at all on the resource → `allow.everyone.if.no.acl.found`;
//!    otherwise denied.
//!
//! [`AclIndex`] is immutable and rebuilt when ACLs change; a check does a
//! couple of hash lookups by (resource type, name) plus one per distinct
//! prefix length, and allocates nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use tracing::{debug, info};

use super::acl::{
    AclBinding, AclBindingFilter, AclOperation, PatternType, PermissionType, ResourceType, WILDCARD,
};
use super::KafkaPrincipal;
use crate::network::WarnLimiter;

/// `authorizer.class.name` values that turn the authorizer on (Kafka's
/// KRaft authorizer and the older ZooKeeper-era one).
pub const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// The broker keys this module reads.
pub const CONFIG_KEYS: &[&str] = &[
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
];

/// The authorizer's broker configuration.
#[derive(Clone, Debug, Default)]
pub struct AuthorizerConfig {
    /// `authorizer.class.name` is set: ACLs are enforced.
    pub enabled: bool,
    /// `super.users`: `;`-separated principals that bypass ACLs.
    pub super_users: Vec<KafkaPrincipal>,
    /// `allow.everyone.if.no.acl.found` (default false).
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// Reads the authorizer keys; `Err((key, value, reason))` on a bad value.
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Self, (String, String, String)> {
        let bad = |k: &str, v: &str, why: &str| (k.to_string(), v.to_string(), why.to_string());
        let enabled = match raw.get("authorizer.class.name").map(|s| s.trim()) {
            None | Some("") => false,
            Some(c) if AUTHORIZER_CLASSES.contains(&c) => true,
            Some(c) => {
                return Err(bad(
                    "authorizer.class.name",
                    c,
                    &format!("unknown authorizer; use {}", AUTHORIZER_CLASSES[0]),
                ))
            }
        };
        let mut super_users = Vec::new();
        if let Some(v) = raw.get("super.users") {
            for s in v.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                super_users.push(KafkaPrincipal::parse(s).ok_or_else(|| {
                    bad(
                        "super.users",
                        v,
                        &format!("`{s}` is not a principal of the form Type:name"),
                    )
                })?);
            }
        }
        let allow_everyone_if_no_acl_found = match raw
            .get("allow.everyone.if.no.acl.found")
            .map(|s| s.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(bad(
                    "allow.everyone.if.no.acl.found",
                    &v,
                    "expected true or false",
                ))
            }
        };
        Ok(AuthorizerConfig {
            enabled,
            super_users,
            allow_everyone_if_no_acl_found,
        })
    }
}

/// Which hosts an ACL entry applies to.
#[derive(Clone, Debug)]
enum HostMatch {
    Any,
    Ip(IpAddr),
    /// A host string that is no IP address can never equal a peer address
    /// (Kafka compares with `getHostAddress()`).
    Never,
}

/// One ACL entry as the index stores it, pre-parsed for matching.
#[derive(Clone, Debug)]
struct IndexedEntry {
    principal_type: String,
    principal_name: String,
    host: HostMatch,
    operation: AclOperation,
    permission: PermissionType,
}

/// The ACLs of one resource type: literal names and prefixes.
#[derive(Clone, Debug, Default)]
struct TypeIndex {
    literal: HashMap<String, Vec<IndexedEntry>>,
    prefixed: HashMap<String, Vec<IndexedEntry>>,
    /// Distinct prefix lengths (bytes), ascending, so a lookup tries only
    /// prefix lengths that exist.
    prefix_lengths: Vec<usize>,
}

/// Every ACL, as a sorted set (what DescribeAcls lists and the image
/// persists) and indexed by resource for authorization. Immutable: a change
/// builds a new one.
#[derive(Clone, Debug, Default)]
pub struct AclIndex {
    bindings: BTreeSet<AclBinding>,
    by_type: HashMap<ResourceType, TypeIndex>,
}

/// ALLOW entries for these operations also allow DESCRIBE.
const IMPLIES_DESCRIBE: &[AclOperation] = &[
    AclOperation::Describe,
    AclOperation::Read,
    AclOperation::Write,
    AclOperation::Delete,
    AclOperation::Alter,
];
/// ALLOW entries for these operations also allow DESCRIBE_CONFIGS.
const IMPLIES_DESCRIBE_CONFIGS: &[AclOperation] =
    &[AclOperation::DescribeConfigs, AclOperation::AlterConfigs];

impl IndexedEntry {
    fn new(b: &AclBinding) -> Self {
        let (t, n) = b.entry.principal.split_once(':').unwrap_or(("", ""));
        let host = if b.entry.host == WILDCARD {
            HostMatch::Any
        } else {
            b.entry
                .host
                .parse::<IpAddr>()
                .map_or(HostMatch::Never, HostMatch::Ip)
        };
        IndexedEntry {
            principal_type: t.to_string(),
            principal_name: n.to_string(),
            host,
            operation: b.entry.operation,
            permission: b.entry.permission,
        }
    }

    /// Kafka's `StandardAuthorizerData.findResult`: `Some(permission)` if
    /// this entry decides the request, `None` if it does not apply.
    fn decide(
        &self,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
    ) -> Option<PermissionType> {
        let wildcard_user =
            self.principal_type == KafkaPrincipal::USER_TYPE && self.principal_name == WILDCARD;
        if !wildcard_user
            && (self.principal_type != principal.principal_type
                || self.principal_name != principal.name)
        {
            return None;
        }
        match self.host {
            HostMatch::Any => {}
            HostMatch::Ip(ip) if ip == host || Some(ip) == mapped_v4(host) => {}
            _ => return None,
        }
        if self.operation != AclOperation::All {
            let applies = if self.permission == PermissionType::Allow {
                match op {
                    AclOperation::Describe => IMPLIES_DESCRIBE.contains(&self.operation),
                    AclOperation::DescribeConfigs => {
                        IMPLIES_DESCRIBE_CONFIGS.contains(&self.operation)
                    }
                    _ => self.operation == op,
                }
            } else {
                // A DENY only denies its own operation (or everything, as ALL).
                self.operation == op
            };
            if !applies {
                return None;
            }
        }
        Some(self.permission)
    }
}

/// A peer on a dual-stack socket shows up as `::ffff:a.b.c.d`; an ACL for
/// `a.b.c.d` should still apply.
fn mapped_v4(host: IpAddr) -> Option<IpAddr> {
    match host {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// What the ACLs say about one request.
enum Verdict {
    Allowed,
    Denied,
    NoAclFound,
}

impl AclIndex {
    /// Builds the index over `bindings` (duplicates collapse, as in Kafka).
    pub fn new(bindings: impl IntoIterator<Item = AclBinding>) -> Self {
        let bindings: BTreeSet<AclBinding> = bindings.into_iter().collect();
        let mut by_type: HashMap<ResourceType, TypeIndex> = HashMap::new();
        for b in &bindings {
            let t = by_type.entry(b.pattern.resource_type).or_default();
            let map = match b.pattern.pattern_type {
                PatternType::Prefixed => &mut t.prefixed,
                _ => &mut t.literal,
            };
            map.entry(b.pattern.name.clone())
                .or_default()
                .push(IndexedEntry::new(b));
        }
        for t in by_type.values_mut() {
            let lengths: BTreeSet<usize> = t.prefixed.keys().map(String::len).collect();
            t.prefix_lengths = lengths.into_iter().collect();
        }
        AclIndex { bindings, by_type }
    }

    /// Every binding, sorted.
    pub fn bindings(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter()
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// This set plus `new` (already validated).
    pub fn with_added(&self, new: impl IntoIterator<Item = AclBinding>) -> Self {
        Self::new(self.bindings.iter().cloned().chain(new))
    }

    /// This set without the bindings any of `filters` matches, and for each
    /// filter the bindings it removed.
    pub fn with_removed(&self, filters: &[AclBindingFilter]) -> (Self, Vec<Vec<AclBinding>>) {
        let removed: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|f| {
                self.bindings
                    .iter()
                    .filter(|b| f.matches(b))
                    .cloned()
                    .collect()
            })
            .collect();
        let kept = self
            .bindings
            .iter()
            .filter(|b| !filters.iter().any(|f| f.matches(b)))
            .cloned();
        (Self::new(kept), removed)
    }

    fn verdict(
        &self,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> Verdict {
        let Some(t) = self.by_type.get(&resource_type) else {
            return Verdict::NoAclFound;
        };
        let literal = t.literal.get(name);
        let wildcard = if name == WILDCARD {
            None
        } else {
            t.literal.get(WILDCARD)
        };
        let prefixed = t
            .prefix_lengths
            .iter()
            .take_while(|&&len| len <= name.len())
            .filter(|&&len| name.is_char_boundary(len))
            .filter_map(|&len| t.prefixed.get(&name[..len]));
        let mut found = false;
        let mut allowed = false;
        for entries in literal.into_iter().chain(wildcard).chain(prefixed) {
            found = true;
            for e in entries {
                match e.decide(principal, host, op) {
                    Some(PermissionType::Deny) => return Verdict::Denied,
                    Some(PermissionType::Allow) => allowed = true,
                    _ => {}
                }
            }
        }
        if allowed {
            Verdict::Allowed
        } else if found {
            Verdict::Denied
        } else {
            Verdict::NoAclFound
        }
    }

    /// Kafka's `authorizeByResourceType` (used by InitProducerId for
    /// idempotence): true if some resource of `resource_type` could be
    /// authorized for `op` — an ALLOW matches the principal and host, and no
    /// matching DENY covers every resource of the type (LITERAL `*` or
    /// PREFIXED "").
    fn allows_any_of_type(
        &self,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> Verdict {
        let Some(t) = self.by_type.get(&resource_type) else {
            return Verdict::NoAclFound;
        };
        let decided = |entries: Option<&Vec<IndexedEntry>>| {
            entries
                .into_iter()
                .flatten()
                .any(|e| e.decide(principal, host, op) == Some(PermissionType::Deny))
        };
        if decided(t.literal.get(WILDCARD)) || decided(t.prefixed.get("")) {
            return Verdict::Denied;
        }
        let any_allow = t
            .literal
            .values()
            .chain(t.prefixed.values())
            .flatten()
            .any(|e| e.decide(principal, host, op) == Some(PermissionType::Allow));
        if any_allow {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// Denied-authorization audit lines (process-wide rate limit).
static AUDIT_DENIED: WarnLimiter = WarnLimiter::new();

/// The broker's authorizer: configuration plus the audit trail. The ACLs
/// themselves live in the metadata image and are passed in per check.
/// Shared by every connection; stateless apart from the audit rate limit.
#[derive(Debug, Default)]
pub struct Authorizer {
    config: AuthorizerConfig,
}

impl Authorizer {
    pub fn new(config: AuthorizerConfig) -> Self {
        Authorizer { config }
    }

    /// Whether ACLs are enforced (and the ACL APIs available).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn is_super_user(&self, principal: &KafkaPrincipal) -> bool {
        self.config.super_users.iter().any(|s| s == principal)
    }

    /// May `principal` connecting from `host` perform `op` on the resource?
    /// Denials are audited (rate-limited, target `strom::audit`).
    pub fn authorize(
        &self,
        acls: &AclIndex,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.check(acls, principal, host, op, resource_type, name, true)
    }

    /// [`Authorizer::authorize`] without the audit line, for what Kafka
    /// checks with `logIfDenied = false`: filtering listings (Metadata,
    /// ListGroups) and authorized-operation sets.
    pub fn is_allowed(
        &self,
        acls: &AclIndex,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.check(acls, principal, host, op, resource_type, name, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        acls: &AclIndex,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
        audit_denial: bool,
    ) -> bool {
        if !self.config.enabled || self.is_super_user(principal) {
            return true;
        }
        let verdict = acls.verdict(principal, host, op, resource_type, name);
        self.conclude(
            verdict,
            principal,
            host,
            op,
            resource_type,
            name,
            audit_denial,
        )
    }

    /// Kafka's `authorizeByResourceType`: may `principal` perform `op` on
    /// at least one resource of `resource_type`?
    pub fn authorize_any(
        &self,
        acls: &AclIndex,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.config.enabled || self.is_super_user(principal) {
            return true;
        }
        let verdict = acls.allows_any_of_type(principal, host, op, resource_type);
        self.conclude(verdict, principal, host, op, resource_type, WILDCARD, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &self,
        verdict: Verdict,
        principal: &KafkaPrincipal,
        host: IpAddr,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
        audit: bool,
    ) -> bool {
        let allowed = match verdict {
            Verdict::Allowed => true,
            Verdict::Denied => false,
            Verdict::NoAclFound => self.config.allow_everyone_if_no_acl_found,
        };
        if allowed {
            debug!(target: "strom::audit", %principal, %host, operation = op.name(), resource_type = resource_type.name(), resource = name, "authorized");
        } else if !audit {
            debug!(target: "strom::audit", %principal, %host, operation = op.name(), resource_type = resource_type.name(), resource = name, "not authorized (listing filter)");
        } else if let Some(suppressed) = AUDIT_DENIED.allow() {
            info!(target: "strom::audit", %principal, %host, operation = op.name(), resource_type = resource_type.name(), resource = name, suppressed, "authorization denied");
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::acl::{AccessControlEntry, ResourcePattern};
    use AclOperation as O;
    use PatternType as P;
    use PermissionType as A;
    use ResourceType as R;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn acl(rt: R, name: &str, pt: P, principal: &str, host: &str, op: O, perm: A) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern {
                resource_type: rt,
                name: name.into(),
                pattern_type: pt,
            },
            entry: AccessControlEntry {
                principal: principal.into(),
                host: host.into(),
                operation: op,
                permission: perm,
            },
        }
    }

    fn allow(rt: R, name: &str, pt: P, principal: &str, op: O) -> AclBinding {
        acl(rt, name, pt, principal, "*", op, A::Allow)
    }

    fn deny(rt: R, name: &str, pt: P, principal: &str, op: O) -> AclBinding {
        acl(rt, name, pt, principal, "*", op, A::Deny)
    }

    fn on() -> Authorizer {
        Authorizer::new(AuthorizerConfig {
            enabled: true,
            ..Default::default()
        })
    }

    fn alice() -> KafkaPrincipal {
        KafkaPrincipal::user("alice")
    }

    fn check(
        a: &Authorizer,
        acls: &AclIndex,
        who: &KafkaPrincipal,
        op: O,
        rt: R,
        name: &str,
    ) -> bool {
        a.authorize(acls, who, LOCAL, op, rt, name)
    }

    #[test]
    fn disabled_authorizer_allows_everything() {
        let a = Authorizer::default();
        let acls = AclIndex::new([deny(R::Topic, "a", P::Literal, "User:alice", O::All)]);
        assert!(check(&a, &acls, &alice(), O::Write, R::Topic, "a"));
    }

    #[test]
    fn no_acl_denies_unless_allow_everyone() {
        let acls = AclIndex::new([allow(R::Topic, "other", P::Literal, "User:bob", O::Read)]);
        assert!(!check(&on(), &acls, &alice(), O::Read, R::Topic, "a"));
        let open = Authorizer::new(AuthorizerConfig {
            enabled: true,
            allow_everyone_if_no_acl_found: true,
            ..Default::default()
        });
        assert!(check(&open, &acls, &alice(), O::Read, R::Topic, "a"));
        // ...but only where the resource has no ACL at all
        assert!(!check(&open, &acls, &alice(), O::Read, R::Topic, "other"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let acls = AclIndex::new([
            allow(R::Topic, "a", P::Literal, "User:alice", O::All),
            deny(R::Topic, "a", P::Literal, "User:alice", O::Write),
        ]);
        let a = on();
        assert!(check(&a, &acls, &alice(), O::Read, R::Topic, "a"));
        assert!(!check(&a, &acls, &alice(), O::Write, R::Topic, "a"));
        // deny for User:* hits alice too
        let acls = acls.with_added([deny(R::Topic, "a", P::Literal, "User:*", O::Read)]);
        assert!(!check(&a, &acls, &alice(), O::Read, R::Topic, "a"));
        assert!(check(&a, &acls, &alice(), O::Describe, R::Topic, "a"));
    }

    #[test]
    fn prefixed_literal_and_wildcard_patterns() {
        let a = on();
        let acls = AclIndex::new([
            allow(R::Topic, "orders-", P::Prefixed, "User:alice", O::Read),
            deny(R::Topic, "orders-secret", P::Literal, "User:alice", O::Read),
            allow(R::Group, "*", P::Literal, "User:alice", O::Read),
        ]);
        assert!(check(&a, &acls, &alice(), O::Read, R::Topic, "orders-eu"));
        assert!(check(&a, &acls, &alice(), O::Read, R::Topic, "orders-"));
        assert!(!check(
            &a,
            &acls,
            &alice(),
            O::Read,
            R::Topic,
            "orders-secret"
        ));
        assert!(check(
            &a,
            &acls,
            &alice(),
            O::Read,
            R::Topic,
            "orders-secret2"
        ));
        assert!(!check(&a, &acls, &alice(), O::Read, R::Topic, "orders"));
        assert!(!check(&a, &acls, &alice(), O::Read, R::Topic, "xorders-eu"));
        assert!(check(&a, &acls, &alice(), O::Read, R::Group, "any-group"));
        // a prefixed pattern is not a wildcard, and literal names are exact
        let acls = AclIndex::new([allow(R::Topic, "*", P::Prefixed, "User:alice", O::Read)]);
        assert!(!check(&a, &acls, &alice(), O::Read, R::Topic, "a"));
        assert!(check(&a, &acls, &alice(), O::Read, R::Topic, "*x"));
        // resource types do not leak into each other
        let acls = AclIndex::new([allow(R::Topic, "g", P::Literal, "User:alice", O::Read)]);
        assert!(!check(&a, &acls, &alice(), O::Read, R::Group, "g"));
        // multi-byte names: prefixes only at char boundaries
        let acls = AclIndex::new([allow(R::Topic, "é", P::Prefixed, "User:alice", O::Read)]);
        assert!(check(&a, &acls, &alice(), O::Read, R::Topic, "éa"));
        assert!(!check(&a, &acls, &alice(), O::Read, R::Topic, "ea"));
    }

    #[test]
    fn implied_operations() {
        let a = on();
        for op in [O::Read, O::Write, O::Delete, O::Alter] {
            let acls = AclIndex::new([allow(R::Topic, "t", P::Literal, "User:alice", op)]);
            assert!(
                check(&a, &acls, &alice(), O::Describe, R::Topic, "t"),
                "{op:?}"
            );
            assert!(
                !check(&a, &acls, &alice(), O::Create, R::Topic, "t"),
                "{op:?}"
            );
        }
        let acls = AclIndex::new([allow(
            R::Topic,
            "t",
            P::Literal,
            "User:alice",
            O::AlterConfigs,
        )]);
        assert!(check(
            &a,
            &acls,
            &alice(),
            O::DescribeConfigs,
            R::Topic,
            "t"
        ));
        assert!(!check(&a, &acls, &alice(), O::Describe, R::Topic, "t"));
        let acls = AclIndex::new([allow(R::Topic, "t", P::Literal, "User:alice", O::Read)]);
        assert!(!check(&a, &acls, &alice(), O::Write, R::Topic, "t"));
        let acls = AclIndex::new([allow(
            R::Cluster,
            "kafka-cluster",
            P::Literal,
            "User:alice",
            O::All,
        )]);
        for op in [
            O::Create,
            O::Alter,
            O::ClusterAction,
            O::IdempotentWrite,
            O::DescribeConfigs,
        ] {
            assert!(check(&a, &acls, &alice(), op, R::Cluster, "kafka-cluster"));
        }
        // a DENY of Read does not deny the Describe that Write implies
        let acls = AclIndex::new([
            allow(R::Topic, "t", P::Literal, "User:alice", O::Write),
            deny(R::Topic, "t", P::Literal, "User:alice", O::Read),
        ]);
        assert!(check(&a, &acls, &alice(), O::Describe, R::Topic, "t"));
        // a DENY of ALL denies everything
        let acls = acls.with_added([deny(R::Topic, "t", P::Literal, "User:alice", O::All)]);
        assert!(!check(&a, &acls, &alice(), O::Describe, R::Topic, "t"));
    }

    #[test]
    fn super_users_bypass_acls() {
        let mut raw = BTreeMap::new();
        raw.insert(
            "authorizer.class.name".to_string(),
            AUTHORIZER_CLASSES[0].to_string(),
        );
        raw.insert(
            "super.users".to_string(),
            "User:admin; User:ops".to_string(),
        );
        let a = Authorizer::new(AuthorizerConfig::from_raw(&raw).unwrap());
        let acls = AclIndex::new([deny(R::Topic, "a", P::Literal, "User:*", O::All)]);
        assert!(check(
            &a,
            &acls,
            &KafkaPrincipal::user("admin"),
            O::Write,
            R::Topic,
            "a"
        ));
        assert!(check(
            &a,
            &acls,
            &KafkaPrincipal::user("ops"),
            O::Alter,
            R::Cluster,
            "kafka-cluster"
        ));
        assert!(!check(&a, &acls, &alice(), O::Write, R::Topic, "a"));
    }

    #[test]
    fn principal_types_and_wildcard_user() {
        let a = on();
        let acls = AclIndex::new([allow(R::Topic, "t", P::Literal, "User:*", O::Read)]);
        assert!(check(&a, &acls, &alice(), O::Read, R::Topic, "t"));
        let acls = AclIndex::new([allow(R::Topic, "t", P::Literal, "Group:alice", O::Read)]);
        assert!(!check(&a, &acls, &alice(), O::Read, R::Topic, "t"));
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard() {
        let a = on();
        let p = alice();
        let acls = AclIndex::new([acl(
            R::Topic,
            "t",
            P::Literal,
            "User:alice",
            "10.0.0.1",
            O::Read,
            A::Allow,
        )]);
        assert!(a.authorize(
            &acls,
            &p,
            "10.0.0.1".parse().unwrap(),
            O::Read,
            R::Topic,
            "t"
        ));
        assert!(a.authorize(
            &acls,
            &p,
            "::ffff:10.0.0.1".parse().unwrap(),
            O::Read,
            R::Topic,
            "t"
        ));
        assert!(!a.authorize(&acls, &p, LOCAL, O::Read, R::Topic, "t"));
        let acls = acls.with_added([acl(
            R::Topic,
            "t",
            P::Literal,
            "User:alice",
            "127.0.0.1",
            O::Read,
            A::Deny,
        )]);
        assert!(!a.authorize(&acls, &p, LOCAL, O::Read, R::Topic, "t"));
        let acls = AclIndex::new([acl(
            R::Topic,
            "t",
            P::Literal,
            "User:alice",
            "localhost",
            O::Read,
            A::Allow,
        )]);
        assert!(!a.authorize(&acls, &p, LOCAL, O::Read, R::Topic, "t"));
    }

    #[test]
    fn authorize_by_resource_type() {
        let a = on();
        let acls = AclIndex::new([allow(R::Topic, "x-", P::Prefixed, "User:alice", O::Write)]);
        assert!(a.authorize_any(&acls, &alice(), LOCAL, O::Write, R::Topic));
        assert!(!a.authorize_any(
            &acls,
            &KafkaPrincipal::user("bob"),
            LOCAL,
            O::Write,
            R::Topic
        ));
        let acls = acls.with_added([deny(R::Topic, "*", P::Literal, "User:alice", O::Write)]);
        assert!(!a.authorize_any(&acls, &alice(), LOCAL, O::Write, R::Topic));
    }

    #[test]
    fn config_parsing() {
        let mut raw = BTreeMap::new();
        assert!(!AuthorizerConfig::from_raw(&raw).unwrap().enabled);
        raw.insert(
            "authorizer.class.name".into(),
            "kafka.security.authorizer.AclAuthorizer".into(),
        );
        raw.insert("allow.everyone.if.no.acl.found".into(), "TRUE".into());
        let c = AuthorizerConfig::from_raw(&raw).unwrap();
        assert!(c.enabled && c.allow_everyone_if_no_acl_found);
        raw.insert("authorizer.class.name".into(), "com.example.Mine".into());
        assert!(AuthorizerConfig::from_raw(&raw).is_err());
        raw.remove("authorizer.class.name");
        raw.insert("super.users".into(), "admin".into());
        assert!(AuthorizerConfig::from_raw(&raw).is_err());
    }

    #[test]
    fn removal_reports_matches_per_filter() {
        let acls = AclIndex::new([
            allow(R::Topic, "a", P::Literal, "User:alice", O::Read),
            allow(R::Topic, "a", P::Literal, "User:alice", O::Read),
            allow(R::Group, "g", P::Literal, "User:alice", O::Read),
        ]);
        assert_eq!(acls.len(), 2, "duplicates collapse");
        let mut topics = AclBindingFilter::any();
        topics.resource_type = R::Topic;
        let (left, removed) = acls.with_removed(&[topics, AclBindingFilter::any()]);
        assert!(left.is_empty());
        assert_eq!(removed[0].len(), 1);
        assert_eq!(removed[1].len(), 2);
        assert!(!check(&on(), &left, &alice(), O::Read, R::Group, "g"));
    }
}
