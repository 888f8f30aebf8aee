"""psbridge.dn: the subject as Windows prints it (`windows_dn`) and as a user types it (`parse_subject`)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from psbridge import dn
from psbridge.errors import UserError

# --------------------------------------------------------------------------- the Windows DN form


def test_windows_dn_order_keys_and_quoting() -> None:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "admin@contoso.com"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Say "hi"'),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, " lead"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "#1"),
        x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4"), "x"),
        x509.NameAttribute(NameOID.COMMON_NAME, "a=b"),
    ]
    name = x509.Name(attrs)
    assert dn.windows_dn(name) == (
        'CN="a=b", OID.1.2.3.4=x, L="#1", OU=" lead", O="Say ""hi""", E=admin@contoso.com, S=Washington, C=US'
    )


@pytest.mark.parametrize("value,shown", [
    ("plain", "plain"), ("two  spaces", "two  spaces"), ("a+b", '"a+b"'), ("a;b", '"a;b"'), ("a<b>", '"a<b>"'),
    ("trail ", '"trail "'), ("", '""'),
    # Issue 20 item 5: a value read from a certificate is shown escaped, one inert line (these were
    # '"line\nbreak"' and "cr\rinside", raw, when windows_dn printed controls as they are).
    ("line\nbreak", "line\\nbreak"), ("cr\rinside", "cr\\rinside"), ("rlo\u202eevil", "rlo\\u202eevil"),
    ("esc\x1b[2J", "esc\\x1b[2J"),
])
def test_windows_value_quoting(value: str, shown: str) -> None:
    assert dn._windows_value(value) == shown


def test_multi_valued_rdn_is_joined_with_plus() -> None:
    rdn = x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "a"), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b"),
    ])
    shown = dn.windows_dn(x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]), rdn]))
    assert shown in {"CN=a + OU=b, C=US", "OU=b + CN=a, C=US"}
    assert dn.windows_dn(dn.parse_subject(shown)) == shown


@pytest.mark.parametrize("typed,canonical", [
    ("CN=crm.contoso.com, O=Contoso, C=US", "CN=crm.contoso.com, O=Contoso, C=US"),
    ("cn = crm.contoso.com ;o=Contoso;  c=us", "CN=crm.contoso.com, O=Contoso, C=us"),
    ('CN=crm, O="Contoso, Ltd", OU="Say ""hi"""', 'CN=crm, O="Contoso, Ltd", OU="Say ""hi"""'),
    ("CN=x, ST=Bavaria, E=a@b.de, OID.2.5.4.12=Boss", "CN=x, S=Bavaria, E=a@b.de, T=Boss"),
])
def test_parse_subject_round_trip(typed: str, canonical: str) -> None:
    name = dn.parse_subject(typed)
    assert dn.windows_dn(name) == canonical
    assert name.rdns[-1].get_attributes_for_oid(NameOID.COMMON_NAME)  # CN is the last RDN in DER


# --------------------------------------------------------------------------- windows_dn: what else it prints


def _name(*rdns: list[x509.NameAttribute]) -> x509.Name:
    """A name from RDNs given least specific first, as DER holds them."""
    return x509.Name([x509.RelativeDistinguishedName(attrs) for attrs in rdns])


def test_windows_dn_of_an_empty_name_is_empty() -> None:
    assert dn.windows_dn(x509.Name([])) == ""


def test_windows_dn_shows_a_non_string_value_as_hash_and_upper_hex() -> None:
    # X500UniqueIdentifier is a BIT STRING: cryptography hands its value over as bytes.
    name = _name([x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x01\xab", _type=x509.name._ASN1Type.BitString)],
                 [x509.NameAttribute(NameOID.COMMON_NAME, "crm")])
    assert dn.windows_dn(name) == "CN=crm, OID.2.5.4.45=#01AB"


def test_windows_dn_names_the_rarer_attributes_and_falls_back_to_the_oid() -> None:
    name = _name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "local")],
                 [x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "contoso")],
                 [x509.NameAttribute(NameOID.SERIAL_NUMBER, "42")],
                 [x509.NameAttribute(NameOID.POSTAL_CODE, "98052")],
                 [x509.NameAttribute(x509.ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.3"), "US")],
                 [x509.NameAttribute(NameOID.COMMON_NAME, "crm")])
    assert dn.windows_dn(name) == ("CN=crm, OID.1.3.6.1.4.1.311.60.2.1.3=US, PostalCode=98052, SERIALNUMBER=42, "
                                   "DC=contoso, DC=local")


@pytest.mark.parametrize("value", ["\tlead", "lead\t", "\vx", "x\f", "x\r"])
def test_leading_or_trailing_white_space_of_any_kind_is_quoted(value: str) -> None:
    # Issue 20 item 5: control white space is escaped first (shown as `\t`, `\x0b`, ...), so it is
    # neither raw nor leading/trailing white space any more; a leading space is still quoted.
    assert dn._windows_value(value) == value.encode("unicode_escape").decode("ascii")
    assert dn._windows_value(" " + value) == '" ' + dn._windows_value(value) + '"'


# --------------------------------------------------------------------------- parse_subject: typed forms

@pytest.mark.parametrize("typed,canonical", [
    ("CommonName=crm, Organization=Contoso, Country=DE", "CN=crm, O=Contoso, C=DE"),
    ("CN=crm; OrgUnit=IT; Locality=Bonn; State=NRW", "CN=crm, OU=IT, L=Bonn, S=NRW"),
    ("CN=crm, EMAIL=a@b.de, DC=contoso, DomainComponent=local", "CN=crm, E=a@b.de, DC=contoso, DC=local"),
    ("CN=crm, 2.5.4.10=Contoso", "CN=crm, O=Contoso"),
    ("CN=crm, OID.1.2.3.4=x", "CN=crm, OID.1.2.3.4=x"),
    ("  CN = crm  +  OU = IT  ,  O = Contoso  ", "CN=crm + OU=IT, O=Contoso"),
    ('CN=" padded ", O=""""', 'CN=" padded ", O=""""'),
    ('CN="a=b" , O=x', 'CN="a=b", O=x'),
    ("CN=crm,\tO=Contoso\t", "CN=crm, O=Contoso"),  # tab around values; inside one it is refused (issue 20)
])
def test_parse_subject_accepts_aliases_oids_plus_and_quotes(typed: str, canonical: str) -> None:
    assert dn.windows_dn(dn.parse_subject(typed)) == canonical


def test_parse_subject_encodes_the_most_specific_rdn_last() -> None:
    name = dn.parse_subject("CN=crm, OU=IT + L=Bonn, C=DE")
    assert [len(rdn) for rdn in name.rdns] == [1, 2, 1]
    assert name.rdns[0].get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert {a.oid for a in name.rdns[1]} == {NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME}
    assert name.rdns[2].get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "crm"


# --------------------------------------------------------------------------- parse_subject: refusals

@pytest.mark.parametrize("typed,fragment", [
    ("", "empty"),
    ("   \t ", "empty"),
    ("CN=crm\n, O=x", "control character"),
    ("CN=crm\x1b[31m", "control character"),
    ("CN=crm, O=Con\ttoso", "a tab inside the value of O"),
    ("CN=crm\u202egnp.exe", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("crm.contoso.com", "expected KEY=value at 'crm.contoso.com'"),
    ("CN=crm, O", "expected KEY=value at 'O'"),
    ("=crm", "a '=' without a key"),
    ('CN="crm', "unterminated quoted value for CN"),
    ('CN="crm" x, O=y', "unexpected text after the quoted value of CN"),
    ('CN=c"rm', "a '\"' inside the value of CN"),
    ("CN=crm\\, Ltd", "backslash in the value of CN"),
    ("CN=#04036372", "hex values (#...) are not supported for CN"),
    ("CN=crm,", "ends with ','"),
    ("CN=crm; ", "ends with ';'"),
    ("CN=crm +", "ends with '+'"),
    ("O=Contoso, C=US", "needs a CN"),
    ("CN=crm, FOO=bar", "unknown key 'FOO'"),
    ("CN=, O=x", "empty value for CN"),
    ('CN=crm, O=""', "empty value for O"),
    ("CN=" + "x" * 65, "longer than 64 characters"),
    ("CN=crm, OU=" + "x" * 65, "longer than 64 characters"),
    ("CN=crm, C=USA", "bad value for C: a country is two letters"),
    ("CN=crm, C=1A", "bad value for C"),
    ("CN=crm, E=jürgen@contoso.de", "bad value for E: must be ASCII"),
    ("CN=crm, DC=müller", "bad value for DC: must be ASCII"),
    ("CN=crm, OID.1=x", "bad value for OID.1"),
])
def test_parse_subject_refuses_with_one_line_naming_the_option(typed: str, fragment: str) -> None:
    with pytest.raises(UserError) as caught:
        dn.parse_subject(typed)
    [line] = caught.value.problems
    assert line.startswith("--subject: ")
    assert fragment in line
    assert "\n" not in line


def test_a_64_character_common_name_is_accepted() -> None:
    name = dn.parse_subject("CN=" + "x" * 64)
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "x" * 64


# --------------------------------------------------------------------------- round trips

#: Value characters for the round trip: any but controls (refused), backslash (refused outside
#: quotes, and printed unquoted) and white space other than " " and TAB (see the xfails below).
_VALUE_CHARS = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Zs"), blacklist_characters="\\") | \
    st.sampled_from(' ,+=";<>#')  # issue 20: format characters and a tab inside a value are refused
#: cryptography caps CN, O, OU, L and S at 64 UTF-8 bytes (RFC 5280's bound, in characters, is parse_subject's).
_VALUES = st.text(_VALUE_CHARS, min_size=1, max_size=64).filter(lambda v: len(v.encode("utf-8")) <= 64)
_KEYS = st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                         NameOID.LOCALITY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.STREET_ADDRESS,
                         NameOID.TITLE, x509.ObjectIdentifier("1.2.3.4")])
_RDNS = st.lists(st.lists(st.tuples(_KEYS, _VALUES), min_size=1, max_size=3, unique_by=lambda kv: kv[0]),
                 min_size=0, max_size=4)


@settings(max_examples=300, deadline=None, database=None)
@given(rdns=_RDNS, cn=_VALUES)
def test_a_printed_name_reads_back_as_the_same_name(rdns: list[list[tuple[x509.ObjectIdentifier, str]]],
                                                     cn: str) -> None:
    """parse_subject(windows_dn(name)) == name: what psbridge shows can be typed back."""
    name = _name(*[[x509.NameAttribute(oid, value) for oid, value in rdn] for rdn in rdns],
                 [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    shown = dn.windows_dn(name)
    assert dn.parse_subject(shown) == name
    assert dn.windows_dn(dn.parse_subject(shown)) == shown


@pytest.mark.xfail(strict=True, reason="windows_dn prints a value ending in U+00A0 unquoted; parse_subject strips it "
                                       "(str.strip), so the name read back differs. Which form Windows uses is unknown")
def test_a_value_ending_in_a_no_break_space_reads_back_unchanged() -> None:
    name = _name([x509.NameAttribute(NameOID.COMMON_NAME, "crm\u00a0")])
    assert dn.parse_subject(dn.windows_dn(name)) == name


@pytest.mark.xfail(strict=True, reason="windows_dn prints a backslash unquoted (as Windows does), parse_subject "
                                       "refuses an unquoted backslash: such a subject cannot be typed back as shown")
def test_a_value_with_a_backslash_reads_back_unchanged() -> None:
    name = _name([x509.NameAttribute(NameOID.COMMON_NAME, "CONTOSO\\crm")])
    assert dn.parse_subject(dn.windows_dn(name)) == name
