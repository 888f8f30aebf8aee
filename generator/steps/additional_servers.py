"""Step additional-servers: the certificate on each additional CRM server (farm packages only).

Microsoft: CertificateReconfiguration.ps1 runs on every server with the Web Application Server
role, and -updateCrm only once (step certificate). `run` sends this step to each additional
server after the main sequence; in a renewal, before CRM is switched to the new certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..readings import CertificateReading, ServerReading, WebReading
from ..verdicts import DUPLICATE_SUBJECT_CAUSE, DUPLICATE_SUBJECT_FIX, StepVerdict, expected_thumbprint
from ..payload import MSAL_FILES as PAYLOAD_FILES
from .base import Backout, ServerVerdictContext, Step, StepUnit, every_profile

STEP = Step(
    0, "additional-servers", "Install the certificate on the additional servers", "change",
    inputs={"PfxPassword": "pfx_password"},
    changes="Additional CRM servers (each one): imports the PFX into LocalMachine\\My and grants the service "
    "account read access to its private key, without -updateCrm (step 02 updated the configuration database).",
    runs_on="additional", one_template=True, payload=PAYLOAD_FILES,
)

BACKOUT = Backout(
    "additional-servers", ("certificate",),
    manual="On each additional server, remove the certificate from LocalMachine\\My if the previous one "
    "should be used again, and run CertificateReconfiguration.ps1 (without -updateCrm) with the previous PFX.",
)


def on_server(ctx: ServerVerdictContext) -> StepVerdict:
    """The step on one additional server: the certificate (and, for the app trust, the MSAL files in CRMWeb\\bin)."""
    verdict = _certificate_on_server(ctx)
    if (ctx.plan.get("parameters") or {}).get("trust") != "app":
        return verdict
    return _with_web(verdict, ctx)


#: Which verdict wins when the certificate and the MSAL files are judged together (first in the list).
_PRECEDENCE = ("blocked", "cannot tell", "will change", "in place")


def _with_web(verdict: StepVerdict, ctx: ServerVerdictContext) -> StepVerdict:
    """The certificate's verdict joined with the web probe's on the same server (msal-assembly's rules)."""
    from .msal_assembly import web_state  # a sibling unit: imported when an app package is judged

    raw = (ctx.answers or {}).get("web")
    web = web_state(WebReading.of(raw) if raw is not None else None, ctx.plan)
    words = [verdict.verdict, web.verdict]
    joined = next(w for w in _PRECEDENCE if w in words) if all(w in _PRECEDENCE for w in words) else verdict.verdict
    detail = f"{verdict.detail}; {ctx.host}: MSAL: {web.detail}"
    return replace(verdict, verdict=joined, detail=detail,
                   before="; ".join(x for x in (verdict.before, web.before) if x) or None,
                   after="; ".join(x for x in (verdict.after, web.after) if x) or None)


def _certificate_on_server(ctx: ServerVerdictContext) -> StepVerdict:
    """The certificate on one additional server: in its store, with a key the service account reads."""
    host = ctx.host
    step = (ctx.index, STEP.id)
    raw_server = (ctx.answers or {}).get("server")
    raw_cert = (ctx.answers or {}).get("certificate")
    if raw_server is None or raw_cert is None:
        return StepVerdict(*step, "cannot tell", f"{host}: the server or certificate probe did not answer", host=host)
    server, cert = ServerReading.of(raw_server), CertificateReading.of(raw_cert)
    missing = [what for found, what in ((server.tools_script, "CertificateReconfiguration.ps1"),
                                        (server.pfx_file, "the PFX file"), (server.cer_file, "the .cer file"))
               if not found]
    store = cert.store
    if len(store) > 1:
        return StepVerdict(*step, "blocked", f"{host}: {len(store)} certificates with subject "
                           f"{cert.cer_subject} in LocalMachine\\My", host=host,
                           cause=DUPLICATE_SUBJECT_CAUSE, fix=DUPLICATE_SUBJECT_FIX)
    expected = expected_thumbprint(ctx.plan, cert)
    in_store = bool(expected) and bool(store) and store[0].thumbprint == expected
    readable = store[0].key_readable if store else None
    if in_store and readable is not False:
        note = "" if readable else " (cannot tell whether the service account can read the private key)"
        return StepVerdict(*step, "in place", f"{host}: certificate {expected} in LocalMachine\\My{note}", host=host)
    if missing:
        return StepVerdict(*step, "blocked", f"{host}: {', '.join(missing)} not found", host=host)
    from .prerequisites import policy_refusal  # a sibling unit: step 01's rule, on this server's reading

    refused = policy_refusal(server)
    if refused is not None:
        return StepVerdict(*step, "blocked", f"{host}: step {ctx.index:02d} runs CertificateReconfiguration.ps1 as a "
                           f"file, and PowerShell would refuse it: {refused}", host=host)
    reason = "the service account cannot read the private key" if in_store else "not in LocalMachine\\My"
    return StepVerdict(*step, "will change", f"{host}: {reason}", host=host, after=expected)


def holds_for_switch(answers: Mapping[str, dict[str, Any] | None] | None, expected: str | None,
                     replaces: str) -> str:
    """Why an additional server is not ready for a renewal's switch to `expected` ("" when it is).

    Stricter than `check`'s verdict, and the same rule as the step that installs it: the new
    certificate itself (not the replaced one, not whatever the server's .cer is) in
    LocalMachine\\My, with its private key, which the service account is shown to read.
    """
    raw = (answers or {}).get("certificate")
    if answers is None or raw is None:
        return "the server or certificate probe did not answer"
    if not expected:
        return "the new certificate's thumbprint is unknown (no approved certificate, and the main server's .cer " \
               "was not read)"
    if expected.upper() == replaces.upper():
        return f"{expected} is the certificate this renewal replaces"
    cert = CertificateReading.of(raw)
    on_server = cert.cer_thumbprint
    if on_server != expected.upper():
        return f"its .cer is {on_server or 'missing'}, not the new certificate {expected}"
    entry = cert.entry(on_server)
    if entry is None:
        return f"the new certificate {expected} is not in LocalMachine\\My"
    if entry.has_private_key is not True:
        return f"the new certificate {expected} is in LocalMachine\\My without its private key (or it cannot be told)"
    if entry.key_readable is not True:
        return "the service account cannot be shown to read the new certificate's private key"
    return ""


UNIT = StepUnit(
    "additional-servers", every_profile(STEP), included="farm", renewal_rank=60,
    renewal_changes="Additional CRM servers (each one): imports the PFX into LocalMachine\\My and grants the "
    "service account read access to its private key, without -updateCrm, before CRM is switched to the "
    "certificate (the switch step updates the configuration database once).",
    server_verdict=on_server, backout=BACKOUT,
)
