//! Who is on the other end of a connection, and what they may do.
//!
//! The connection layer (TLS, SASL) decides a [`KafkaPrincipal`] once per
//! connection; every request carries it in its
//! [`RequestContext`](crate::handlers::RequestContext) so the authorizer and
//! quotas see the same identity Kafka would.

use std::fmt;

pub mod tls;

pub mod acl;
pub mod authorizer;
pub mod check;
pub mod sasl;

/// Kafka's `KafkaPrincipal`: a type (`User`) and a name. Unauthenticated
/// connections are `User:ANONYMOUS`, as in Kafka.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

impl KafkaPrincipal {
    pub const USER_TYPE: &'static str = "User";

    pub fn user(name: impl Into<String>) -> Self {
        KafkaPrincipal {
            principal_type: Self::USER_TYPE.to_string(),
            name: name.into(),
        }
    }

    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }

    /// Parses `Type:name` (Kafka's string form, as used in ACLs and
    /// `super.users`).
    pub fn parse(s: &str) -> Option<Self> {
        let (t, n) = s.split_once(':')?;
        if t.is_empty() {
            return None;
        }
        Some(KafkaPrincipal {
            principal_type: t.to_string(),
            name: n.to_string(),
        })
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// `listener.security.protocol.map` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Self::Plaintext,
            "SSL" => Self::Ssl,
            "SASL_PLAINTEXT" => Self::SaslPlaintext,
            "SASL_SSL" => Self::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_round_trips_through_its_string_form() {
        let p = KafkaPrincipal::parse("User:alice").unwrap();
        assert_eq!(p, KafkaPrincipal::user("alice"));
        assert_eq!(p.to_string(), "User:alice");
        assert_eq!(
            KafkaPrincipal::parse("User:CN=a,O=b").unwrap().name,
            "CN=a,O=b"
        );
        assert!(KafkaPrincipal::parse("alice").is_none());
        assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
    }
}
