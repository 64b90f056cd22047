"""A throwaway PKI for tests: EC keys (fast to generate), a CA, a server and a client certificate."""

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    certificate: str
    key: str


def _key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca=False, usage=None, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    def __init__(self):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("airlock-test-ca", ca_key, None, None, ca=True)
        self.ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_key_pem = _key_pem(ca_key)
        self.server = self._issue(
            "kube-apiserver",
            ca_cert,
            ca_key,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        self.client = self._issue("airlock-gateway", ca_cert, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        self.other_client = self._issue("someone-else", ca_cert, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    @staticmethod
    def _issue(subject, ca_cert, ca_key, **kwargs) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, ca_cert.subject, ca_key, **kwargs)
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))
