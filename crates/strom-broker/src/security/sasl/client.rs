//! The client side of SASL, for this broker's own connections to other
//! brokers (a follower's replica fetcher): `sasl.mechanism.inter.broker.protocol`
//! with the `username`/`password` options of the inter-broker listener's
//! JAAS line (`listener.name.<l>.<mech>.sasl.jaas.config` first, as the
//! server side reads it). PLAIN is one token; SCRAM is RFC 5802's
//! client-first / client-final exchange, the server's signature checked.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::scram::ScramMechanism;
use super::{jaas, lookup, Mechanism};

/// The mechanism and credentials this broker authenticates with.
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism.name())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Reads the inter-broker credentials for `listener`; the error names the key.
pub fn inter_broker_credentials(
    raw: &BTreeMap<String, String>,
    listener: &str,
) -> Result<SaslCredentials, String> {
    let key = "sasl.mechanism.inter.broker.protocol";
    // Kafka's default is GSSAPI, which Strom does not implement.
    let name = raw.get(key).map(|s| s.trim()).unwrap_or("GSSAPI");
    let mechanism = match Mechanism::parse(name) {
        Some(m @ (Mechanism::Plain | Mechanism::Scram(_))) => m,
        _ => {
            return Err(format!(
                "{key}={name}: the inter-broker SASL mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ))
        }
    };
    let mech = name.to_ascii_lowercase();
    let Some((jkey, text)) = lookup(raw, listener, Some(&mech), "sasl.jaas.config") else {
        return Err(format!(
            "listener.name.{}.{mech}.sasl.jaas.config: required for the inter-broker {name} login (username and password)",
            listener.to_ascii_lowercase()
        ));
    };
    let entries = jaas::parse(text).map_err(|e| format!("{jkey}: {e}"))?;
    let module = match mechanism {
        Mechanism::Plain => "PlainLoginModule",
        _ => "ScramLoginModule",
    };
    let options: BTreeMap<String, String> = entries
        .into_iter()
        .filter(|e| e.login_module.ends_with(module))
        .flat_map(|e| e.options)
        .collect();
    match (options.get("username"), options.get("password")) {
        (Some(u), Some(p)) => Ok(SaslCredentials {
            mechanism,
            username: u.clone(),
            password: p.clone(),
        }),
        _ => Err(format!(
            "{jkey}: the {module} entry needs username and password options (the inter-broker login)"
        )),
    }
}

/// One client exchange: `start` gives the first token, `step` answers each
/// server token until it returns `Ok(None)` (done).
pub enum SaslClient {
    Plain { token: Option<Vec<u8>> },
    Scram(ScramClient),
}

impl SaslClient {
    pub fn new(c: &SaslCredentials) -> Self {
        match c.mechanism {
            Mechanism::Scram(m) => SaslClient::Scram(ScramClient::new(m, &c.username, &c.password)),
            _ => {
                let mut t = Vec::new();
                t.push(0);
                t.extend_from_slice(c.username.as_bytes());
                t.push(0);
                t.extend_from_slice(c.password.as_bytes());
                SaslClient::Plain { token: Some(t) }
            }
        }
    }

    /// The first token.
    pub fn start(&mut self) -> Vec<u8> {
        match self {
            SaslClient::Plain { token } => token.take().unwrap_or_default(),
            SaslClient::Scram(s) => s.client_first(),
        }
    }

    /// The next token for the server's `token`, `Ok(None)` once authenticated.
    pub fn step(&mut self, token: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            SaslClient::Plain { .. } => Ok(None),
            SaslClient::Scram(s) => s.step(token),
        }
    }
}

/// RFC 5802 SCRAM, client side.
pub struct ScramClient {
    mechanism: ScramMechanism,
    username: String,
    password: String,
    nonce: String,
    first_bare: String,
    /// The expected server signature once the client-final was sent.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, username: &str, password: &str) -> Self {
        let mut b = [0u8; 18];
        getrandom::fill(&mut b).expect("the OS random source works");
        ScramClient {
            mechanism,
            username: username.to_string(),
            password: password.to_string(),
            nonce: B64.encode(b),
            first_bare: String::new(),
            server_signature: None,
        }
    }

    fn client_first(&mut self) -> Vec<u8> {
        let name = self.username.replace('=', "=3D").replace(',', "=2C");
        self.first_bare = format!("n={name},r={}", self.nonce);
        format!("n,,{}", self.first_bare).into_bytes()
    }

    fn step(&mut self, token: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(token).map_err(|_| "SCRAM: a non-UTF-8 server message")?;
        if let Some(expected) = self.server_signature.take() {
            let attrs = attributes(text);
            if let Some(e) = attrs.get("e") {
                return Err(format!("SCRAM: the server refused: {e}"));
            }
            let v = attrs
                .get("v")
                .and_then(|v| B64.decode(v).ok())
                .ok_or("SCRAM: no server signature in server-final")?;
            if v != expected {
                return Err(
                    "SCRAM: the server's signature does not match (not the real server?)".into(),
                );
            }
            return Ok(None);
        }
        let attrs = attributes(text);
        let nonce = attrs.get("r").ok_or("SCRAM: no nonce in server-first")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("SCRAM: the server nonce does not extend the client's".into());
        }
        let salt = attrs
            .get("s")
            .and_then(|s| B64.decode(s).ok())
            .ok_or("SCRAM: no salt in server-first")?;
        let iterations: u32 = attrs
            .get("i")
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or("SCRAM: no iteration count in server-first")?;
        let m = self.mechanism;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.server_signature = Some(m.hmac(&server_key, auth_message.as_bytes()));
        Ok(Some(
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
        ))
    }
}

/// `k=v` attributes of a SCRAM message.
fn attributes(text: &str) -> BTreeMap<&str, &str> {
    text.split(',').filter_map(|a| a.split_once('=')).collect()
}

#[cfg(test)]
mod tests {
    use super::super::scram::{ScramCredential, ScramServer};
    use super::super::Step;
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_come_from_the_listener_jaas_line() {
        let c = inter_broker_credentials(
            &raw(&[
                ("sasl.mechanism.inter.broker.protocol", "PLAIN"),
                ("listener.name.internal.plain.sasl.jaas.config",
                 r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="s3cret" user_broker="s3cret";"#),
            ]),
            "INTERNAL",
        )
        .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("broker", "s3cret")
        );
        assert!(inter_broker_credentials(&raw(&[]), "INTERNAL")
            .unwrap_err()
            .contains("GSSAPI"));
        let e = inter_broker_credentials(
            &raw(&[
                ("sasl.mechanism.inter.broker.protocol", "PLAIN"),
                ("sasl.jaas.config", r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_a="b";"#),
            ]),
            "INTERNAL",
        )
        .unwrap_err();
        assert!(e.contains("sasl.jaas.config"), "{e}");
    }

    #[test]
    fn scram_client_authenticates_against_the_server_side() {
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let salted = m.salted_password(b"pw", b"salt-salt", 4096);
            let cred = ScramCredential::from_salted_password(m, b"salt-salt", &salted, 4096);
            let mut server = ScramServer::new(m);
            let mut client = SaslClient::Scram(ScramClient::new(m, "bro,ker", "pw"));
            let lookup = |u: &str| (u == "bro,ker").then(|| cred.clone());
            let first = client.start();
            let Step::Challenge(server_first) = server.step(&first, &lookup) else {
                panic!("server-first expected");
            };
            let last = client.step(&server_first).unwrap().expect("client-final");
            let Step::Done { response, .. } = server.step(&last, &lookup) else {
                panic!("authenticated expected");
            };
            assert_eq!(client.step(&response).unwrap(), None);
            // A wrong password is refused by the server.
            let mut server = ScramServer::new(m);
            let mut client = SaslClient::Scram(ScramClient::new(m, "bro,ker", "wrong"));
            let Step::Challenge(sf) = server.step(&client.start(), &lookup) else {
                panic!()
            };
            let last = client.step(&sf).unwrap().unwrap();
            assert!(!matches!(server.step(&last, &lookup), Step::Done { .. }));
        }
    }
}
