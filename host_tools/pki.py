"""The fleet's certificate authority and each kiosk's client certificate (`cryptography`).

The tool keeps them in the fleet folder (see host_tools/fleet.py):

    ca.pem, ca.key              the fleet CA: EC P-256, self-signed, 10 years (key 0600)
    devices/<id>/kiosk.pem      the kiosk's client certificate: CN = device id,
                                EKU clientAuth, 3 years, signed by the CA
    devices/<id>/kiosk.key      its private key (0600; also written to the kiosk only)
    broker/<host>.pem, .key     a server certificate for the broker (`kioskctl fleet broker-cert`)

Mosquitto with `require_certificate true` and `use_identity_as_username true`
then logs a kiosk in as its device id, so the ACL binds it to its own topics.
Private keys are written with mode 0600 and never printed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host_tools.errors import Failure

CA_DAYS = 3650
DEVICE_DAYS = 3 * 365
SERVER_DAYS = 2 * 365


def write_secret(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class FleetCA:
    """The CA certificate and key; issues device and broker certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def load_or_create(cls, folder: Path, name: str = "QR kiosk fleet CA") -> FleetCA:
        cert_path, key_path = folder / "ca.pem", folder / "ca.key"
        if cert_path.exists() and key_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            except (ValueError, TypeError, OSError) as e:
                raise Failure(f"fleet CA in {folder} is unreadable ({e}); restore it from "
                              "the backup") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise Failure(f"fleet CA key in {folder} is not an EC key")
            return cls(cert, key)
        if cert_path.exists() or key_path.exists():
            raise Failure(f"fleet CA in {folder} is incomplete (ca.pem or ca.key missing)")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        write_secret(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _issue(self, common_name: str, days: int, usage: x509.ObjectIdentifier,
               san: list[x509.GeneralName] | None = None) -> tuple[x509.Certificate, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=days),
                                 self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(self.key, hashes.SHA256()), _key_pem(key)

    def issue_device(self, device: str) -> tuple[x509.Certificate, bytes]:
        """A kiosk's client certificate (CN = device id) and its private key (PEM)."""
        return self._issue(device, DEVICE_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_server(self, host: str) -> tuple[x509.Certificate, bytes]:
        """A broker's server certificate for `host` (name or IP) and its private key (PEM)."""
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host)
        return self._issue(host, SERVER_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, [name])


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
