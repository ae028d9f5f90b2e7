//! TLS for the CLI's own protocol client ([`crate::raw`]):
//! `security.protocol=SSL` (or `SASL_SSL`) from `-X` properties or a
//! `--command-config` file, with librdkafka's and Kafka's key names.
//!
//! Trust: `ssl.ca.location` or `ssl.truststore.location` (PEM). Client
//! certificate (mTLS): `ssl.certificate.location` + `ssl.key.location`, or a
//! PEM `ssl.keystore.location` holding key and chain. Hostname checking
//! follows `ssl.endpoint.identification.algorithm` (`https`, the default, or
//! empty/`none` to skip it). Built once per process, before any connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use strom_broker::security::tls::NoHostnameCheck;

static CONFIG: OnceLock<Option<Arc<ClientConfig>>> = OnceLock::new();

/// Reads the TLS settings from `props` (`key=value`, later keys win) and
/// keeps them for every raw connection of this process.
pub fn install(props: &[String]) -> Result<()> {
    let config = from_props(props)?;
    let _ = CONFIG.set(config);
    Ok(())
}

/// The installed TLS client config, if the security protocol uses TLS.
pub fn current() -> Option<Arc<ClientConfig>> {
    CONFIG.get().cloned().flatten()
}

/// Wraps a connected socket in TLS and completes the handshake, so a
/// certificate problem is reported as such rather than as a failed request.
pub fn wrap(
    config: Arc<ClientConfig>,
    mut sock: TcpStream,
    host: &str,
) -> Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| anyhow!("{host} is not a valid TLS server name: {e}"))?
        .to_owned();
    let mut conn = ClientConnection::new(config, name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("TLS handshake with {host} failed"))?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// A byte stream the raw client can use: plain TCP or TLS.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

fn get<'a>(props: &'a [String], key: &str) -> Option<&'a str> {
    props
        .iter()
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .next_back()
        .filter(|v| !v.is_empty())
}

fn from_props(props: &[String]) -> Result<Option<Arc<ClientConfig>>> {
    let protocol = get(props, "security.protocol")
        .unwrap_or("PLAINTEXT")
        .to_ascii_uppercase();
    match protocol.as_str() {
        "SSL" | "SASL_SSL" => {}
        "PLAINTEXT" | "SASL_PLAINTEXT" => return Ok(None),
        other => bail!(
            "security.protocol {other:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        ),
    }
    for key in ["ssl.truststore.type", "ssl.keystore.type"] {
        if let Some(t) = get(props, key) {
            if !t.eq_ignore_ascii_case("PEM") {
                bail!("{key}={t}: the strom CLI reads PEM stores only");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let (ca_key, ca_path) = match (
        get(props, "ssl.ca.location"),
        get(props, "ssl.truststore.location"),
    ) {
        (Some(p), _) => ("ssl.ca.location", p),
        (None, Some(p)) => ("ssl.truststore.location", p),
        // librdkafka's default: the system's CA bundle.
        (None, None) => ("ssl.ca.location", "/etc/ssl/certs/ca-certificates.crt"),
    };
    let pem = std::fs::read(ca_path).with_context(|| format!("{ca_key}: cannot read {ca_path}"))?;
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| anyhow!("{ca_key}: bad PEM in {ca_path}: {e}"))?;
        roots
            .add(c)
            .map_err(|e| anyhow!("{ca_key}: unusable CA certificate in {ca_path}: {e}"))?;
    }
    if roots.is_empty() {
        bail!("{ca_key}: no certificate in {ca_path}");
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    // Kafka's clients skip the host name check for an empty value,
    // librdkafka for `none`; both default to checking it.
    let algorithm = props
        .iter()
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| k.trim() == "ssl.endpoint.identification.algorithm")
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .next_back();
    let verify_host = !matches!(algorithm.as_deref(), Some("") | Some("none"));
    let roots = Arc::new(roots);
    let builder = if verify_host {
        builder.with_root_certificates(roots)
    } else {
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(inner)))
    };
    let client_cert = match (
        get(props, "ssl.certificate.location"),
        get(props, "ssl.key.location"),
        get(props, "ssl.keystore.location"),
    ) {
        (Some(cert), Some(key), _) => Some((
            read(cert, "ssl.certificate.location")?,
            read(key, "ssl.key.location")?,
        )),
        (None, None, Some(ks)) => {
            let pem = read(ks, "ssl.keystore.location")?;
            Some((pem.clone(), pem))
        }
        (None, None, None) => None,
        _ => bail!("ssl.certificate.location and ssl.key.location must be given together"),
    };
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("bad PEM client certificate: {e}"))?;
            if chain.is_empty() {
                bail!("no PEM certificate in the client certificate file");
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                anyhow!("no usable unencrypted PEM private key for the client certificate: {e}")
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow!("unusable client certificate or key: {e}"))?
        }
    };
    Ok(Some(Arc::new(config)))
}

fn read(path: &str, key: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{key}: cannot read {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_needs_no_tls_and_unknown_protocols_are_refused() {
        assert!(from_props(&[]).unwrap().is_none());
        assert!(from_props(&["security.protocol=SASL_PLAINTEXT".into()])
            .unwrap()
            .is_none());
        assert!(from_props(&["security.protocol=KERBEROS".into()]).is_err());
    }

    #[test]
    fn ssl_errors_name_the_key() {
        let e = from_props(&[
            "security.protocol=SSL".into(),
            "ssl.ca.location=/nonexistent/ca.pem".into(),
        ])
        .unwrap_err();
        assert!(format!("{e:#}").contains("ssl.ca.location"), "{e:#}");
        let e = from_props(&[
            "security.protocol=SSL".into(),
            "ssl.truststore.type=JKS".into(),
        ])
        .unwrap_err();
        assert!(format!("{e:#}").contains("ssl.truststore.type"), "{e:#}");
    }
}
