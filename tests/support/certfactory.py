"""Test certificates made with `cryptography`: valid, expired, weak, SHA-1-signed, keyless, ...

Keys are cached per size (RSA key generation is the slow part). Nothing here reads
files from disk; every certificate a test uses is made by the test.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

NOW = datetime.now(timezone.utc).replace(microsecond=0)

#: DER of the OIDs sha256WithRSAEncryption / sha1WithRSAEncryption (same length).
_SHA256_RSA_OID = bytes.fromhex("06092a864886f70d01010b")
_SHA1_RSA_OID = bytes.fromhex("06092a864886f70d010105")


@functools.lru_cache(maxsize=None)
def key(size: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    """RSA key number `index` of `size` bits (cached: the same call gives the same key)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def name(**attrs: str) -> x509.Name:
    """x509.Name from keyword attributes in Windows order: name(CN="a", O="b") -> DER O, CN."""
    oids = {
        "CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "L": NameOID.LOCALITY_NAME, "S": NameOID.STATE_OR_PROVINCE_NAME, "C": NameOID.COUNTRY_NAME,
        "E": NameOID.EMAIL_ADDRESS,
    }
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in reversed(list(attrs.items()))])


def ca() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A test CA, so that leaf certificates are not self-signed."""
    ca_key = key(2048, 99)
    subject = name(CN="psbridge test CA", O="Tests")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=3650))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, ca_key


def cert(
    subject: x509.Name | None = None,
    *,
    subject_key: rsa.RSAPrivateKey | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    self_signed: bool = False,
    sha1: bool = False,
    serial: int = 0x1234,
) -> x509.Certificate:
    """A certificate for `subject_key` (default: the cached 2048-bit key 0), valid now for a year."""
    subject_key = subject_key or key()
    subject = subject if subject is not None else name(CN="crm.contoso.com", O="Contoso", C="US")
    if self_signed:
        issuer_name, signing_key = subject, subject_key
    else:
        ca_cert, signing_key = ca()
        issuer_name = ca_cert.subject
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .sign(signing_key, hashes.SHA256())
    )
    if sha1:
        built = _resign_sha1(built, signing_key)
    return built


def _resign_sha1(certificate: x509.Certificate, signing_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """`cryptography` refuses to sign with SHA-1; swap the algorithm OIDs and re-sign the TBS by hand."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert der.count(_SHA256_RSA_OID) == 2
    der = der.replace(_SHA256_RSA_OID, _SHA1_RSA_OID)
    tbs = x509.load_der_x509_certificate(der).tbs_certificate_bytes
    signature = signing_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    old_signature = certificate.signature
    assert len(signature) == len(old_signature) and der.endswith(old_signature)
    return x509.load_der_x509_certificate(der[: -len(signature)] + signature)


def pfx(
    certificate: x509.Certificate | None,
    private_key: rsa.RSAPrivateKey | None,
    password: str,
    *,
    extra: list[x509.Certificate] | None = None,
    as_ca_only: bool = False,
) -> bytes:
    """A PKCS#12 file. `as_ca_only`: the certificate goes in without being tied to the key."""
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    cas = list(extra or [])
    main = certificate
    if as_ca_only and certificate is not None:
        cas.insert(0, certificate)
        main = None
    return pkcs12.serialize_key_and_certificates(b"test", private_key, main, cas or None, encryption)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
