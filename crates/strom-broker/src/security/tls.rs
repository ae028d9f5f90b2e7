//! TLS for `SSL` and `SASL_SSL` listeners, configured with Kafka's `ssl.*`
//! property names.
//!
//! Each TLS listener's settings are read once at start-up: a
//! `listener.name.<lowercase listener name>.<key>` entry takes precedence
//! over the plain `<key>` (Kafka's per-listener prefix). Any bad setting
//! stops the broker with an error naming the effective key; nothing is
//! loaded lazily per connection.
//!
//! On an `SSL` listener the client certificate's subject DN (RFC 2253, as
//! Java's `X500Principal.getName()` formats it) is mapped through
//! `ssl.principal.mapping.rules` to the connection's principal; no
//! certificate means `User:ANONYMOUS`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

use super::KafkaPrincipal;
use crate::config::BrokerConfig;

/// The `ssl.*` keys a TLS listener reads (also accepted after a
/// `listener.name.<name>.` prefix).
pub const SSL_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.cipher.suites",
    "ssl.protocol",
    "ssl.principal.mapping.rules",
    "ssl.endpoint.identification.algorithm",
];

/// Whether `key` is one of [`SSL_KEYS`], plain or after a
/// `listener.name.<name>.` prefix (so it is not reported as ignored).
pub fn is_tls_key(key: &str) -> bool {
    let key = key
        .strip_prefix("listener.name.")
        .and_then(|rest| rest.split_once('.'))
        .map_or(key, |(_, k)| k);
    SSL_KEYS.contains(&key)
}

/// A TLS setting that keeps the broker from starting: the effective key
/// (with its listener prefix, if that is where it came from) and why.
#[derive(Debug, Error)]
#[error("invalid TLS configuration for listener {listener}: {key}: {reason}")]
pub struct TlsConfigError {
    pub listener: String,
    pub key: String,
    pub reason: String,
}

/// `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// One TLS listener's acceptor and principal mapping, built at start-up and
/// shared (read-only) by all its connections.
pub struct TlsListener {
    pub acceptor: TlsAcceptor,
    pub client_auth: ClientAuth,
    mapper: PrincipalMapper,
}

impl TlsListener {
    /// The principal of a connection whose client presented `certs` (leaf
    /// first): `User:<mapped DN>`, or `User:ANONYMOUS` without a
    /// certificate. An error (an unparsable certificate, or no mapping rule
    /// applies) fails the authentication, as in Kafka.
    pub fn principal(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<KafkaPrincipal, String> {
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return Ok(KafkaPrincipal::anonymous());
        };
        let dn = subject_dn(leaf)?;
        self.mapper.map(&dn).map(KafkaPrincipal::user)
    }
}

/// Builds the TLS state of every listener whose security protocol uses TLS,
/// keyed by listener name.
pub fn load_listeners(
    config: &BrokerConfig,
) -> Result<BTreeMap<String, Arc<TlsListener>>, TlsConfigError> {
    let mut out = BTreeMap::new();
    for l in config
        .listeners
        .iter()
        .filter(|l| l.security_protocol.uses_tls())
    {
        let props = Props {
            raw: &config.raw,
            listener: &l.name,
            prefix: format!("listener.name.{}.", l.name.to_ascii_lowercase()),
        };
        let sasl = l.security_protocol == super::SecurityProtocol::SaslSsl;
        out.insert(l.name.clone(), Arc::new(build(&props, sasl)?));
    }
    Ok(out)
}

/// A listener's view of the broker properties: the prefixed key wins.
struct Props<'a> {
    raw: &'a BTreeMap<String, String>,
    listener: &'a str,
    prefix: String,
}

/// A value and the key it was read from (for error messages).
struct Value<'a> {
    key: String,
    value: &'a str,
}

impl<'a> Props<'a> {
    /// The prefixed key if set, else the plain key; an empty value counts
    /// as unset (as Kafka treats an empty location or password).
    /// Only the `listener.name.<name>.` form of `key`.
    fn get_prefixed(&self, key: &str) -> Option<Value<'a>> {
        let k = format!("{}{key}", self.prefix);
        let v = self.raw.get(&k)?;
        (!v.trim().is_empty()).then_some(Value {
            key: k,
            value: v.as_str(),
        })
    }

    fn get(&self, key: &str) -> Option<Value<'a>> {
        let prefixed = format!("{}{key}", self.prefix);
        [prefixed, key.to_string()].into_iter().find_map(|k| {
            let v = self.raw.get(&k)?;
            (!v.trim().is_empty()).then_some(Value {
                key: k,
                value: v.as_str(),
            })
        })
    }

    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> TlsConfigError {
        TlsConfigError {
            listener: self.listener.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

fn build(p: &Props, sasl_ssl: bool) -> Result<TlsListener, TlsConfigError> {
    let versions = enabled_protocols(p)?;
    if let Some(v) = p.get("ssl.protocol") {
        if !matches!(v.value.trim(), "TLS" | "TLSv1.2" | "TLSv1.3") {
            return Err(p.err(
                v.key,
                format!("{:?}: only TLS, TLSv1.2 and TLSv1.3 are supported", v.value),
            ));
        }
    }
    // KIP-684: on SASL_SSL only the listener-prefixed ssl.client.auth
    // applies (SASL authenticates the client there).
    let client_auth_value = if sasl_ssl {
        p.get_prefixed("ssl.client.auth")
    } else {
        p.get("ssl.client.auth")
    };
    let client_auth = match client_auth_value {
        None => ClientAuth::None,
        Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => {
                return Err(p.err(
                    v.key,
                    format!("{other:?}: expected none, requested or required"),
                ))
            }
        },
    };
    let mapper = match p.get("ssl.principal.mapping.rules") {
        None => PrincipalMapper::default(),
        Some(v) => PrincipalMapper::parse(v.value).map_err(|e| p.err(v.key, e))?,
    };
    let (chain, key) = load_keystore(p)?;
    let roots = load_truststore(p)?;

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = cipher_suites(p, &provider.cipher_suites)? {
        provider.cipher_suites = suites;
    }
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            p.err(
                "ssl.enabled.protocols",
                format!("{e} (with the ssl.cipher.suites given)"),
            )
        })?;
    let builder = match (client_auth, roots) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(p.err(
                "ssl.truststore.location",
                "required when ssl.client.auth is requested or required (the CAs that sign client certificates)",
            ))
        }
        (auth, Some(roots)) => {
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Requested {
                v = v.allow_unauthenticated();
            }
            let verifier = v
                .build()
                .map_err(|e| p.err("ssl.truststore.location", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let keystore_key = if p.get("ssl.keystore.key").is_some() {
        "ssl.keystore.key"
    } else {
        "ssl.keystore.location"
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| p.err(keystore_key, format!("unusable certificate or key: {e}")))?;
    Ok(TlsListener {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_auth,
        mapper,
    })
}

/// TLS on the controller listener when its security protocol is SSL
/// (`None`: PLAINTEXT; config.rs refuses the SASL ones): the server side
/// is built as any Kafka listener's (`listener.name.<name>.ssl.*` or
/// `ssl.*`, `ssl.client.auth` honoured), the client side, for dialling the
/// other nodes' controller listeners, by [`listener_client_config`].
pub fn controller_tls(
    config: &BrokerConfig,
) -> Result<Option<strom_metadata::QuorumTls>, TlsConfigError> {
    let q = &config.quorum;
    let Some(name) = q.controller_listener.as_deref() else {
        return Ok(None);
    };
    if !q.controller_protocol.uses_tls() {
        return Ok(None);
    }
    let props = Props {
        raw: &config.raw,
        listener: name,
        prefix: format!("listener.name.{}.", name.to_ascii_lowercase()),
    };
    let server = build(&props, false)?.acceptor.config().clone();
    let client = listener_client_config(config, name)?;
    Ok(Some(strom_metadata::QuorumTls { server, client }))
}

/// The client side of this node's connections to other nodes on `listener`
/// (the inter-broker or the controller listener; Kafka's nodes use their own
/// listener settings as clients): the listener's key store is the client
/// certificate (for `ssl.client.auth=required`), its trust store verifies
/// the other node, and the host name is checked unless
/// `ssl.endpoint.identification.algorithm` is empty (Kafka's default:
/// `https`, checked).
pub fn listener_client_config(
    config: &BrokerConfig,
    listener: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let p = Props {
        raw: &config.raw,
        listener,
        prefix: format!("listener.name.{}.", listener.to_ascii_lowercase()),
    };
    let versions = enabled_protocols(&p)?;
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = cipher_suites(&p, &provider.cipher_suites)? {
        provider.cipher_suites = suites;
    }
    let provider = Arc::new(provider);
    let roots = match load_truststore(&p)? {
        Some(roots) => roots,
        // No trust store: the system's CA bundle, as Java falls back to
        // its default `cacerts`.
        None => system_roots().ok_or_else(|| {
            p.err(
                "ssl.truststore.location",
                format!("required on listener {listener} (no system CA bundle at {SYSTEM_CA_BUNDLE}): the CAs that sign the other nodes' certificates"),
            )
        })?,
    };
    let roots = Arc::new(roots);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| p.err("ssl.enabled.protocols", e.to_string()))?;
    let check_host = p
        .raw
        .get(&format!(
            "{}ssl.endpoint.identification.algorithm",
            p.prefix
        ))
        .or_else(|| p.raw.get("ssl.endpoint.identification.algorithm"))
        .is_none_or(|v| !v.trim().is_empty());
    let builder = if check_host {
        builder.with_root_certificates(roots)
    } else {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| p.err("ssl.truststore.location", e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(inner)))
    };
    let (chain, key) = load_keystore(&p)?;
    let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
        p.err(
            "ssl.keystore.location",
            format!("unusable certificate or key: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The system's CA bundle, if there is one with a usable certificate.
fn system_roots() -> Option<RootCertStore> {
    let pem = std::fs::read(SYSTEM_CA_BUNDLE).ok()?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    (!roots.is_empty()).then_some(roots)
}

/// `ssl.endpoint.identification.algorithm=` (empty): the chain is checked,
/// the host name is not (as in Kafka's clients).
#[derive(Debug)]
pub struct NoHostnameCheck(pub Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `ssl.enabled.protocols` (default `TLSv1.2,TLSv1.3`); anything older is
/// refused rather than silently dropped.
fn enabled_protocols(
    p: &Props,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsConfigError> {
    let Some(v) = p.get("ssl.enabled.protocols") else {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    };
    let mut out = Vec::new();
    for item in v.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let version = match item {
            "TLSv1.3" => &rustls::version::TLS13,
            "TLSv1.2" => &rustls::version::TLS12,
            other => {
                return Err(p.err(
                    v.key,
                    format!("{other:?} is not supported: only TLSv1.2 and TLSv1.3"),
                ))
            }
        };
        if !out.contains(&version) {
            out.push(version);
        }
    }
    if out.is_empty() {
        return Err(p.err(v.key, "no protocol enabled: give TLSv1.2 and/or TLSv1.3"));
    }
    Ok(out)
}

/// `ssl.cipher.suites` (IANA names, as Java and Kafka take them; TLS 1.3
/// suites as `TLS_AES_128_GCM_SHA256`): the subset of the provider's suites
/// to offer, or `None` for all of them. A name the provider lacks is an
/// error, not silently dropped.
fn cipher_suites(
    p: &Props,
    all: &[rustls::SupportedCipherSuite],
) -> Result<Option<Vec<rustls::SupportedCipherSuite>>, TlsConfigError> {
    let Some(v) = p.get("ssl.cipher.suites") else {
        return Ok(None);
    };
    let iana = |s: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", s.suite());
        match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name,
        }
    };
    let mut out: Vec<rustls::SupportedCipherSuite> = Vec::new();
    for name in v.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(suite) = all.iter().find(|s| iana(s) == name) else {
            let known: Vec<String> = all.iter().map(iana).collect();
            return Err(p.err(
                v.key,
                format!("{name:?} is not supported; supported: {}", known.join(",")),
            ));
        };
        if !out.contains(suite) {
            out.push(*suite);
        }
    }
    Ok(Some(out))
}

/// Store formats: Kafka's names. `JKS` (Kafka's default type) is read as
/// PKCS#12, as Java does for a PKCS#12 file; a real JKS file is refused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreType {
    Pem,
    Pkcs12,
}

fn store_type(p: &Props, key: &str, bytes: Option<&[u8]>) -> Result<StoreType, TlsConfigError> {
    match p.get(key) {
        Some(v) => match v.value.trim().to_ascii_uppercase().as_str() {
            "PEM" => Ok(StoreType::Pem),
            "PKCS12" | "JKS" => Ok(StoreType::Pkcs12),
            other => Err(p.err(v.key, format!("{other:?}: expected PEM or PKCS12"))),
        },
        // Unset: Kafka would assume JKS; look at the file instead.
        None => Ok(match bytes {
            Some(b) if looks_like_pem(b) => StoreType::Pem,
            Some(_) => StoreType::Pkcs12,
            None => StoreType::Pem,
        }),
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).contains("-----BEGIN ")
}

fn read_file(p: &Props, v: &Value) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(v.value.trim())
        .map_err(|e| p.err(&v.key, format!("cannot read {:?}: {e}", v.value)))
}

/// The broker's certificate chain (leaf first) and private key.
fn load_keystore(
    p: &Props,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    let key_password = p.get("ssl.key.password");
    let inline_chain = p.get("ssl.keystore.certificate.chain");
    let inline_key = p.get("ssl.keystore.key");
    if inline_chain.is_some() || inline_key.is_some() {
        let (Some(chain), Some(key)) = (inline_chain, inline_key) else {
            return Err(p.err(
                "ssl.keystore.certificate.chain",
                "ssl.keystore.certificate.chain and ssl.keystore.key must be given together",
            ));
        };
        if let Some(loc) = p.get("ssl.keystore.location") {
            return Err(p.err(loc.key, "cannot be combined with ssl.keystore.key"));
        }
        if store_type(p, "ssl.keystore.type", None)? != StoreType::Pem {
            return Err(p.err(
                "ssl.keystore.type",
                "must be PEM with ssl.keystore.certificate.chain/ssl.keystore.key",
            ));
        }
        let certs =
            pem_certs(normalize_pem(chain.value).as_bytes()).map_err(|e| p.err(&chain.key, e))?;
        let key_der = pem_key(
            normalize_pem(key.value).as_bytes(),
            key_password.as_ref().map(|v| v.value),
        )
        .map_err(|e| p.err(&key.key, e))?;
        return Ok((certs, key_der));
    }
    let Some(loc) = p.get("ssl.keystore.location") else {
        return Err(p.err(
            "ssl.keystore.location",
            "required for a TLS listener (or ssl.keystore.certificate.chain with ssl.keystore.key)",
        ));
    };
    let bytes = read_file(p, &loc)?;
    match store_type(p, "ssl.keystore.type", Some(&bytes))? {
        StoreType::Pem => {
            if let Some(pw) = p.get("ssl.keystore.password") {
                // Kafka: a PEM key store has no store password, only a key password.
                return Err(p.err(
                    pw.key,
                    "not supported with a PEM key store; use ssl.key.password for an encrypted key",
                ));
            }
            let certs = pem_certs(&bytes).map_err(|e| p.err(&loc.key, e))?;
            let key = pem_key(&bytes, key_password.as_ref().map(|v| v.value))
                .map_err(|e| p.err(&loc.key, e))?;
            Ok((certs, key))
        }
        StoreType::Pkcs12 => {
            let password = p.get("ssl.keystore.password");
            let store = open_pkcs12(
                &bytes,
                password.as_ref().map_or("", |v| v.value),
                p12_keystore::Pkcs12ImportPolicy::Strict,
            )
            .map_err(|e| p.err(&loc.key, e))?;
            let Some((_, chain)) = store.private_key_chain() else {
                return Err(p.err(
                    &loc.key,
                    "no private key entry with its certificate in the PKCS12 key store",
                ));
            };
            let certs: Vec<CertificateDer<'static>> = chain
                .certs()
                .iter()
                .map(|c| CertificateDer::from(c.as_der().to_vec()))
                .collect();
            if certs.is_empty() {
                return Err(p.err(&loc.key, "the PKCS12 key entry has no certificate"));
            }
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
            Ok((certs, key))
        }
    }
}

/// The CAs client certificates are checked against; `None` if no trust
/// store is configured.
fn load_truststore(p: &Props) -> Result<Option<RootCertStore>, TlsConfigError> {
    let (certs, key) = if let Some(inline) = p.get("ssl.truststore.certificates") {
        if let Some(loc) = p.get("ssl.truststore.location") {
            return Err(p.err(
                loc.key,
                "cannot be combined with ssl.truststore.certificates",
            ));
        }
        (
            pem_certs(normalize_pem(inline.value).as_bytes()).map_err(|e| p.err(&inline.key, e))?,
            inline.key,
        )
    } else if let Some(loc) = p.get("ssl.truststore.location") {
        let bytes = read_file(p, &loc)?;
        let certs = match store_type(p, "ssl.truststore.type", Some(&bytes))? {
            StoreType::Pem => {
                if let Some(pw) = p.get("ssl.truststore.password") {
                    return Err(p.err(pw.key, "not supported with a PEM trust store"));
                }
                pem_certs(&bytes).map_err(|e| p.err(&loc.key, e))?
            }
            StoreType::Pkcs12 => {
                let password = p.get("ssl.truststore.password");
                // Raw: a trust store written by openssl or keytool marks its
                // certificates differently; every certificate in it is trusted.
                let store = open_pkcs12(
                    &bytes,
                    password.as_ref().map_or("", |v| v.value),
                    p12_keystore::Pkcs12ImportPolicy::Raw,
                )
                .map_err(|e| p.err(&loc.key, e))?;
                let mut certs = Vec::new();
                for (_, entry) in store.entries() {
                    match entry {
                        p12_keystore::KeyStoreEntry::Certificate(c) => {
                            certs.push(CertificateDer::from(c.as_der().to_vec()))
                        }
                        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => certs.extend(
                            chain
                                .certs()
                                .iter()
                                .map(|c| CertificateDer::from(c.as_der().to_vec())),
                        ),
                        p12_keystore::KeyStoreEntry::Secret(_) => {}
                    }
                }
                certs
            }
        };
        (certs, loc.key)
    } else {
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| p.err(&key, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(p.err(key, "no certificate in the trust store"));
    }
    Ok(Some(roots))
}

fn open_pkcs12(
    bytes: &[u8],
    password: &str,
    policy: p12_keystore::Pkcs12ImportPolicy,
) -> Result<p12_keystore::KeyStore, String> {
    if bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]) {
        return Err("JKS key stores are not supported; convert it with `keytool -importkeystore -deststoretype PKCS12`".into());
    }
    p12_keystore::KeyStore::from_pkcs12(bytes, password, policy)
        .map_err(|e| format!("cannot open the PKCS12 store (wrong password or not PKCS12?): {e}"))
}

/// Re-lines inline PEM: a properties value continued over lines (`\`)
/// arrives as one line, `-----BEGIN X----- MIIC… -----END X-----`, which
/// Kafka accepts and line-based PEM parsers do not.
fn normalize_pem(text: &str) -> String {
    static BLOCK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?s)-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END ([A-Z0-9 ]+)-----")
            .expect("valid regex")
    });
    let mut out = String::new();
    for c in BLOCK.captures_iter(text) {
        let body: String = c[2].chars().filter(|c| !c.is_whitespace()).collect();
        out.push_str(&format!("-----BEGIN {}-----\n", &c[1]));
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(&format!("-----END {}-----\n", &c[3]));
    }
    out
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into());
    }
    Ok(certs)
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// The private key of a PEM store: PKCS#8 (encrypted with `password`, or
/// not), PKCS#1 RSA or SEC1 EC.
fn pem_key(pem: &[u8], password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let text = String::from_utf8_lossy(pem);
    if let Some(start) = text.find(ENCRYPTED_BEGIN) {
        let body = &text[start + ENCRYPTED_BEGIN.len()..];
        let end = body
            .find(ENCRYPTED_END)
            .ok_or("unterminated ENCRYPTED PRIVATE KEY block")?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
            .map_err(|e| format!("bad base64 in the ENCRYPTED PRIVATE KEY block: {e}"))?;
        let password = password.ok_or("the private key is encrypted: set ssl.key.password")?;
        let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(|e| format!("bad encrypted private key: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|e| format!("cannot decrypt the private key with ssl.key.password: {e}"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (-----BEGIN PRIVATE KEY-----) found".to_string()
        }
        e => format!("bad PEM private key: {e}"),
    })
}

/// The subject DN of a DER certificate in RFC 2253 form, as Java's
/// `X500Principal.getName()` (what Kafka maps): RDNs last-to-first, no
/// spaces, `CN`/`OU`/`O`/`L`/`ST`/`C`/`STREET`/`DC`/`UID` by name, other
/// attributes as `<oid>=#<hex of the DER value>`.
pub fn subject_dn(cert: &[u8]) -> Result<String, String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert)
        .map_err(|e| format!("cannot parse the client certificate: {e}"))?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let value = atv.attr_value();
            let keyword = match oid.as_str() {
                "2.5.4.3" => Some("CN"),
                "2.5.4.11" => Some("OU"),
                "2.5.4.10" => Some("O"),
                "2.5.4.7" => Some("L"),
                "2.5.4.8" => Some("ST"),
                "2.5.4.6" => Some("C"),
                "2.5.4.9" => Some("STREET"),
                "0.9.2342.19200300.100.1.25" => Some("DC"),
                "0.9.2342.19200300.100.1.1" => Some("UID"),
                _ => None,
            };
            let text = keyword.and_then(|_| attr_string(value.tag(), value.data));
            parts.push(match (keyword, text) {
                (Some(k), Some(t)) => format!("{k}={}", escape_rfc2253(&t)),
                _ => {
                    let name = keyword.map_or(oid.clone(), str::to_string);
                    format!("{name}=#{}", hex(&der_tlv(value.tag().0, value.data)))
                }
            });
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The text of a DirectoryString value (UTF8, Printable, IA5, Numeric,
/// Teletex as Latin-1, BMP as UTF-16).
fn attr_string(tag: x509_parser::der_parser::asn1_rs::Tag, data: &[u8]) -> Option<String> {
    match tag.0 {
        12 | 19 | 22 | 18 => std::str::from_utf8(data).ok().map(str::to_string),
        20 => Some(data.iter().map(|&b| b as char).collect()),
        30 if data.len().is_multiple_of(2) => String::from_utf16(
            &data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
        )
        .ok(),
        _ => None,
    }
}

fn der_tlv(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![tag as u8];
    let len = data.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(data);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 2253 §2.4 escaping.
fn escape_rfc2253(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `ssl.principal.mapping.rules`: Kafka's `SslPrincipalMapper`. Rules are
/// tried in order; the first whose pattern matches the whole DN gives the
/// name. `DEFAULT` is the DN itself.
#[derive(Debug)]
pub struct PrincipalMapper {
    rules: Vec<MappingRule>,
}

#[derive(Debug)]
enum MappingRule {
    Default,
    Rule {
        pattern: regex::Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![MappingRule::Default],
        }
    }
}

impl PrincipalMapper {
    /// Parses `DEFAULT` and `RULE:pattern/replacement/[LU]` entries
    /// separated by commas (commas inside a pattern belong to it; `\`
    /// escapes a `/`).
    pub fn parse(rules: &str) -> Result<Self, String> {
        let s = rules.trim();
        let mut rest = s;
        let mut out = Vec::new();
        while !rest.is_empty() {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("DEFAULT") {
                out.push(MappingRule::Default);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("RULE:") {
                let (pattern, r) = take_until_slash(r).ok_or_else(|| {
                    format!("invalid rule {rest:?}: expected RULE:pattern/replacement/[LU]")
                })?;
                let (replacement, r) = take_until_slash(r).ok_or_else(|| {
                    format!("invalid rule {rest:?}: expected RULE:pattern/replacement/[LU]")
                })?;
                let (case, r) = match r.chars().next() {
                    Some('L') => (Case::Lower, &r[1..]),
                    Some('U') => (Case::Upper, &r[1..]),
                    _ => (Case::Keep, r),
                };
                let pattern = pattern.replace("\\/", "/");
                let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
                out.push(MappingRule::Rule {
                    pattern: regex,
                    replacement: replacement.replace("\\/", "/"),
                    case,
                });
                rest = r;
            } else {
                return Err(format!(
                    "invalid rule {rest:?}: expected DEFAULT or RULE:pattern/replacement/[LU]"
                ));
            }
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.is_empty() {
                return Err(format!("invalid rule: unexpected {rest:?} after a rule"));
            }
        }
        if out.is_empty() {
            return Err("no rule given (the default is DEFAULT)".into());
        }
        Ok(PrincipalMapper { rules: out })
    }

    /// The principal name for `dn`, or an error if no rule applies.
    pub fn map(&self, dn: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                MappingRule::Default => return Ok(dn.to_string()),
                MappingRule::Rule {
                    pattern,
                    replacement,
                    case,
                } => {
                    let Some(caps) = pattern.captures(dn) else {
                        continue;
                    };
                    let name = expand_java_replacement(replacement, &caps);
                    return Ok(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(format!(
            "no ssl.principal.mapping.rules rule applies to {dn:?}"
        ))
    }
}

/// Splits at the first `/` not escaped by `\`.
fn take_until_slash(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'/' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// Java `Matcher.replaceAll` replacement syntax: `$n` is group n (a group
/// the pattern does not have stays literal, as Kafka escapes it), `\x` is
/// a literal `x`.
fn expand_java_replacement(replacement: &str, caps: &regex::Captures) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '$' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                match digits.parse::<usize>().ok().filter(|&n| n < caps.len()) {
                    Some(n) => out.push_str(caps.get(n).map_or("", |m| m.as_str())),
                    None => {
                        out.push('$');
                        out.push_str(&digits);
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_keeps_the_dn() {
        let m = PrincipalMapper::default();
        assert_eq!(
            m.map("CN=alice,OU=eng,O=acme").unwrap(),
            "CN=alice,OU=eng,O=acme"
        );
        let m = PrincipalMapper::parse("DEFAULT").unwrap();
        assert_eq!(m.map("CN=a").unwrap(), "CN=a");
    }

    #[test]
    fn rules_apply_in_order_with_groups_and_case() {
        // Kafka's documented example.
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            m.map("CN=kafka-svc,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .unwrap(),
            "kafka-svc"
        );
        assert_eq!(
            m.map("CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Palo Alto,ST=CA,C=US")
                .unwrap(),
            "duke@javasoft"
        );
        assert_eq!(m.map("OU=x,cn=bob.smith,O=y").unwrap(), "BOB.SMITH");
        assert_eq!(m.map("O=only").unwrap(), "O=only");
    }

    #[test]
    fn no_matching_rule_is_an_error() {
        let m = PrincipalMapper::parse("RULE:^CN=(.*)$/$1/").unwrap();
        assert_eq!(m.map("CN=x").unwrap(), "x");
        assert!(m
            .map("O=x")
            .unwrap_err()
            .contains("no ssl.principal.mapping.rules rule"));
    }

    #[test]
    fn escaped_slashes_and_literal_dollars() {
        let m = PrincipalMapper::parse(r"RULE:^CN=([^,]*)\/(.*)$/$1\/$2-$9/").unwrap();
        assert_eq!(m.map("CN=a/b").unwrap(), "a/b-$9");
    }

    #[test]
    fn bad_rules_are_rejected() {
        for bad in [
            "",
            "RULE:abc",
            "RULE:^(.*$/$1/",
            "NOPE",
            "DEFAULT junk",
            "RULE:a/b/X",
        ] {
            assert!(
                PrincipalMapper::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn inline_pem_on_one_line_is_relined() {
        let one_line = "-----BEGIN CERTIFICATE----- QUJD REVG -----END CERTIFICATE----- junk";
        assert_eq!(
            normalize_pem(one_line),
            "-----BEGIN CERTIFICATE-----\nQUJDREVG\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            pem_certs(normalize_pem(one_line).as_bytes()).unwrap().len(),
            1
        );
    }

    #[test]
    fn rfc2253_escaping() {
        assert_eq!(escape_rfc2253("a,b+c"), r"a\,b\+c");
        assert_eq!(escape_rfc2253("#x "), r"\#x\ ");
        assert_eq!(escape_rfc2253("plain"), "plain");
    }

    fn config(pairs: &[(&str, &str)]) -> BrokerConfig {
        let mut m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry("listeners".into())
            .or_insert_with(|| "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into());
        BrokerConfig::from_map(m).unwrap()
    }

    fn error_key(pairs: &[(&str, &str)]) -> String {
        match load_listeners(&config(pairs)) {
            Ok(_) => panic!("{pairs:?} must be rejected"),
            Err(e) => e.key,
        }
    }

    #[test]
    fn plaintext_only_needs_no_tls() {
        let c = config(&[("listeners", "PLAINTEXT://127.0.0.1:0")]);
        assert!(load_listeners(&c).unwrap().is_empty());
    }

    #[test]
    fn config_errors_name_the_key() {
        assert_eq!(error_key(&[]), "ssl.keystore.location");
        assert_eq!(
            error_key(&[("ssl.keystore.location", "/nonexistent/ks.pem")]),
            "ssl.keystore.location"
        );
        assert_eq!(
            error_key(&[(
                "listener.name.ssl.ssl.keystore.location",
                "/nonexistent/ks.pem"
            )]),
            "listener.name.ssl.ssl.keystore.location"
        );
        assert_eq!(
            error_key(&[("ssl.enabled.protocols", "TLSv1.2,TLSv1.1")]),
            "ssl.enabled.protocols"
        );
        assert_eq!(
            error_key(&[("listener.name.ssl.ssl.enabled.protocols", "SSLv3")]),
            "listener.name.ssl.ssl.enabled.protocols"
        );
        assert_eq!(
            error_key(&[("ssl.client.auth", "always")]),
            "ssl.client.auth"
        );
        assert_eq!(
            error_key(&[("ssl.principal.mapping.rules", "RULE:broken")]),
            "ssl.principal.mapping.rules"
        );
        assert_eq!(
            error_key(&[("ssl.keystore.type", "BKS")]),
            "ssl.keystore.location"
        );
        assert_eq!(
            error_key(&[(
                "ssl.keystore.certificate.chain",
                "-----BEGIN CERTIFICATE-----"
            )]),
            "ssl.keystore.certificate.chain"
        );
    }

    #[test]
    fn inter_broker_client_errors_name_the_listener_key() {
        let key = |pairs: &[(&str, &str)]| match listener_client_config(&config(pairs), "SSL") {
            Ok(_) => panic!("{pairs:?} must be rejected"),
            Err(e) => e.key,
        };
        assert_eq!(
            key(&[(
                "listener.name.ssl.ssl.truststore.location",
                "/nonexistent/ca.pem"
            )]),
            "listener.name.ssl.ssl.truststore.location"
        );
        assert_eq!(
            key(&[("ssl.enabled.protocols", "TLSv1.1")]),
            "ssl.enabled.protocols"
        );
    }

    #[test]
    fn the_listener_prefix_wins_over_the_plain_key() {
        let c = config(&[
            ("ssl.client.auth", "required"),
            ("listener.name.ssl.ssl.client.auth", "bogus"),
        ]);
        let e = load_listeners(&c).err().unwrap();
        assert_eq!(e.key, "listener.name.ssl.ssl.client.auth");
    }

    #[test]
    fn sasl_ssl_reads_only_the_prefixed_client_auth() {
        let sasl = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("listeners", "SASL_SSL://127.0.0.1:0"),
                ("ssl.keystore.location", "/nonexistent/ks.pem"),
            ];
            pairs.extend_from_slice(extra);
            error_key(&pairs)
        };
        // The plain key is not read on SASL_SSL (KIP-684): the keystore fails first.
        assert_eq!(
            sasl(&[("ssl.client.auth", "bogus")]),
            "ssl.keystore.location"
        );
        assert_eq!(
            sasl(&[("listener.name.sasl_ssl.ssl.client.auth", "bogus")]),
            "listener.name.sasl_ssl.ssl.client.auth"
        );
    }

    #[test]
    fn cipher_suites_by_iana_name() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let raw = BTreeMap::from([(
            "ssl.cipher.suites".to_string(),
            "TLS_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string(),
        )]);
        let p = Props {
            raw: &raw,
            listener: "SSL",
            prefix: "listener.name.ssl.".into(),
        };
        let got = cipher_suites(&p, &all).unwrap().unwrap();
        assert_eq!(
            got.iter().map(|s| s.suite()).collect::<Vec<_>>(),
            vec![
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]
        );
        let raw = BTreeMap::from([(
            "ssl.cipher.suites".to_string(),
            "TLS_RSA_WITH_RC4_128_MD5".to_string(),
        )]);
        let p = Props {
            raw: &raw,
            listener: "SSL",
            prefix: "listener.name.ssl.".into(),
        };
        let e = cipher_suites(&p, &all).unwrap_err();
        assert_eq!(e.key, "ssl.cipher.suites");
        assert!(e.reason.contains("TLS_AES_128_GCM_SHA256"), "{e}");
    }

    #[test]
    fn bad_pem_contents_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ks.pem");
        std::fs::write(&path, "not a pem file at all").unwrap();
        let loc = path.to_str().unwrap();
        let e = load_listeners(&config(&[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", loc),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.key, "ssl.keystore.location");
        assert!(e.reason.contains("no PEM certificate"), "{e}");
        let e = load_listeners(&config(&[
            ("ssl.keystore.type", "PKCS12"),
            ("ssl.keystore.location", loc),
            ("ssl.keystore.password", "x"),
        ]))
        .err()
        .unwrap();
        assert!(e.reason.contains("PKCS12"), "{e}");
        let e = load_listeners(&config(&[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", loc),
            ("ssl.keystore.password", "x"),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.key, "ssl.keystore.password");
    }
}
