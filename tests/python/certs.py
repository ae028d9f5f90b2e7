"""Test certificates for the TLS tests, made with the `cryptography` package.

`make_pki(dir)` writes a CA, a server certificate for 127.0.0.1/localhost, a client
certificate the CA signed (subject `O=acme, OU=eng, CN=alice`, i.e. RFC 2253
`CN=alice,OU=eng,O=acme`) and one signed by another CA nobody trusts, in the forms the
broker and the clients read (PEM files, an encrypted-key PEM key store, PKCS12 key and
trust stores). Nothing is fetched; every run makes fresh keys.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STORE_PASSWORD = "store-secret"
KEY_PASSWORD = "key-secret"
CLIENT_DN = "CN=alice,OU=eng,O=acme"


@dataclass
class Pki:
    dir: Path
    ca_pem: Path                # the trusted CA (trust store for both sides)
    server_keystore_pem: Path   # server key + chain, one PEM file, key unencrypted
    server_keystore_enc_pem: Path  # the same with the key encrypted by KEY_PASSWORD
    server_cert_pem: Path
    server_key_pem: Path
    server_keystore_p12: Path   # PKCS12, STORE_PASSWORD
    truststore_p12: Path        # PKCS12 holding the CA, STORE_PASSWORD
    client_cert_pem: Path       # signed by the CA, subject CLIENT_DN
    client_key_pem: Path
    client_keystore_pem: Path   # client key + certificate, one PEM file
    rogue_cert_pem: Path        # signed by an untrusted CA
    rogue_key_pem: Path


def _name(*parts):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject, subject_key, issuer, issuer_key, *, ca=False, server=False, client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer)
         .public_key(subject_key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def _pem_key(k, password=None):
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def make_pki(directory):
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name((NameOID.ORGANIZATION_NAME, "strom-test"), (NameOID.COMMON_NAME, "Strom Test CA"))
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = _key()
    server = _cert(_name((NameOID.COMMON_NAME, "localhost")), server_key, ca_name, ca_key,
                   server=True)
    client_key = _key()
    client = _cert(_name((NameOID.ORGANIZATION_NAME, "acme"),
                         (NameOID.ORGANIZATIONAL_UNIT_NAME, "eng"),
                         (NameOID.COMMON_NAME, "alice")),
                   client_key, ca_name, ca_key, client=True)
    rogue_ca_key = _key()
    rogue_ca_name = _name((NameOID.COMMON_NAME, "Rogue CA"))
    rogue_key = _key()
    rogue = _cert(_name((NameOID.ORGANIZATION_NAME, "acme"), (NameOID.COMMON_NAME, "mallory")),
                  rogue_key, rogue_ca_name, rogue_ca_key, client=True)

    def write(name, data):
        p = d / name
        p.write_bytes(data)
        return p

    enc = serialization.BestAvailableEncryption(STORE_PASSWORD.encode())
    return Pki(
        dir=d,
        ca_pem=write("ca.pem", _pem_cert(ca)),
        server_keystore_pem=write("server-keystore.pem",
                                  _pem_key(server_key) + _pem_cert(server) + _pem_cert(ca)),
        server_keystore_enc_pem=write("server-keystore-enc.pem",
                                      _pem_key(server_key, KEY_PASSWORD) + _pem_cert(server)
                                      + _pem_cert(ca)),
        server_cert_pem=write("server.pem", _pem_cert(server) + _pem_cert(ca)),
        server_key_pem=write("server.key", _pem_key(server_key)),
        server_keystore_p12=write("server.p12", pkcs12.serialize_key_and_certificates(
            b"server", server_key, server, [ca], enc)),
        truststore_p12=write("truststore.p12", pkcs12.serialize_key_and_certificates(
            b"ca", None, None, [ca], enc)),
        client_cert_pem=write("client.pem", _pem_cert(client)),
        client_key_pem=write("client.key", _pem_key(client_key)),
        client_keystore_pem=write("client-keystore.pem", _pem_key(client_key) + _pem_cert(client)),
        rogue_cert_pem=write("rogue.pem", _pem_cert(rogue)),
        rogue_key_pem=write("rogue.key", _pem_key(rogue_key)),
    )
