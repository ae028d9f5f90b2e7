//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, and
//! the credential derivation AlterUserScramCredentials and `strom user` use.
//!
//! ```text
//!   client-first  ──►  check user, send server-first (nonce, salt, iterations)
//!   client-final  ──►  check channel binding, nonce and proof; send v=signature
//! ```
//!
//! Secrets are compared in constant time (`subtle`). Kafka's `tokenauth`
//! extension (delegation tokens) is parsed and ignored: Strom has no
//! delegation tokens, so such a client simply fails to authenticate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::Step;

/// Kafka's bounds on a SCRAM credential's iteration count.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

/// The two SCRAM mechanisms, with Kafka's wire codes (`ScramMechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    /// From Kafka's `ScramMechanism` type byte (1: SHA-256, 2: SHA-512).
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Self::Sha256),
            "SCRAM-SHA-512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// `HMAC(key, data)` with this mechanism's hash.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Self::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Self::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// What the broker stores per user and mechanism: never the password, only
/// what verifies a proof (RFC 5802 §3). Base64 in the metadata image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// Derives the stored and server keys from a salted password (what
    /// AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }
}

mod b64 {
    use super::B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

enum State {
    /// Waiting for client-first.
    First,
    /// server-first sent; waiting for client-final.
    Final {
        user: String,
        credential: ScramCredential,
        gs2_header: String,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    /// server-final sent (or failed): no more tokens expected.
    Done,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
    /// Fixed server nonce for the RFC test vectors; random otherwise.
    server_nonce: Option<String>,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            state: State::First,
            server_nonce: None,
        }
    }

    #[cfg(test)]
    fn with_server_nonce(mechanism: ScramMechanism, nonce: &str) -> Self {
        ScramServer {
            server_nonce: Some(nonce.to_string()),
            ..Self::new(mechanism)
        }
    }

    fn invalid_credentials(&self, user: Option<String>) -> Step {
        Step::Fail {
            user,
            message: format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                self.mechanism.name()
            ),
            reason: "invalid credentials".into(),
        }
    }

    fn malformed(user: Option<String>, reason: &str) -> Step {
        Step::Fail {
            user,
            message: format!("Authentication failed: {reason}"),
            reason: reason.to_string(),
        }
    }

    /// Processes one client token; `lookup` finds a user's credential for
    /// this mechanism.
    pub fn step(&mut self, token: &[u8], lookup: &dyn Fn(&str) -> Option<ScramCredential>) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::First => self.client_first(token, lookup),
            State::Final {
                user,
                credential,
                gs2_header,
                nonce,
                client_first_bare,
                server_first,
            } => self.client_final(
                token,
                user,
                &credential,
                &gs2_header,
                &nonce,
                &client_first_bare,
                &server_first,
            ),
            State::Done => Self::malformed(None, "unexpected SCRAM message after the exchange"),
        }
    }

    fn client_first(
        &mut self,
        token: &[u8],
        lookup: &dyn Fn(&str) -> Option<ScramCredential>,
    ) -> Step {
        let Ok(msg) = std::str::from_utf8(token) else {
            return Self::malformed(None, "SCRAM client-first message is not UTF-8");
        };
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = msg.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Self::malformed(None, "invalid SCRAM client-first message");
        };
        if cbind != "n" && cbind != "y" {
            return Self::malformed(None, "SCRAM channel binding is not supported");
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = decode_saslname(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v);
            } else if attr.starts_with("m=") {
                return Self::malformed(None, "SCRAM mandatory extensions are not supported");
            }
            // Other attributes are extensions (Kafka's `tokenauth`): ignored.
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Self::malformed(None, "invalid SCRAM client-first message");
        };
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Self::malformed(Some(user), "invalid SCRAM client nonce");
        }
        if let Some(a) = authzid.strip_prefix("a=") {
            if decode_saslname(a).as_deref() != Some(user.as_str()) {
                return Self::malformed(
                    Some(user),
                    "authorization id is different from the user name",
                );
            }
        }
        let Some(credential) = lookup(&user) else {
            return self.invalid_credentials(Some(user));
        };
        if credential.iterations < MIN_ITERATIONS {
            return Self::malformed(Some(user), "iteration count below 4096");
        }
        let server_nonce = self.server_nonce.clone().unwrap_or_else(|| {
            let mut b = [0u8; 18];
            getrandom::fill(&mut b).expect("the OS random source works");
            B64.encode(b)
        });
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::Final {
            user,
            credential,
            gs2_header: format!("{cbind},{authzid},"),
            nonce,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
        };
        Step::Challenge(server_first.into_bytes())
    }

    #[allow(clippy::too_many_arguments)]
    fn client_final(
        &mut self,
        token: &[u8],
        user: String,
        credential: &ScramCredential,
        gs2_header: &str,
        nonce: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> Step {
        let Ok(msg) = std::str::from_utf8(token) else {
            return Self::malformed(Some(user), "SCRAM client-final message is not UTF-8");
        };
        let Some((without_proof, proof)) = msg.rsplit_once(",p=") else {
            return Self::malformed(Some(user), "SCRAM client-final message has no proof");
        };
        let mut channel = None;
        let mut client_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v);
            }
        }
        if channel.and_then(|c| B64.decode(c).ok()).as_deref() != Some(gs2_header.as_bytes()) {
            return Self::malformed(Some(user), "invalid SCRAM channel binding");
        }
        // Kafka checks that the echoed nonce *ends with* the combined nonce,
        // and librdkafka 2.0 relies on it: it sends its client nonce again in
        // front of the combined one. The proof still covers what was sent.
        if !client_nonce.is_some_and(|n| n.ends_with(nonce)) {
            return Self::malformed(Some(user), "invalid SCRAM nonce");
        }
        let Ok(proof) = B64.decode(proof) else {
            return Self::malformed(Some(user), "invalid SCRAM client proof");
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = self
            .mechanism
            .hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return self.invalid_credentials(Some(user));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let stored_key = self.mechanism.hash(&client_key);
        if !bool::from(stored_key.ct_eq(&credential.stored_key)) {
            return self.invalid_credentials(Some(user));
        }
        let server_signature = self
            .mechanism
            .hmac(&credential.server_key, auth_message.as_bytes());
        Step::Done {
            response: format!("v={}", B64.encode(server_signature)).into_bytes(),
            principal: user,
            credential_expiry_ms: None,
        }
    }
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is
/// invalid.
fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc7677_credential() -> ScramCredential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = ScramMechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        ScramCredential::from_salted_password(ScramMechanism::Sha256, &salt, &salted, 4096)
    }

    #[test]
    fn rfc7677_sha256_test_vector() {
        let cred = rfc7677_credential();
        let lookup = |u: &str| (u == "user").then(|| cred.clone());
        let mut s = ScramServer::with_server_nonce(
            ScramMechanism::Sha256,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        let Step::Challenge(first) = s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &lookup) else {
            panic!("expected server-first")
        };
        assert_eq!(
            std::str::from_utf8(&first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let step = s.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            &lookup,
        );
        let Step::Done {
            response,
            principal,
            ..
        } = step
        else {
            panic!("expected success")
        };
        assert_eq!(principal, "user");
        assert_eq!(
            std::str::from_utf8(&response).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    fn fails(step: Step) -> String {
        match step {
            Step::Fail { reason, .. } => reason,
            _ => panic!("expected a failure"),
        }
    }

    #[test]
    fn wrong_proof_nonce_binding_and_unknown_user_fail() {
        let cred = rfc7677_credential();
        let lookup = |u: &str| (u == "user").then(|| cred.clone());
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let start = || {
            let mut s = ScramServer::with_server_nonce(
                ScramMechanism::Sha256,
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            );
            assert!(matches!(
                s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &lookup),
                Step::Challenge(_)
            ));
            s
        };
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let bad_proof = "eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            fails(start().step(
                format!("c=biws,r={nonce},p={bad_proof}").as_bytes(),
                &lookup
            )),
            "invalid credentials"
        );
        assert_eq!(
            fails(start().step(format!("c=biws,r={nonce}x,p={proof}").as_bytes(), &lookup)),
            "invalid SCRAM nonce"
        );
        assert_eq!(
            fails(start().step(
                format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={proof}").as_bytes(),
                &lookup
            )),
            "invalid SCRAM nonce"
        );
        assert_eq!(
            fails(start().step(format!("c=eSws,r={nonce},p={proof}").as_bytes(), &lookup)),
            "invalid SCRAM channel binding"
        );
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert_eq!(
            fails(s.step(b"n,,n=mallory,r=abc", &lookup)),
            "invalid credentials"
        );
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(s.step(b"garbage", &lookup), Step::Fail { .. }));
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(
            s.step(b"p=tls-unique,,n=user,r=abc", &lookup),
            Step::Fail { .. }
        ));
    }

    #[test]
    fn weak_iteration_counts_are_refused() {
        let mut cred = rfc7677_credential();
        cred.iterations = 1000;
        let lookup = |_: &str| Some(cred.clone());
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert_eq!(
            fails(s.step(b"n,,n=user,r=abc", &lookup)),
            "iteration count below 4096"
        );
    }

    #[test]
    fn sha512_round_trip_with_a_client_computed_proof() {
        let m = ScramMechanism::Sha512;
        let salt = b"0123456789abcdef";
        let salted = m.salted_password(b"s3cret", salt, 4096);
        let cred = ScramCredential::from_salted_password(m, salt, &salted, 4096);
        let lookup = |u: &str| (u == "a,b").then(|| cred.clone());
        let mut s = ScramServer::new(m);
        let bare = "n=a=2Cb,r=clientnonce";
        let Step::Challenge(first) = s.step(format!("n,,{bare}").as_bytes(), &lookup) else {
            panic!()
        };
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        assert!(nonce.starts_with("clientnonce") && nonce.len() > "clientnonce".len());
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{bare},{first},{without_proof}");
        let client_key = m.hmac(&salted, b"Client Key");
        let sig = m.hmac(&m.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let step = s.step(
            format!("{without_proof},p={}", B64.encode(proof)).as_bytes(),
            &lookup,
        );
        let Step::Done {
            principal,
            response,
            ..
        } = step
        else {
            panic!("expected success")
        };
        assert_eq!(principal, "a,b");
        let expected = m.hmac(&m.hmac(&salted, b"Server Key"), auth.as_bytes());
        assert_eq!(response, format!("v={}", B64.encode(expected)).into_bytes());
    }

    #[test]
    fn saslnames_unescape() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("a=b"), None);
    }
}
