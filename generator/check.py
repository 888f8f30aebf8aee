"""What `psbridge check` concludes from the probes: per step, in place / will change / blocked.

The probes (templates/probes/, rendered into the package's probes/ folder) print one line
of JSON each; this module turns their answers and the package's plan into verdicts and an
exit code. It does no I/O, so every verdict can be tested from plain JSON.

Verdicts: `in place` (the step would change nothing), `will change` (with before -> after),
`blocked` (the step would fail: fix the server first), `cannot tell` (a probe failed or
did not run), `session` (sets up the PowerShell session only), `ok` (a read-only check).
Exit codes: 0 every state-changing step is in place; 5 the package would change something;
1 a probe failed or was skipped (any step's state cannot be told), or a step is blocked;
6 everything is in place, but CRM's S2S certificate or its key credential in Entra ID ends
within the warning window (`warn_days`), or another key credential of the Dynamics CRM
service principal has expired. Precedence: 1, then 5, then 6, then 0.

Expiry (`Expiry`): what ends when, read at `now`: the S2S certificate CRM uses (crm probe:
thumbprint and NotAfter), the key credential of it on the Dynamics CRM service principal, and
the principal's other key credentials (entra probe).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import clock
from .catalogue import PROBES
from .errors import ExitCode
from .expiry import EXPIRY_WARNING_DAYS
from .readings import CertificateReading, CrmReading, EntraReading, KeyCredential, Readings, as_list, parse_time
from .steps import ServerVerdictContext, unit
from .steps.additional_servers import holds_for_switch
from .steps.certificate import SwitchWait
from .verdicts import (
    EXCHANGE_ONLINE,
    MSOL_CREDENTIAL,
    SEQUENCE,
    TROUBLESHOOTING,
    StepVerdict,
    Verdict,
    certificate_not_after,
    expected_thumbprint,
    number,
    when,
)

#: Names other modules and the tests import from here; each step's verdict lives in its unit.
__all__ = ["EXCHANGE_ONLINE", "MSOL_CREDENTIAL", "SEQUENCE", "TROUBLESHOOTING", "CheckReport", "Ending", "Expiry",
           "ProbeError", "StepVerdict", "Verdict", "as_list", "evaluate", "evidence", "holds_for_switch",
           "on_additional_server", "parse_probe_output", "parse_time"]

_when = when


@dataclass(frozen=True)
class Ending:
    """One thing that ends: CRM's S2S certificate (NotAfter) or a key credential (its end date)."""

    thumbprint: str | None
    ends: _dt.datetime | None
    #: A key credential (True) or a certificate (False): a credential's facts carry its key id, type, usage.
    credential: bool = False
    key_id: str | None = None
    type: str | None = None
    usage: str | None = None

    def days_left(self, now: _dt.datetime) -> int | None:
        """Whole days until it ends (negative once it has ended); None when the date is unknown."""
        return None if self.ends is None else (self.ends - now).days

    def within(self, now: _dt.datetime, days: int) -> bool:
        """Whether it ends within `days` days of `now`, or has ended."""
        return self.ends is not None and self.ends - now <= _dt.timedelta(days=days)

    def describe(self) -> str:
        """The thumbprint, and a credential's key id when known."""
        return (self.thumbprint or "(no thumbprint)") + (f" (key id {self.key_id})" if self.key_id else "")

    def facts(self, now: _dt.datetime, days: int) -> dict[str, Any]:
        ended = self.ends is not None and self.ends <= now
        data: dict[str, Any] = {"thumbprint": self.thumbprint}
        if self.credential:
            data.update(key_id=self.key_id, type=self.type, usage=self.usage)
        return {**data, "ends": _when(self.ends) if self.ends else None, "days_left": self.days_left(now),
                "expired": ended, "within_warn_days": self.within(now, days) and not ended}


@dataclass(frozen=True)
class Expiry:
    """What ends when, read at `now`: the S2S certificate(s) CRM uses and the Dynamics CRM
    service principal's key credentials (the one of CRM's certificate, and the others).

    `entra_read` is False when the entra probe did not answer (then no credential is known).
    """

    now: _dt.datetime
    certificate_type: str | None = None
    certificates: tuple[Ending, ...] = ()
    credential: Ending | None = None
    other_credentials: tuple[Ending, ...] = ()
    entra_read: bool = False

    def warnings(self, days: int) -> list[str]:
        """One line per thing to act on: what and when (each is a reason for exit 6)."""
        lines = []
        for cert in self.certificates:
            if cert.within(self.now, days):
                lines.append(f"CRM's {self.certificate_type} certificate {cert.thumbprint} {self._ends(cert, 'expires')}")
        if self.credential is not None and self.credential.within(self.now, days):
            lines.append(f"the key credential of certificate {self.credential.thumbprint} on the Dynamics CRM service "
                         f"principal in Entra ID {self._ends(self.credential, 'ends')}")
        for key in self.other_credentials:
            if key.ends is not None and key.ends <= self.now:
                lines.append(f"another key credential of the Dynamics CRM service principal in Entra ID, "
                             f"{key.describe()}, {self._ends(key, 'ends')}: remove it, or renew it if it is used")
        return lines

    def _ends(self, item: Ending, verb: str) -> str:
        assert item.ends is not None
        days = item.days_left(self.now)
        if item.ends <= self.now:
            return f"{'expired' if verb == 'expires' else 'ended'} on {_when(item.ends)}"
        return f"{verb} on {_when(item.ends)} ({days} day{'' if days == 1 else 's'} left)"

    def as_json(self, days: int) -> dict[str, Any]:
        return {
            "checked_at": _when(self.now), "warn_days": days, "certificate_type": self.certificate_type,
            "certificates": [c.facts(self.now, days) for c in self.certificates],
            "credential": self.credential.facts(self.now, days) if self.credential else None,
            "other_credentials": [k.facts(self.now, days) for k in self.other_credentials],
            "entra_read": self.entra_read, "warnings": self.warnings(days),
        }


@dataclass(frozen=True)
class CheckReport:
    verdicts: list[StepVerdict]
    notes: list[str] = field(default_factory=list)
    #: What the probes read, for the saved evidence (`check --out`): main server and additional ones.
    readings: dict[str, Any] = field(default_factory=dict)
    #: What ends when (None: not read); with `warn_days`, it decides exit 6.
    expiry: Expiry | None = None
    #: The warning window in days (`check --warn-days`): `replace(report, warn_days=n)`.
    warn_days: int = EXPIRY_WARNING_DAYS

    @property
    def expiry_warnings(self) -> list[str]:
        return self.expiry.warnings(self.warn_days) if self.expiry is not None else []

    @property
    def exit_code(self) -> ExitCode:
        # Anything unread (a probe failed or was skipped) is a failed check, never "all well":
        # a monitoring job must not read exit 0 from a server it could not see.
        if any(v.verdict in ("blocked", "cannot tell") for v in self.verdicts):
            return ExitCode.FAILED
        if any(v.verdict == "will change" for v in self.verdicts):
            return ExitCode.WOULD_CHANGE
        if self.expiry_warnings:
            return ExitCode.EXPIRING
        return ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        return {"verdicts": [_verdict_json(v) for v in self.verdicts], "notes": self.notes,
                "expiry": self.expiry.as_json(self.warn_days) if self.expiry is not None else None,
                "exit_code": int(self.exit_code)}


def _verdict_json(verdict: StepVerdict) -> dict[str, Any]:
    """A verdict as JSON; `not_before` only when set, so that every other verdict reads as before."""
    data = asdict(verdict)
    if data.get("not_before") is None:
        data.pop("not_before", None)
    return data


class ProbeError(ValueError):
    """A probe's output is not the JSON object it must print."""


def parse_probe_output(name: str, lines: Sequence[str]) -> dict[str, Any]:
    """The probe's JSON: the last non-empty output line, an object whose `probe` names it."""
    text = next((line for line in reversed(lines) if line.strip()), "")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ProbeError(f"probe {name}: output is not JSON") from None
    if not isinstance(data, dict) or data.get("probe") != name:
        raise ProbeError(f"probe {name}: output is not the {name} probe's object")
    return data


def _expiry(plan: Mapping[str, Any], cert: CertificateReading | None, crm: CrmReading | None,
            entra: EntraReading | None, now: _dt.datetime) -> Expiry:
    """What ends when: CRM's S2S certificate(s), the key credential of it in Entra ID, the other credentials.

    CRM's NotAfter comes from its record (crm probe); a package made before the probe printed it
    falls back to the package's certificate (same thumbprint) or the store. The key credential
    of CRM's certificate is the one with that thumbprint (or the one the entra probe matched with
    the package's .cer, when CRM holds that certificate); of several, the one that ends last.
    """
    expected = expected_thumbprint(plan, cert)
    store = {e.thumbprint: e.not_after for e in (cert.store if cert else ())}
    certificates = []
    for found in (crm.certificates if crm else ()):
        ends = found.not_after
        if ends is None:
            ends = certificate_not_after(plan, cert) if found.thumbprint == expected else store.get(found.thumbprint)
        certificates.append(Ending(found.thumbprint, ends))
    read = entra is not None and entra.service_principal_found
    keys = entra.key_credentials if entra is not None and read else ()
    used = {c.thumbprint for c in certificates}

    def ending(key: KeyCredential) -> Ending:
        thumbprint = key.thumbprint or (expected if key.matches_certificate is True else None)
        return Ending(thumbprint, key.end, credential=True, key_id=key.key_id, type=key.type, usage=key.usage)

    def of_crm(key: KeyCredential) -> bool:
        if key.matches_certificate is True and expected in used:
            return True
        return key.thumbprint in used

    never = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    matching = sorted((ending(k) for k in keys if of_crm(k)), key=lambda e: e.ends or never, reverse=True)
    others = [ending(k) for k in keys if not of_crm(k)] + matching[1:]
    return Expiry(now, crm.certificate_type if crm else None, tuple(certificates),
                  matching[0] if matching else None, tuple(others), read)


def evaluate(plan: Mapping[str, Any], answers: Mapping[str, dict[str, Any] | None],
             per_server: Mapping[str, Mapping[str, dict[str, Any] | None] | None] | None = None, *,
             now: _dt.datetime | None = None, warn_days: int = EXPIRY_WARNING_DAYS,
             switch_wait: SwitchWait | None = None) -> CheckReport:
    """Verdicts for every step of the plan from the probes' answers (None: no answer), at `now` (UTC).

    Each step's verdict is its unit's (generator/steps/); a step without one sets up the session.
    `per_server`: for a farm, each additional server's server and certificate probe answers
    (None for a server that could not be reached); the step that runs there gets one
    verdict per server. The report's `expiry` says what ends when, at `now`; `warn_days` is
    its warning window (exit 6). `switch_wait`: a renewal's wait before its switch, as the audit log
    proves it (`steps.certificate.switch_wait`; None: the package does not wait): while it runs, the
    switch's `will change` says after when (`not_before`).
    """
    now = now or clock.utc_now()
    readings = Readings.of(plan, answers, now)
    verdicts = []
    for step in plan["steps"]:
        found = unit(step["id"])
        if step.get("runs_on") == "additional":
            verdicts += [_on_server(plan, step, host, (per_server or {}).get(host), now)
                         for host in plan["parameters"]["crm"].get("additional_servers") or []]
            continue
        verdict = (found.verdict(readings) if found is not None and found.verdict is not None else
                   StepVerdict(step["index"], step["id"], "session", "sets up the PowerShell session; changes nothing"))
        # A renewal runs the same steps in another order: the plan says each one's index.
        verdicts.append(_waiting(replace(verdict, index=step["index"]), plan, switch_wait, now))
    probes = [str(p.get("id")) for p in plan.get("probes") or [] if isinstance(p, dict)] or list(PROBES)
    notes = [f"probe {name} did not answer" for name in probes if answers.get(name) is None]
    expiry = _expiry(plan, readings.certificate, readings.crm, readings.entra, now)
    return CheckReport(verdicts, notes, expiry=expiry, warn_days=warn_days)


def _waiting(verdict: StepVerdict, plan: Mapping[str, Any], wait: SwitchWait | None,
             now: _dt.datetime) -> StepVerdict:
    """A renewal's switch that would change CRM but must wait: `will change (after <UTC time>)`.

    With no proof in the audit log the switch waits for one (step spn, then the hours); after the wait
    the verdict is the step's own. Other verdicts (in place, blocked, ...) are left as they are.
    """
    if wait is None or verdict.id != "certificate" or verdict.verdict != "will change" or not wait.waiting(now):
        return verdict
    until = wait.until
    if until is None:
        why = f": {wait.problem}" if wait.problem else ""
        return replace(verdict, detail=f"{verdict.detail}; the switch waits {wait.hours} hours after step "
                       f"{number(plan, 'spn')} (spn) proves the new key credential in Entra ID, and the audit log "
                       f"{wait.log} holds no proof of it yet{why}")
    assert wait.proof is not None
    return replace(verdict, not_before=when(until),
                   detail=f"{verdict.detail}; the switch waits until {when(until)}: the new key credential was read "
                   f"back in Entra ID at {when(wait.proof.proven_at)}, and [certificate] switch_after_hours is "
                   f"{wait.hours}")


def _on_server(plan: Mapping[str, Any], step: Mapping[str, Any], host: str,
               answers: Mapping[str, dict[str, Any] | None] | None, now: _dt.datetime) -> StepVerdict:
    """A step that runs on each additional server, judged for one of them by its unit."""
    found = unit(step["id"])
    if found is None or found.server_verdict is None:
        return StepVerdict(step["index"], step["id"], "cannot tell", f"{host}: psbridge has no check for this step",
                           host=host)
    return found.server_verdict(ServerVerdictContext(plan, step["index"], host, answers, now))


def on_additional_server(plan: Mapping[str, Any], index: int, host: str,
                         answers: Mapping[str, dict[str, Any] | None] | None) -> StepVerdict:
    """Step additional-servers on one additional server (its unit's verdict): the certificate in its
    store, with a key the service account reads."""
    return _on_server(plan, {"index": index, "id": "additional-servers"}, host, answers, clock.utc_now())


def evidence(report: CheckReport, *, package: str, digest: str, host: str, checked_at: str,
             tool_version: str) -> dict[str, Any]:
    """What `check --out` saves: the package's digest, the server, the time, every verdict and reading."""
    return {
        "format": "psbridge-check-v1", "tool_version": tool_version, "package": package, "package_digest": digest,
        "host": host, "checked_at": checked_at, **report.as_json(), "readings": report.readings,
    }

