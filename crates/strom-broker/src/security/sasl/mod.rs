//! SASL authentication on SASL_PLAINTEXT / SASL_SSL listeners: the
//! per-connection authentication gate, the mechanisms (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512, OAUTHBEARER), their configuration, and the audit line.
//!
//! The gate sits in the connection's request loop, in front of the
//! handlers, as Kafka's `SaslServerAuthenticator` sits in front of
//! `KafkaApis`:
//!
//! ```text
//!  Unauthenticated ──ApiVersions──► (answered, stays)
//!        │ SaslHandshake (mechanism enabled)     anything else ─► close
//!        ▼
//!  Exchange(mechanism, v0 raw tokens | v1 SaslAuthenticate)
//!        │ token ─► challenge ─► token … ─► success   failure ─► error 58, close
//!        ▼
//!  Authenticated(principal, expiry) ──request after expiry──► close
//!        │ SaslHandshake (KIP-368 re-authentication, same mechanism and principal)
//!        └──► Exchange … ─► Authenticated (new expiry)
//! ```
//!
//! SaslHandshake v0 means the tokens that follow are raw length-prefixed
//! frames without Kafka headers; v1 means SaslAuthenticate requests.
//! Credentials: PLAIN users from the listener's JAAS config; SCRAM
//! credentials from the metadata image (AlterUserScramCredentials);
//! OAUTHBEARER JWTs per [`oauthbearer`].

pub mod client;
pub mod jaas;
pub mod oauthbearer;
pub mod plain;
pub mod scram;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion};
use tracing::{info, warn};

use crate::broker::{now_ms, Broker};
use crate::config::{ConfigError, Listener};
use crate::handlers::{self, Outcome};
use crate::network::Session;
use crate::security::KafkaPrincipal;
use oauthbearer::{Jwks, OAuthConfig, OAuthServer};
use scram::{ScramMechanism, ScramServer};

/// The SASL mechanisms Strom implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "OAUTHBEARER" => Some(Self::OAuthBearer),
            _ => ScramMechanism::parse(name)
                .filter(|m| m.name() == name)
                .map(Self::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.name(),
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// The outcome of one step of a mechanism's exchange.
pub enum Step {
    /// Send this to the client and wait for its next token.
    Challenge(Vec<u8>),
    /// Authenticated: send `response` (possibly empty) as the last token.
    Done {
        response: Vec<u8>,
        principal: String,
        /// When the credential itself expires (OAUTHBEARER tokens).
        credential_expiry_ms: Option<i64>,
    },
    /// Refused: `message` goes to the client, `reason` to the audit log.
    Fail {
        user: Option<String>,
        message: String,
        reason: String,
    },
}

/// SASL settings of one listener.
#[derive(Debug)]
pub struct ListenerSasl {
    /// `[listener.name.<l>.]sasl.enabled.mechanisms`.
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN users (`user_<name>="<password>"` of a `PlainLoginModule`).
    pub plain_users: BTreeMap<String, String>,
    pub oauth: OAuthConfig,
}

/// SASL settings of the broker (Kafka's names).
#[derive(Clone, Debug, Default)]
pub struct SaslConfig {
    /// Per SASL listener, by listener name.
    pub listeners: BTreeMap<String, Arc<ListenerSasl>>,
    /// `connections.max.reauth.ms` (KIP-368; 0 = sessions do not expire,
    /// except with the credential, as for OAUTHBEARER tokens).
    pub connections_max_reauth_ms: i64,
}

/// Strom's default for `sasl.enabled.mechanisms`. Kafka defaults to GSSAPI,
/// which Strom does not implement; OAUTHBEARER is left out because without
/// a JWKS it would accept unsigned tokens (Kafka's unsecured validator), so
/// it must be asked for.
pub const DEFAULT_MECHANISMS: &str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512";

const GLOBAL_KEYS: &[&str] = &[
    "sasl.enabled.mechanisms",
    "sasl.jaas.config",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.mechanism.controller.protocol",
    "sasl.server.callback.handler.class",
    "connections.max.reauth.ms",
    "sasl.oauthbearer.jwks.endpoint.url",
    "sasl.oauthbearer.jwks.endpoint.refresh.ms",
    "sasl.oauthbearer.expected.issuer",
    "sasl.oauthbearer.expected.audience",
    "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.scope.claim.name",
    "sasl.oauthbearer.clock.skew.seconds",
];

/// Whether `key` is a SASL setting read here (so the config loader does not
/// report it as unknown): the keys above, optionally prefixed by
/// `<mechanism>.` and/or `listener.name.<listener>.`.
pub fn is_sasl_key(key: &str) -> bool {
    let mut k = key;
    if let Some(rest) = k.strip_prefix("listener.name.") {
        match rest.split_once('.') {
            Some((_, r)) => k = r,
            None => return false,
        }
    }
    if GLOBAL_KEYS.contains(&k) {
        return true;
    }
    match k.split_once('.') {
        Some((mech, r)) => {
            Mechanism::parse(&mech.to_ascii_uppercase()).is_some() && GLOBAL_KEYS.contains(&r)
        }
        None => false,
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl SaslConfig {
    /// Reads the SASL settings of every SASL listener from the raw config.
    pub fn from_raw(
        raw: &BTreeMap<String, String>,
        listeners: &[Listener],
    ) -> Result<Self, ConfigError> {
        let connections_max_reauth_ms = match raw.get("connections.max.reauth.ms") {
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|&n| n >= 0)
                .ok_or_else(|| {
                    invalid(
                        "connections.max.reauth.ms",
                        v,
                        "expected a non-negative number",
                    )
                })?,
            None => 0,
        };
        let mut out = SaslConfig {
            listeners: BTreeMap::new(),
            connections_max_reauth_ms,
        };
        for l in listeners.iter().filter(|l| l.security_protocol.uses_sasl()) {
            out.listeners
                .insert(l.name.clone(), Arc::new(listener_sasl(raw, &l.name)?));
        }
        Ok(out)
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerSasl>> {
        self.listeners.get(name)
    }
}

/// Looks `key` up for `listener` and `mechanism` the way Kafka does:
/// `listener.name.<l>.<mech>.<key>`, `listener.name.<l>.<key>`,
/// `<mech>.<key>`, `<key>` (listener name lowercase in the key).
pub(crate) fn lookup<'a>(
    raw: &'a BTreeMap<String, String>,
    listener: &str,
    mechanism: Option<&str>,
    key: &str,
) -> Option<(String, &'a str)> {
    let l = listener.to_ascii_lowercase();
    let mut candidates = Vec::new();
    if let Some(m) = mechanism {
        candidates.push(format!("listener.name.{l}.{m}.{key}"));
    }
    candidates.push(format!("listener.name.{l}.{key}"));
    if let Some(m) = mechanism {
        candidates.push(format!("{m}.{key}"));
    }
    candidates.push(key.to_string());
    candidates.into_iter().find_map(|k| {
        // Listener names in keys are case-insensitive.
        raw.iter()
            .find(|(rk, _)| rk.eq_ignore_ascii_case(&k))
            .map(|(rk, v)| (rk.clone(), v.as_str()))
    })
}

/// Options of the JAAS entries for `mechanism` whose login module class
/// ends with `module_suffix`.
fn jaas_options(
    raw: &BTreeMap<String, String>,
    listener: &str,
    mechanism: &str,
    module_suffix: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some((key, text)) = lookup(raw, listener, Some(mechanism), "sasl.jaas.config") else {
        return Ok(BTreeMap::new());
    };
    let entries = jaas::parse(text).map_err(|e| invalid(&key, "(hidden)", e))?;
    Ok(entries
        .into_iter()
        .filter(|e| e.login_module.ends_with(module_suffix))
        .flat_map(|e| e.options)
        .collect())
}

fn listener_sasl(
    raw: &BTreeMap<String, String>,
    listener: &str,
) -> Result<ListenerSasl, ConfigError> {
    let (mkey, mvalue) = lookup(raw, listener, None, "sasl.enabled.mechanisms")
        .unwrap_or(("sasl.enabled.mechanisms".into(), DEFAULT_MECHANISMS));
    let mut mechanisms = Vec::new();
    for name in mvalue.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let m = Mechanism::parse(name).ok_or_else(|| {
            invalid(
                &mkey,
                mvalue,
                format!(
                    "unsupported SASL mechanism {name} (Strom supports PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"
                ),
            )
        })?;
        if !mechanisms.contains(&m) {
            mechanisms.push(m);
        }
    }
    if mechanisms.is_empty() {
        return Err(invalid(&mkey, mvalue, "no SASL mechanism enabled"));
    }
    let plain_users = jaas_options(raw, listener, "plain", "PlainLoginModule")?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("user_").map(|u| (u.to_string(), v)))
        .collect();

    let mut oauth = OAuthConfig::default();
    let ob = Some("oauthbearer");
    if let Some((key, url)) = lookup(raw, listener, ob, "sasl.oauthbearer.jwks.endpoint.url") {
        oauth.jwks = Some(Arc::new(
            Jwks::load(url).map_err(|e| invalid(&key, url, e))?,
        ));
    }
    if let Some((_, v)) = lookup(raw, listener, ob, "sasl.oauthbearer.expected.issuer") {
        oauth.expected_issuer = Some(v.to_string()).filter(|s| !s.is_empty());
    }
    if let Some((_, v)) = lookup(raw, listener, ob, "sasl.oauthbearer.expected.audience") {
        oauth.expected_audience = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    if let Some((_, v)) = lookup(raw, listener, ob, "sasl.oauthbearer.sub.claim.name") {
        oauth.sub_claim_name = v.to_string();
    }
    if let Some((key, v)) = lookup(raw, listener, ob, "sasl.oauthbearer.clock.skew.seconds") {
        oauth.clock_skew_seconds = v
            .parse()
            .map_err(|_| invalid(&key, v, "expected a non-negative number"))?;
    }
    let unsecured = jaas_options(raw, listener, "oauthbearer", "OAuthBearerLoginModule")?;
    if let Some(v) = unsecured.get("unsecuredValidatorPrincipalClaimName") {
        oauth.unsecured_principal_claim = v.clone();
    }
    if let Some(v) = unsecured.get("unsecuredValidatorAllowableClockSkewMs") {
        oauth.unsecured_clock_skew_ms =
            v.parse().ok().filter(|&n: &i64| n >= 0).ok_or_else(|| {
                invalid(
                    "unsecuredValidatorAllowableClockSkewMs",
                    v,
                    "expected a non-negative number",
                )
            })?;
    }
    if let Some(v) = unsecured.get("unsecuredValidatorRequiredScope") {
        oauth.unsecured_required_scope = v.split_whitespace().map(str::to_string).collect();
    }
    // Kafka turns on signed-token validation by naming its validator class;
    // without a JWKS that would silently fall back to unsigned tokens here.
    if let Some((key, class)) = lookup(raw, listener, ob, "sasl.server.callback.handler.class") {
        if class.ends_with("OAuthBearerValidatorCallbackHandler") && oauth.jwks.is_none() {
            return Err(invalid(
                &key,
                class,
                "needs sasl.oauthbearer.jwks.endpoint.url (a file: URL)",
            ));
        }
    }
    if mechanisms.contains(&Mechanism::OAuthBearer) && oauth.jwks.is_none() {
        warn!(
            listener,
            "OAUTHBEARER is enabled without sasl.oauthbearer.jwks.endpoint.url: unsecured (unsigned) tokens are accepted, as Kafka's default validator does; for development only"
        );
    }
    Ok(ListenerSasl {
        mechanisms,
        plain_users,
        oauth,
    })
}

enum MechanismServer {
    Plain,
    Scram(ScramServer),
    OAuth(OAuthServer),
    /// Re-authentication asked for another mechanism: Kafka answers the
    /// handshake, then fails the first token with this message.
    Refuse(String),
}

struct Exchange {
    mechanism: Mechanism,
    /// SaslHandshake v0: tokens are raw frames without Kafka headers.
    raw: bool,
    server: MechanismServer,
}

struct Authenticated {
    principal: String,
    mechanism: Mechanism,
    /// Wall-clock ms after which the next request closes the connection.
    expires_at_ms: Option<i64>,
}

/// What the request loop does with a frame, as decided by the SASL gate.
pub enum Gate {
    /// Not a SASL frame, and the connection may send it: handle normally.
    Pass,
    /// Send this frame and read the next request.
    Respond(BytesMut),
    /// Send `response` (if any), then close, logging `reason`.
    Close {
        response: Option<BytesMut>,
        reason: String,
    },
}

/// The SASL state of one connection on a SASL listener.
///
/// Owned by the connection's task; lives as long as the connection.
pub struct SaslConnection {
    config: Arc<ListenerSasl>,
    max_reauth_ms: i64,
    authenticated: Option<Authenticated>,
    exchange: Option<Exchange>,
}

impl SaslConnection {
    /// The gate for a connection, if its listener uses SASL.
    pub fn for_session(broker: &Broker, session: &Session) -> Option<Self> {
        if !session.security_protocol.uses_sasl() {
            return None;
        }
        // A SASL listener always has an entry (built with the config); an
        // empty one refuses every mechanism rather than letting anyone in.
        let config = broker
            .config
            .sasl
            .listener(&session.listener)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(ListenerSasl {
                    mechanisms: Vec::new(),
                    plain_users: BTreeMap::new(),
                    oauth: OAuthConfig::default(),
                })
            });
        Some(SaslConnection {
            config,
            max_reauth_ms: broker.config.sasl.connections_max_reauth_ms,
            authenticated: None,
            exchange: None,
        })
    }

    /// Decides what happens to one request frame (without its length
    /// prefix).
    pub fn on_frame(&mut self, broker: &Broker, session: &mut Session, frame: &Bytes) -> Gate {
        if self.exchange.as_ref().is_some_and(|e| e.raw) {
            return self.raw_token(broker, session, frame);
        }
        if frame.len() < 4 {
            return close(format!("request of {} bytes is too short", frame.len()));
        }
        let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
        let key = ApiKey::try_from(raw_key).ok();
        match key {
            Some(ApiKey::SaslHandshake) => self.handshake(session, frame),
            Some(ApiKey::SaslAuthenticate) if self.exchange.is_some() => {
                self.authenticate(broker, session, frame)
            }
            Some(ApiKey::SaslAuthenticate) if self.authenticated.is_none() => {
                self.illegal_state(frame, "SaslAuthenticate before SaslHandshake")
            }
            _ => match &self.authenticated {
                None if key == Some(ApiKey::ApiVersions) && self.exchange.is_none() => Gate::Pass,
                None => close(format!(
                    "{} request before SASL authentication (not processed)",
                    key.map_or_else(|| format!("API key {raw_key}"), |k| format!("{k:?}"))
                )),
                Some(a) if a.expires_at_ms.is_some_and(|t| now_ms() >= t) => close(format!(
                    "SASL session of {} expired without re-authentication (connections.max.reauth.ms)",
                    a.principal
                )),
                Some(_) => Gate::Pass,
            },
        }
    }

    fn illegal_state(&mut self, frame: &Bytes, why: &str) -> Gate {
        let resp = kafka_protocol::messages::SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(why.to_string().into()));
        match decode::<SaslAuthenticateRequest>(frame) {
            Ok((header, _)) => Gate::Close {
                response: respond(&header, &resp),
                reason: why.to_string(),
            },
            Err(e) => close(e),
        }
    }

    fn handshake(&mut self, session: &Session, frame: &Bytes) -> Gate {
        let (header, req) = match decode::<SaslHandshakeRequest>(frame) {
            Ok(x) => x,
            Err(e) => return close(e),
        };
        let enabled: Vec<_> = self
            .config
            .mechanisms
            .iter()
            .map(|m| m.name().to_string().into())
            .collect();
        let mut resp =
            kafka_protocol::messages::SaslHandshakeResponse::default().with_mechanisms(enabled);
        if self.exchange.is_some() {
            resp.error_code = ResponseError::IllegalSaslState.code();
            return Gate::Close {
                response: respond(&header, &resp),
                reason: "SaslHandshake during a SASL exchange".into(),
            };
        }
        let requested = req.mechanism.as_str();
        let Some(mechanism) =
            Mechanism::parse(requested).filter(|m| self.config.mechanisms.contains(m))
        else {
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
            audit_failure(
                session,
                requested,
                None,
                "unsupported SASL mechanism",
                false,
            );
            return Gate::Close {
                response: respond(&header, &resp),
                reason: format!("unsupported SASL mechanism {requested:?}"),
            };
        };
        let raw = header.request_api_version == 0;
        let mut server = match mechanism {
            Mechanism::Plain => MechanismServer::Plain,
            Mechanism::Scram(m) => MechanismServer::Scram(ScramServer::new(m)),
            Mechanism::OAuthBearer => MechanismServer::OAuth(OAuthServer::default()),
        };
        if let Some(a) = &self.authenticated {
            if raw {
                return close("re-authentication with SaslHandshake v0".into());
            }
            if a.mechanism != mechanism {
                server = MechanismServer::Refuse(format!(
                    "SASL mechanism '{}' requested by client is not supported for re-authentication of mechanism '{}'",
                    mechanism.name(),
                    a.mechanism.name()
                ));
            }
        }
        self.exchange = Some(Exchange {
            mechanism,
            raw,
            server,
        });
        match respond(&header, &resp) {
            Some(b) => Gate::Respond(b),
            None => close("cannot encode SaslHandshake response".into()),
        }
    }

    fn authenticate(&mut self, broker: &Broker, session: &mut Session, frame: &Bytes) -> Gate {
        let (header, req) = match decode::<SaslAuthenticateRequest>(frame) {
            Ok(x) => x,
            Err(e) => return close(e),
        };
        let step = self.step(broker, session, &req.auth_bytes);
        let mut resp = kafka_protocol::messages::SaslAuthenticateResponse::default();
        match step {
            Stepped::Continue(token) => {
                resp.auth_bytes = token.into();
                respond(&header, &resp).map_or_else(|| close("cannot encode".into()), Gate::Respond)
            }
            Stepped::Done(token, lifetime_ms) => {
                resp.auth_bytes = token.into();
                resp.session_lifetime_ms = lifetime_ms;
                respond(&header, &resp).map_or_else(|| close("cannot encode".into()), Gate::Respond)
            }
            Stepped::Failed(message) => {
                resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                resp.error_message = Some(message.clone().into());
                Gate::Close {
                    response: respond(&header, &resp),
                    reason: format!("SASL authentication failed: {message}"),
                }
            }
        }
    }

    fn raw_token(&mut self, broker: &Broker, session: &mut Session, frame: &Bytes) -> Gate {
        let framed = |token: Vec<u8>| {
            let mut b = BytesMut::with_capacity(4 + token.len());
            b.put_i32(token.len() as i32);
            b.extend_from_slice(&token);
            b
        };
        match self.step(broker, session, frame) {
            Stepped::Continue(token) | Stepped::Done(token, _) => Gate::Respond(framed(token)),
            // v0 has no way to carry an error: Kafka closes the connection.
            Stepped::Failed(message) => close(format!("SASL authentication failed: {message}")),
        }
    }

    /// Runs one token through the mechanism; on the last step records the
    /// outcome (principal, expiry, audit line).
    fn step(&mut self, broker: &Broker, session: &mut Session, token: &[u8]) -> Stepped {
        let Some(exchange) = self.exchange.as_mut() else {
            return Stepped::Failed("no SASL exchange in progress".into());
        };
        let mechanism = exchange.mechanism;
        let now = now_ms();
        let step = match &mut exchange.server {
            MechanismServer::Plain => plain::authenticate(token, &self.config.plain_users),
            MechanismServer::Scram(s) => {
                let image = broker.metadata.image();
                let Mechanism::Scram(m) = mechanism else {
                    unreachable!("a SCRAM server is only made for a SCRAM mechanism")
                };
                s.step(token, &|user| image.scram_credential(user, m).cloned())
            }
            MechanismServer::OAuth(s) => s.step(token, &self.config.oauth, now),
            MechanismServer::Refuse(message) => Step::Fail {
                user: None,
                message: message.clone(),
                reason: "mechanism changed on re-authentication".into(),
            },
        };
        let reauth = self.authenticated.is_some();
        match step {
            Step::Challenge(c) => Stepped::Continue(c),
            Step::Fail {
                user,
                message,
                reason,
            } => {
                self.exchange = None;
                audit_failure(session, mechanism.name(), user.as_deref(), &reason, reauth);
                Stepped::Failed(message)
            }
            Step::Done {
                response,
                principal,
                credential_expiry_ms,
            } => {
                self.exchange = None;
                if let Some(prev) = &self.authenticated {
                    if prev.principal != principal {
                        let message = format!(
                            "Cannot change principals during re-authentication from User.{}: User.{principal}",
                            prev.principal
                        );
                        audit_failure(
                            session,
                            mechanism.name(),
                            Some(&principal),
                            "principal changed on re-authentication",
                            true,
                        );
                        return Stepped::Failed(message);
                    }
                }
                // Kafka's session lifetime: the credential's remaining life,
                // capped by connections.max.reauth.ms when that is set.
                let max = (self.max_reauth_ms > 0).then_some(self.max_reauth_ms);
                let lifetime = match (credential_expiry_ms.map(|e| (e - now).max(0)), max) {
                    (Some(c), Some(m)) => Some(c.min(m)),
                    (c, m) => c.or(m),
                };
                self.authenticated = Some(Authenticated {
                    principal: principal.clone(),
                    mechanism,
                    expires_at_ms: lifetime.map(|l| now + l),
                });
                session.principal = Arc::new(KafkaPrincipal::user(principal.clone()));
                info!(
                    target: "strom::audit",
                    event = "authentication",
                    result = "success",
                    principal = %session.principal,
                    mechanism = mechanism.name(),
                    listener = %session.listener,
                    peer = %session.peer,
                    reauthentication = reauth,
                    session_lifetime_ms = lifetime.unwrap_or(0),
                );
                Stepped::Done(response, lifetime.unwrap_or(0))
            }
        }
    }
}

enum Stepped {
    Continue(Vec<u8>),
    /// Last token and the session lifetime (0: none).
    Done(Vec<u8>, i64),
    Failed(String),
}

fn close(reason: String) -> Gate {
    Gate::Close {
        response: None,
        reason,
    }
}

fn audit_failure(
    session: &Session,
    mechanism: &str,
    user: Option<&str>,
    reason: &str,
    reauth: bool,
) {
    let principal = user.map(|u| KafkaPrincipal::user(u).to_string());
    warn!(
        target: "strom::audit",
        event = "authentication",
        result = "failure",
        principal = principal.as_deref().unwrap_or("unknown"),
        mechanism,
        listener = %session.listener,
        peer = %session.peer,
        reauthentication = reauth,
        reason,
    );
}

/// Decodes a SASL request frame after checking its version is one we
/// advertise.
fn decode<R: Decodable>(frame: &Bytes) -> Result<(RequestHeader, R), String> {
    let mut buf = frame.clone();
    let key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]]))
        .map_err(|_| "unknown API key".to_string())?;
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    match handlers::supported_versions(key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => return Err(format!("unsupported version {version} of {key:?}")),
    }
    let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
        .map_err(|e| format!("cannot decode request header of {key:?} v{version}: {e}"))?;
    let req = R::decode(&mut buf, version)
        .map_err(|e| format!("cannot decode {key:?} v{version}: {e}"))?;
    Ok((header, req))
}

fn respond<R: kafka_protocol::protocol::Encodable + HeaderVersion>(
    header: &RequestHeader,
    resp: &R,
) -> Option<BytesMut> {
    match handlers::encode_response(header.correlation_id, header.request_api_version, resp) {
        Outcome::Respond(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::SecurityProtocol;

    fn listener(name: &str) -> Listener {
        Listener {
            name: name.into(),
            host: String::new(),
            port: 0,
            security_protocol: SecurityProtocol::SaslPlaintext,
        }
    }

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_users_come_from_the_listener_jaas_config() {
        let c = SaslConfig::from_raw(
            &raw(&[
                ("listener.name.sasl_plaintext.plain.sasl.jaas.config",
                 r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret" user_admin="admin-secret";"#),
                ("sasl.jaas.config", r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_other="x";"#),
                ("listener.name.sasl_plaintext.sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
                ("connections.max.reauth.ms", "2000"),
            ]),
            &[listener("SASL_PLAINTEXT"), listener("OTHER")],
        )
        .unwrap();
        let l = c.listener("SASL_PLAINTEXT").unwrap();
        assert_eq!(l.plain_users.len(), 2);
        assert_eq!(l.plain_users["alice"], "alice-secret");
        assert_eq!(
            l.mechanisms,
            vec![Mechanism::Plain, Mechanism::Scram(ScramMechanism::Sha512)]
        );
        // No listener-specific key: the unprefixed ones and the defaults.
        let o = c.listener("OTHER").unwrap();
        assert_eq!(o.plain_users["other"], "x");
        assert_eq!(o.mechanisms.len(), 3);
        assert!(!o.mechanisms.contains(&Mechanism::OAuthBearer));
        assert_eq!(c.connections_max_reauth_ms, 2000);
    }

    #[test]
    fn bad_sasl_settings_are_errors() {
        let l = [listener("SASL_PLAINTEXT")];
        assert!(SaslConfig::from_raw(&raw(&[("sasl.enabled.mechanisms", "GSSAPI")]), &l).is_err());
        assert!(SaslConfig::from_raw(&raw(&[("sasl.enabled.mechanisms", "")]), &l).is_err());
        assert!(
            SaslConfig::from_raw(&raw(&[("sasl.jaas.config", "Broken required")]), &l).is_err()
        );
        assert!(SaslConfig::from_raw(&raw(&[("connections.max.reauth.ms", "-1")]), &l).is_err());
        assert!(SaslConfig::from_raw(
            &raw(&[("sasl.oauthbearer.jwks.endpoint.url", "https://idp/jwks")]),
            &l
        )
        .is_err());
        assert!(SaslConfig::from_raw(
            &raw(&[(
                "listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
            )]),
            &l
        )
        .is_err());
        assert!(SaslConfig::from_raw(
            &raw(&[(
                "sasl.oauthbearer.jwks.endpoint.url",
                "file:/nonexistent/jwks.json"
            )]),
            &l
        )
        .is_err());
    }

    #[test]
    fn sasl_keys_are_recognised() {
        assert!(is_sasl_key("sasl.enabled.mechanisms"));
        assert!(is_sasl_key(
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"
        ));
        assert!(is_sasl_key(
            "listener.name.x.oauthbearer.sasl.oauthbearer.jwks.endpoint.url"
        ));
        assert!(is_sasl_key("plain.sasl.jaas.config"));
        assert!(!is_sasl_key("listener.name.x.ssl.keystore.location"));
        assert!(!is_sasl_key("sasl.bogus"));
    }

    /// A broker with one SASL_PLAINTEXT listener (PLAIN user admin) and a
    /// session on it.
    fn gate_fixture(
        extra: &[(&str, &str)],
    ) -> (tempfile::TempDir, Arc<Broker>, Session, SaslConnection) {
        let d = tempfile::tempdir().unwrap();
        let mut m = raw(&[
            ("listeners", "SASL_PLAINTEXT://127.0.0.1:0"),
            ("log.dirs", d.path().to_str().unwrap()),
            ("strom.admin.listener", ""),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="pw";"#,
            ),
        ]);
        m.extend(raw(extra));
        let config = crate::config::BrokerConfig::from_map(m).unwrap();
        let broker = Broker::open(config).unwrap();
        let session = Session {
            listener: "SASL_PLAINTEXT".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            security_protocol: SecurityProtocol::SaslPlaintext,
            principal: Arc::new(KafkaPrincipal::anonymous()),
            quota: Default::default(),
        };
        let gate = SaslConnection::for_session(&broker, &session).unwrap();
        (d, broker, session, gate)
    }

    fn request<R: kafka_protocol::protocol::Encodable>(
        key: ApiKey,
        version: i16,
        body: &R,
    ) -> Bytes {
        use kafka_protocol::protocol::Encodable;
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut b, key.request_header_version(version))
            .unwrap();
        body.encode(&mut b, version).unwrap();
        b.freeze()
    }

    fn plain_auth(token: &[u8]) -> Bytes {
        request(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token)),
        )
    }

    fn handshake(mechanism: &str, version: i16) -> Bytes {
        request(
            ApiKey::SaslHandshake,
            version,
            &SaslHandshakeRequest::default().with_mechanism(mechanism.to_string().into()),
        )
    }

    fn metadata() -> Bytes {
        request(
            ApiKey::Metadata,
            12,
            &kafka_protocol::messages::MetadataRequest::default(),
        )
    }

    #[test]
    fn the_gate_lets_nothing_through_before_authentication() {
        let (_d, broker, mut session, mut gate) = gate_fixture(&[]);
        let api_versions = request(
            ApiKey::ApiVersions,
            3,
            &kafka_protocol::messages::ApiVersionsRequest::default(),
        );
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &api_versions),
            Gate::Pass
        ));
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &metadata()),
            Gate::Close { response: None, .. }
        ));
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &plain_auth(b"\0admin\0pw")),
            Gate::Close {
                response: Some(_),
                ..
            }
        ));
        // Handshake, then a wrong password: an answer (error 58), then close.
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &handshake("PLAIN", 1)),
            Gate::Respond(_)
        ));
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &plain_auth(b"\0admin\0nope")),
            Gate::Close {
                response: Some(_),
                ..
            }
        ));
        assert_eq!(*session.principal, KafkaPrincipal::anonymous());
    }

    #[test]
    fn authentication_sets_the_principal_and_sessions_expire() {
        let (_d, broker, mut session, mut gate) =
            gate_fixture(&[("connections.max.reauth.ms", "1000")]);
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &handshake("PLAIN", 1)),
            Gate::Respond(_)
        ));
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &plain_auth(b"\0admin\0pw")),
            Gate::Respond(_)
        ));
        assert_eq!(*session.principal, KafkaPrincipal::user("admin"));
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &metadata()),
            Gate::Pass
        ));
        // The session ends 1 s after authentication: the next request closes.
        gate.authenticated.as_mut().unwrap().expires_at_ms = Some(now_ms() - 1);
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &metadata()),
            Gate::Close { .. }
        ));
        // A re-authentication (handshake first) is still allowed, and renews it.
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &handshake("PLAIN", 1)),
            Gate::Respond(_)
        ));
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &plain_auth(b"\0admin\0pw")),
            Gate::Respond(_)
        ));
        let expiry = gate.authenticated.as_ref().unwrap().expires_at_ms.unwrap();
        assert!(expiry > now_ms() + 500);
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &metadata()),
            Gate::Pass
        ));
    }

    #[test]
    fn v0_handshake_takes_raw_tokens() {
        let (_d, broker, mut session, mut gate) = gate_fixture(&[]);
        assert!(matches!(
            gate.on_frame(&broker, &mut session, &handshake("PLAIN", 0)),
            Gate::Respond(_)
        ));
        match gate.on_frame(&broker, &mut session, &Bytes::from_static(b"\0admin\0pw")) {
            Gate::Respond(b) => assert_eq!(&b[..], &[0, 0, 0, 0]),
            _ => panic!("expected an empty raw token"),
        }
        assert_eq!(*session.principal, KafkaPrincipal::user("admin"));
    }

    #[test]
    fn mechanism_names_are_exact() {
        assert_eq!(Mechanism::parse("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(
            Mechanism::parse("SCRAM-SHA-256"),
            Some(Mechanism::Scram(ScramMechanism::Sha256))
        );
        assert_eq!(Mechanism::parse("plain"), None);
        assert_eq!(Mechanism::parse("scram-sha-256"), None);
    }
}
