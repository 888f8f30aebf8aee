"""Known failures from Microsoft's "Troubleshoot server-based authentication" that step 01 and check name.

https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/troubleshooting-server-based-authentication
"Private key not found" from CertificateReconfiguration.ps1: two certificates with the same subject
in the local certificate store; fix: remove the ones not needed (Certificate Manager MMC snap-in).
"""

from __future__ import annotations

import copy
import json

import pytest

from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import OTHER, state
from support.pwsh_grammar import syntax_errors

ARTICLE = "troubleshooting-server-based-authentication"


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_refuses_two_certificates_with_the_cer_subject(profile: str) -> None:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    text = render_package(parse_parameters(data)).files["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    assert "Where-Object { $_.Subject -eq $CerSubject }" in text
    assert "Private key not found" in text and "$Problems.Add(" in text
    assert ARTICLE in text


def test_check_names_the_cause_and_the_documented_fix() -> None:
    answers = state("fully configured")
    answers["certificate"]["store"].append(dict(answers["certificate"]["store"][0], thumbprint=OTHER))
    plan = json.loads(render_package(parse_parameters(EXAMPLE)).files["plan.json"])
    report = evaluate(plan, answers)
    cert = next(v for v in report.verdicts if v.id == "certificate")
    assert cert.verdict == "blocked"
    assert "Private key not found" in cert.cause and "same subject" in cert.cause
    assert "Certificate Manager" in cert.fix and ARTICLE in cert.fix
    assert report.as_json()["verdicts"][1]["cause"] == cert.cause


# --------------------------------------------------------------------------- the other documented failures
# Sources (tests/support/probe_states.py, KNOWN_FAILURES): troubleshooting-server-based-authentication,
# on-prem-server-based-sharepoint-online (the sequence), connect-dynamics-365-on-premises-exchange-online
# (read access to the private keys; "update or install the certificate and try again") and
# new-msolserviceprincipalcredential (the credential's dates), under learn.microsoft.com.

import datetime as _dt
import functools
from typing import Any

from psbridge.check import EXCHANGE_ONLINE, MSOL_CREDENTIAL, SEQUENCE, StepVerdict
from support.probe_states import CRM_APP, SPN, THUMB

NOW = _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)  # inside the test certificate's 2026..2036 validity
OURS = "psbridge's fix, not Microsoft's"


@functools.lru_cache(maxsize=None)
def _plan_json(profile: str) -> str:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    return render_package(parse_parameters(data)).files["plan.json"].decode()


def _plan(profile: str = "msonline", approved: str | None = THUMB) -> dict[str, Any]:
    plan = json.loads(_plan_json(profile))
    if approved:
        plan["certificate"] = {"thumbprint": approved}
    return plan


def _verdict(name: str, step: str, profile: str = "msonline") -> StepVerdict:
    report = evaluate(_plan(profile), state(name), now=NOW)
    assert report.as_json()["verdicts"] == [dataclass_json(v) for v in report.verdicts]
    return next(v for v in report.verdicts if v.id == step)


def dataclass_json(v: StepVerdict) -> dict[str, Any]:
    return {"index": v.index, "id": v.id, "verdict": v.verdict, "detail": v.detail, "before": v.before,
            "after": v.after, "cause": v.cause, "fix": v.fix, "host": v.host}


def test_service_account_cannot_read_the_key_is_a_cause_with_the_fix() -> None:
    cert = _verdict("key not readable", "certificate")
    assert cert.verdict == "will change"
    assert "CRMWebApplicationService cannot read the private key" in cert.cause
    assert "no read access for the service account" in cert.cause
    assert "step 02 runs CertificateReconfiguration.ps1 -serviceAccount" in cert.fix and OURS in cert.fix
    assert "read access to the private keys" in cert.fix and cert.fix.endswith(EXCHANGE_ONLINE)


def test_a_deny_entry_on_the_key_names_its_removal_as_the_fix() -> None:
    cert = _verdict("key access denied", "certificate")
    assert cert.verdict == "will change"
    assert "cannot read the private key" in cert.cause and "via denied" in cert.cause
    assert "remove the Deny entry for contoso\\CRMWebApplicationService" in cert.fix
    assert "step 02's check of the access fails while a Deny entry stands" in cert.fix
    assert OURS in cert.fix and cert.fix.endswith(EXCHANGE_ONLINE)


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_an_expired_certificate_in_crm_is_not_in_place(profile: str) -> None:
    report = evaluate(_plan(profile), state("certificate expired"), now=NOW)
    by_id = {v.id: v for v in report.verdicts}
    for step in ("certificate", "spn"):
        v = by_id[step]
        assert v.verdict == "blocked", v
        assert f"certificate {THUMB} expired on 2021-01-01T00:00:00Z" in v.cause
        assert "Failed Authentication" in v.cause and "missing or invalid" in v.cause
        assert "update or install the certificate and try again" in v.fix and v.fix.endswith(EXCHANGE_ONLINE)
        assert "new package from a valid certificate" in v.fix and OURS in v.fix
    assert "CRM's S2STokenIssuer certificate" in by_id["certificate"].detail
    assert report.exit_code == 1


def test_crms_own_expired_certificate_is_a_cause_of_the_change() -> None:
    cert = _verdict("crm certificate expired", "certificate")
    assert cert.verdict == "will change" and cert.before == OTHER and cert.after == THUMB
    assert f"CRM's S2STokenIssuer certificate {OTHER} expired on 2021-01-01T00:00:00Z" in cert.cause
    assert f"step 02 puts certificate {THUMB} into CRM" in cert.fix and cert.fix.endswith(EXCHANGE_ONLINE)


@pytest.mark.parametrize("profile,does", [
    ("graph", "replaces it with a credential valid from the certificate's NotBefore through its NotAfter"),
    ("msonline", "adds a credential valid from the certificate's NotBefore through its NotAfter; the expired one stays"),
])
def test_an_expired_key_credential_will_change_with_the_cause_expired(profile: str, does: str) -> None:
    spn = _verdict("credential expired", "spn", profile)
    assert spn.verdict == "will change"
    assert spn.cause.startswith("expired: ") and "ended on 2020-01-01T00:00:00Z" in spn.cause
    assert does in spn.fix and OURS in spn.fix
    assert "otherwise an OAuth token will not be issued" in spn.fix and spn.fix.endswith(MSOL_CREDENTIAL)
    # graph drops the expired one, msonline keeps it beside the new one
    assert spn.after == ("1 credential(s), 2 SPN(s)" if profile == "graph" else "2 credential(s), 2 SPN(s)")


def test_crm_certificate_differing_from_the_entra_key_credential_is_a_cause() -> None:
    spn = _verdict("crm differs from entra", "spn")
    assert spn.verdict == "will change"
    assert f"CRM's S2STokenIssuer certificate {THUMB} differs from the key credentials" in spn.cause
    assert f"({OTHER})" in spn.cause and "Failed Authentication" in spn.cause
    assert f"step 06 adds the key credential of certificate {THUMB}" in spn.fix and OURS in spn.fix
    assert spn.fix.endswith(EXCHANGE_ONLINE)
    # the other way round: CRM signs with another certificate than Entra ID's; step 02 changes CRM
    cert = _verdict("crm holds another certificate", "certificate")
    assert cert.verdict == "will change"
    assert f"certificate ({OTHER}) differs from the key credentials" in cert.cause and f"({THUMB})" in cert.cause
    assert f"step 02 puts certificate {THUMB} into CRM" in cert.fix and "step 06" not in cert.fix


def test_an_unknown_key_credential_is_no_grounds_for_the_differing_cause() -> None:
    answers = state("crm differs from entra")
    answers["entra"]["key_credentials"][0]["thumbprint"] = None  # the probe could not read the key
    spn = next(v for v in evaluate(_plan(), answers, now=NOW).verdicts if v.id == "spn")
    assert spn.verdict == "will change" and spn.cause is None


def test_missing_spn_for_the_root_domain_is_a_cause() -> None:
    spn = _verdict("spn missing", "spn")
    assert spn.verdict == "will change" and f"add SPN {SPN}" in spn.detail
    assert f"the SPN {SPN} for the root domain is missing" in spn.cause
    assert f"{CRM_APP}/*.fabrikam.com" in spn.cause
    assert f"step 06 adds {SPN} and keeps the other names" in spn.fix and OURS in spn.fix
    assert spn.fix.endswith(SEQUENCE)


def test_several_causes_pair_line_by_line_with_their_fixes() -> None:
    answers = state("credential expired")
    answers["entra"]["service_principal_names"] = [CRM_APP]
    spn = next(v for v in evaluate(_plan(), answers, now=NOW).verdicts if v.id == "spn")
    causes, fixes = spn.cause.split("\n"), spn.fix.split("\n")
    assert len(causes) == len(fixes) == 2
    assert causes[0].startswith("expired: ") and "SPN" in causes[1] and fixes[1].endswith(SEQUENCE)


def test_configured_states_name_no_cause() -> None:
    for name in ("fully configured", "fresh server"):
        for v in evaluate(_plan(), state(name), now=NOW).verdicts:
            if v.id != "spn" or name == "fully configured":
                assert v.cause is None and v.fix is None, (name, v)
