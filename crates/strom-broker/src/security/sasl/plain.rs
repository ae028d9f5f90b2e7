//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one token,
//! checked against the users of the listener's `PlainLoginModule` JAAS
//! entry (`user_<name>="<password>"`), as Kafka's `PlainServerCallbackHandler`
//! does.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Step;

const INVALID: &str = "Authentication failed: Invalid username or password";

/// Checks one PLAIN token against `users` (name → password).
pub fn authenticate(token: &[u8], users: &BTreeMap<String, String>) -> Step {
    let fail = |user: Option<String>, message: &str, reason: &str| Step::Fail {
        user,
        message: message.to_string(),
        reason: reason.to_string(),
    };
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail(
            None,
            "Invalid SASL/PLAIN response: expected 3 tokens",
            "malformed PLAIN token",
        );
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
    else {
        return fail(
            None,
            "Invalid SASL/PLAIN response: not UTF-8",
            "malformed PLAIN token",
        );
    };
    if user.is_empty() {
        return fail(
            None,
            "Authentication failed: username not specified",
            "empty user name",
        );
    }
    if password.is_empty() {
        return fail(
            Some(user.into()),
            "Authentication failed: password not specified",
            "empty password",
        );
    }
    if !authzid.is_empty() && authzid != user {
        return fail(
            Some(user.into()),
            "Authentication failed: Client requested an authorization id that is different from username",
            "authorization id differs from the user name",
        );
    }
    // Hash both sides so the comparison's time depends on neither length.
    let ok = users.get(user).is_some_and(|expected| {
        bool::from(Sha256::digest(expected.as_bytes()).ct_eq(&Sha256::digest(password)))
    });
    if !ok {
        return fail(Some(user.into()), INVALID, "invalid credentials");
    }
    Step::Done {
        response: Vec::new(),
        principal: user.to_string(),
        credential_expiry_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeMap<String, String> {
        BTreeMap::from([("alice".to_string(), "alice-secret".to_string())])
    }

    fn reason(s: Step) -> String {
        match s {
            Step::Fail { reason, .. } => reason,
            _ => panic!("expected failure"),
        }
    }

    #[test]
    fn parses_and_checks_plain_tokens() {
        match authenticate(b"\0alice\0alice-secret", &users()) {
            Step::Done { principal, .. } => assert_eq!(principal, "alice"),
            _ => panic!("expected success"),
        }
        assert!(matches!(
            authenticate(b"alice\0alice\0alice-secret", &users()),
            Step::Done { .. }
        ));
        assert_eq!(
            reason(authenticate(b"\0alice\0wrong", &users())),
            "invalid credentials"
        );
        assert_eq!(
            reason(authenticate(b"\0bob\0alice-secret", &users())),
            "invalid credentials"
        );
        assert_eq!(
            reason(authenticate(b"admin\0alice\0alice-secret", &users())),
            "authorization id differs from the user name"
        );
        assert_eq!(reason(authenticate(b"\0\0x", &users())), "empty user name");
        assert_eq!(
            reason(authenticate(b"\0alice\0", &users())),
            "empty password"
        );
        assert_eq!(
            reason(authenticate(b"alice-secret", &users())),
            "malformed PLAIN token"
        );
        assert_eq!(
            reason(authenticate(b"\0a\0b\0c", &users())),
            "malformed PLAIN token"
        );
    }
}
