//! SASL OAUTHBEARER (RFC 7628), server side, with Kafka's two validators:
//!
//! - secured (`sasl.oauthbearer.jwks.endpoint.url` set): a signed JWT checked
//!   against the keys of a JWKS (`file:` URL; re-read when a token names a
//!   key id it does not hold), the expected issuer and audience, `exp`/`nbf`
//!   with `sasl.oauthbearer.clock.skew.seconds`; the principal is the
//!   `sasl.oauthbearer.sub.claim.name` claim (Kafka's
//!   `OAuthBearerValidatorCallbackHandler`);
//! - unsecured (no JWKS: Kafka's default
//!   `OAuthBearerUnsecuredValidatorCallbackHandler`, for development): an
//!   `alg: none` JWT, parsed here, still with `exp` checked and the
//!   principal claim required.
//!
//! ```text
//!   client-first ─► valid:   Done (empty response)
//!                └► invalid: Challenge {"status":"invalid_token"} ─► client ack (%x01) ─► Fail
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use super::Step;

/// The broker's OAUTHBEARER validation settings.
#[derive(Clone, Debug)]
pub struct OAuthConfig {
    /// `None`: the unsecured validator.
    pub jwks: Option<Arc<Jwks>>,
    /// `sasl.oauthbearer.expected.issuer`.
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.expected.audience` (any one must match).
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.sub.claim.name` (default `sub`).
    pub sub_claim_name: String,
    /// `sasl.oauthbearer.clock.skew.seconds` (default 30).
    pub clock_skew_seconds: u64,
    /// Unsecured validator: `unsecuredValidatorPrincipalClaimName` (default `sub`).
    pub unsecured_principal_claim: String,
    /// Unsecured validator: `unsecuredValidatorAllowableClockSkewMs` (default 0).
    pub unsecured_clock_skew_ms: i64,
    /// Unsecured validator: `unsecuredValidatorRequiredScope` (space-separated).
    pub unsecured_required_scope: Vec<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            jwks: None,
            expected_issuer: None,
            expected_audience: Vec::new(),
            sub_claim_name: "sub".into(),
            clock_skew_seconds: 30,
            unsecured_principal_claim: "sub".into(),
            unsecured_clock_skew_ms: 0,
            unsecured_required_scope: Vec::new(),
        }
    }
}

/// A JSON Web Key Set read from a file, re-read when a token names a key
/// id it does not contain (key rotation without a restart).
pub struct Jwks {
    path: PathBuf,
    keys: RwLock<Arc<JwkSet>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jwks({})", self.path.display())
    }
}

impl Jwks {
    /// Loads `file:` URL `url`. HTTP(S) endpoints are not supported (the
    /// broker has no HTTP client): the error says so.
    pub fn load(url: &str) -> Result<Self, String> {
        let path = match url
            .strip_prefix("file://")
            .or_else(|| url.strip_prefix("file:"))
        {
            Some(p) => PathBuf::from(p),
            None => {
                return Err("only file: URLs are supported (fetch the JWKS into a file)".to_string())
            }
        };
        let keys = read_jwks(&path)?;
        Ok(Jwks {
            path,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    fn current(&self) -> Arc<JwkSet> {
        self.keys.read().unwrap().clone()
    }

    fn reload(&self) -> Result<Arc<JwkSet>, String> {
        let keys = Arc::new(read_jwks(&self.path)?);
        *self.keys.write().unwrap() = keys.clone();
        Ok(keys)
    }
}

fn read_jwks(path: &std::path::Path) -> Result<JwkSet, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read JWKS {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JWKS {}: {e}", path.display()))
}

/// A validated token: principal name and expiry.
#[derive(Debug, PartialEq, Eq)]
pub struct ValidToken {
    pub principal: String,
    pub expires_at_ms: i64,
}

impl OAuthConfig {
    /// Validates a compact JWT at wall-clock `now_ms`.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidToken, String> {
        match &self.jwks {
            Some(jwks) => self.validate_signed(jwks, token),
            None => self.validate_unsecured(token, now_ms),
        }
    }

    fn validate_signed(&self, jwks: &Jwks, token: &str) -> Result<ValidToken, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("invalid JWT: {e}"))?;
        let find = |set: &JwkSet| match &header.kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&jwks.current()) {
            Some(k) => k,
            None => find(&*jwks.reload()?)
                .ok_or_else(|| format!("no JWKS key matches key id {:?}", header.kid))?,
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable JWKS key: {e}"))?;
        let mut v = Validation::new(header.alg);
        v.leeway = self.clock_skew_seconds;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        match &self.expected_issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        if self.expected_audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.expected_audience);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| format!("invalid JWT: {e}"))?;
        let principal = string_claim(&data.claims, &self.sub_claim_name)?;
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        Ok(ValidToken {
            principal,
            expires_at_ms: (exp * 1000.0) as i64,
        })
    }

    /// Kafka's unsecured JWS: `base64url(header).base64url(claims).` with
    /// `alg: none` and no signature.
    fn validate_unsecured(&self, token: &str, now_ms: i64) -> Result<ValidToken, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err("an unsecured JWS must have 3 dot-separated parts".into());
        };
        if !signature.is_empty() {
            return Err("an unsecured JWS must have an empty signature".into());
        }
        let json = |part: &str, what: &str| -> Result<Map<String, Value>, String> {
            let bytes = B64URL
                .decode(part.trim_end_matches('='))
                .map_err(|_| format!("JWS {what} is not base64url"))?;
            serde_json::from_slice(&bytes).map_err(|_| format!("JWS {what} is not a JSON object"))
        };
        let header = json(header, "header")?;
        if header.get("alg").and_then(Value::as_str) != Some("none") {
            return Err("an unsecured JWS must have alg none".into());
        }
        let claims = json(claims, "claims")?;
        let skew = self.unsecured_clock_skew_ms;
        let exp_ms = match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) => (exp * 1000.0) as i64,
            None => return Err("the JWT has no expiration time (exp)".into()),
        };
        if now_ms - skew >= exp_ms {
            return Err("the JWT has expired".into());
        }
        if let Some(iat) = claims.get("iat").and_then(Value::as_f64) {
            if (iat * 1000.0) as i64 > now_ms + skew {
                return Err("the JWT was issued in the future (iat)".into());
            }
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
            if (nbf * 1000.0) as i64 > now_ms + skew {
                return Err("the JWT is not valid yet (nbf)".into());
            }
        }
        let principal = string_claim(&claims, &self.unsecured_principal_claim)?;
        if !self.unsecured_required_scope.is_empty() {
            let scope: Vec<String> = match claims.get("scope") {
                Some(Value::String(s)) => s.split(' ').map(str::to_string).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            if let Some(missing) = self
                .unsecured_required_scope
                .iter()
                .find(|s| !scope.contains(s))
            {
                return Err(format!("the JWT lacks the required scope {missing}"));
            }
        }
        Ok(ValidToken {
            principal,
            expires_at_ms: exp_ms,
        })
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, String> {
    match claims.get(name).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
        _ => Err(format!("the JWT has no {name} claim")),
    }
}

/// The parsed RFC 7628 client initial response.
struct ClientFirst {
    authzid: Option<String>,
    token: String,
    #[allow(dead_code)] // SASL extensions: accepted, not used yet
    extensions: BTreeMap<String, String>,
}

fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, String> {
    let msg = std::str::from_utf8(msg).map_err(|_| "the client message is not UTF-8")?;
    let (gs2, rest) = msg
        .split_once('\x01')
        .ok_or("invalid OAUTHBEARER client message")?;
    let gs2_parts: Vec<&str> = gs2.split(',').collect();
    let authzid = match gs2_parts[..] {
        ["n" | "y", "", ""] => None,
        ["n" | "y", a, ""] => Some(
            a.strip_prefix("a=")
                .ok_or("invalid OAUTHBEARER GS2 header")?
                .to_string(),
        ),
        _ => return Err("invalid OAUTHBEARER GS2 header".into()),
    };
    let body = rest
        .strip_suffix("\x01\x01")
        .ok_or("invalid OAUTHBEARER client message")?;
    let mut token = None;
    let mut extensions = BTreeMap::new();
    for kv in body.split('\x01') {
        let (k, v) = kv
            .split_once('=')
            .ok_or("invalid OAUTHBEARER key/value pair")?;
        if k == "auth" {
            let t = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or("the auth value is not a Bearer token")?;
            token = Some(t.trim().to_string());
        } else {
            extensions.insert(k.to_string(), v.to_string());
        }
    }
    Ok(ClientFirst {
        authzid,
        token: token.ok_or("no auth value in the client message")?,
        extensions,
    })
}

/// The server side of one OAUTHBEARER exchange.
#[derive(Default)]
pub struct OAuthServer {
    /// Set after an invalid token: the reason, reported once the client
    /// acknowledges the error message.
    failed: Option<String>,
    done: bool,
}

impl OAuthServer {
    /// Processes one client message at wall-clock `now_ms`.
    pub fn step(&mut self, token: &[u8], config: &OAuthConfig, now_ms: i64) -> Step {
        if let Some(reason) = self.failed.take() {
            self.done = true;
            return Step::Fail {
                user: None,
                message: format!("Authentication failed: {reason}"),
                reason,
            };
        }
        if self.done {
            return Step::Fail {
                user: None,
                message: "Authentication failed: unexpected OAUTHBEARER message".into(),
                reason: "unexpected message after the exchange".into(),
            };
        }
        let result = parse_client_first(token).and_then(|first| {
            let valid = config.validate(&first.token, now_ms)?;
            match first.authzid {
                Some(a) if a != valid.principal => Err(format!(
                    "authorization id {a} differs from the token's principal {}",
                    valid.principal
                )),
                _ => Ok(valid),
            }
        });
        match result {
            Ok(valid) => {
                self.done = true;
                Step::Done {
                    response: Vec::new(),
                    principal: valid.principal,
                    credential_expiry_ms: Some(valid.expires_at_ms),
                }
            }
            Err(reason) => {
                // RFC 7628 §3.2.2: an error status the client acknowledges
                // with %x01 before the exchange fails.
                self.failed = Some(reason);
                Step::Challenge(br#"{"status":"invalid_token"}"#.to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn unsecured_token(claims: Value) -> String {
        format!(
            "{}.{}.",
            B64URL.encode(br#"{"alg":"none"}"#),
            B64URL.encode(claims.to_string())
        )
    }

    fn first_message(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    #[test]
    fn unsecured_tokens_need_alg_none_sub_and_a_future_exp() {
        let cfg = OAuthConfig::default();
        let now_s = NOW / 1000;
        let ok = unsecured_token(json!({"sub": "alice", "exp": now_s + 60, "iat": now_s}));
        assert_eq!(
            cfg.validate(&ok, NOW).unwrap(),
            ValidToken {
                principal: "alice".into(),
                expires_at_ms: (now_s + 60) * 1000
            }
        );
        let expired = unsecured_token(json!({"sub": "alice", "exp": now_s - 1}));
        assert_eq!(
            cfg.validate(&expired, NOW).unwrap_err(),
            "the JWT has expired"
        );
        let no_exp = unsecured_token(json!({"sub": "alice"}));
        assert!(cfg.validate(&no_exp, NOW).is_err());
        let no_sub = unsecured_token(json!({"exp": now_s + 60}));
        assert!(cfg.validate(&no_sub, NOW).is_err());
        let signed = format!(
            "{}.{}.c2ln",
            B64URL.encode(br#"{"alg":"HS256"}"#),
            B64URL.encode(json!({"sub":"a","exp":now_s+60}).to_string())
        );
        assert!(cfg.validate(&signed, NOW).is_err());
        let wrong_alg = format!(
            "{}.{}.",
            B64URL.encode(br#"{"alg":"HS256"}"#),
            B64URL.encode(json!({"sub":"a","exp":now_s+60}).to_string())
        );
        assert_eq!(
            cfg.validate(&wrong_alg, NOW).unwrap_err(),
            "an unsecured JWS must have alg none"
        );
        let scoped = OAuthConfig {
            unsecured_required_scope: vec!["kafka".into()],
            ..OAuthConfig::default()
        };
        assert!(scoped.validate(&ok, NOW).is_err());
        let with_scope =
            unsecured_token(json!({"sub": "alice", "exp": now_s + 60, "scope": "a kafka"}));
        assert!(scoped.validate(&with_scope, NOW).is_ok());
    }

    #[test]
    fn invalid_token_gets_the_status_message_then_fails() {
        let cfg = OAuthConfig::default();
        let mut s = OAuthServer::default();
        let expired = unsecured_token(json!({"sub": "alice", "exp": 1}));
        match s.step(&first_message(&expired), &cfg, NOW) {
            Step::Challenge(c) => assert_eq!(c, br#"{"status":"invalid_token"}"#),
            _ => panic!("expected the error status"),
        }
        assert!(matches!(s.step(b"\x01", &cfg, NOW), Step::Fail { .. }));

        let mut s = OAuthServer::default();
        let ok = unsecured_token(json!({"sub": "alice", "exp": NOW / 1000 + 60}));
        match s.step(&first_message(&ok), &cfg, NOW) {
            Step::Done {
                principal,
                credential_expiry_ms,
                ..
            } => {
                assert_eq!(principal, "alice");
                assert_eq!(credential_expiry_ms, Some(NOW + 60_000));
            }
            _ => panic!("expected success"),
        }
        let mut s = OAuthServer::default();
        let msg = format!("n,a=bob,\x01auth=Bearer {ok}\x01\x01");
        assert!(matches!(
            s.step(msg.as_bytes(), &cfg, NOW),
            Step::Challenge(_)
        ));
        let mut s = OAuthServer::default();
        assert!(matches!(s.step(b"garbage", &cfg, NOW), Step::Challenge(_)));
    }

    // A 2048-bit RSA test key (generated for these tests only) and its JWK.
    // (PKCS#1 DER: the `use_pem` feature is off.)
    const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.der");
    const RSA_JWKS: &str = include_str!("testdata/jwks.json");
    const OTHER_PRIVATE: &[u8] = include_bytes!("testdata/rsa_other_private.der");

    fn signed(der: &[u8], kid: &str, claims: Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_rsa_der(der)).unwrap()
    }

    fn secured() -> (tempfile::TempDir, OAuthConfig) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("jwks.json");
        std::fs::write(&path, RSA_JWKS).unwrap();
        let jwks = Jwks::load(&format!("file:{}", path.display())).unwrap();
        let cfg = OAuthConfig {
            jwks: Some(Arc::new(jwks)),
            expected_issuer: Some("https://issuer.test".into()),
            expected_audience: vec!["strom".into()],
            ..OAuthConfig::default()
        };
        (d, cfg)
    }

    #[test]
    fn signed_tokens_are_checked_against_the_jwks() {
        let (_d, cfg) = secured();
        let now_s = jsonwebtoken::get_current_timestamp() as i64;
        let claims = |iss: &str, aud: &str, exp: i64| json!({"sub": "carol", "iss": iss, "aud": aud, "exp": exp, "iat": now_s});
        let good = signed(
            RSA_PRIVATE,
            "k1",
            claims("https://issuer.test", "strom", now_s + 300),
        );
        assert_eq!(cfg.validate(&good, 0).unwrap().principal, "carol");
        let expired = signed(
            RSA_PRIVATE,
            "k1",
            claims("https://issuer.test", "strom", now_s - 120),
        );
        assert!(cfg.validate(&expired, 0).unwrap_err().contains("Expired"));
        let wrong_iss = signed(
            RSA_PRIVATE,
            "k1",
            claims("https://evil.test", "strom", now_s + 300),
        );
        assert!(cfg.validate(&wrong_iss, 0).unwrap_err().contains("Issuer"));
        let wrong_aud = signed(
            RSA_PRIVATE,
            "k1",
            claims("https://issuer.test", "other", now_s + 300),
        );
        assert!(cfg
            .validate(&wrong_aud, 0)
            .unwrap_err()
            .contains("Audience"));
        let bad_sig = signed(
            OTHER_PRIVATE,
            "k1",
            claims("https://issuer.test", "strom", now_s + 300),
        );
        assert!(cfg.validate(&bad_sig, 0).unwrap_err().contains("Signature"));
        let unknown_kid = signed(
            RSA_PRIVATE,
            "k9",
            claims("https://issuer.test", "strom", now_s + 300),
        );
        assert!(cfg
            .validate(&unknown_kid, 0)
            .unwrap_err()
            .contains("key id"));
        // alg none is refused once a JWKS is configured.
        let none = unsecured_token(json!({"sub": "carol", "exp": now_s + 300}));
        assert!(cfg.validate(&none, 0).is_err());
    }
}
