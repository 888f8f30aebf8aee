"""`psbridge report`: one self-contained HTML file about a package, for the board and the auditors.

The report is built from the `Package` read once (`package.read_package`), the package's
evidence folders (approvals/, runs/, checks/) and the audit log. It is one HTML file that
loads nothing: a Content-Security-Policy of `default-src 'none'` (inline styles allowed),
no script, no image, no font, no link but `#` anchors inside the page. It prints to PDF
with the summary alone on page 1 (change ticket, what changes where, approvals, digest).

Every value comes from outside psbridge's control (parameters, identities, comments,
server text in run records, file names) and is shown inert: control and invisible
characters escaped as `text.printable` does for the terminal, then HTML-escaped by Jinja's
autoescape (this template has an environment of its own, separate from the PowerShell
and Markdown ones). The only markup not written by the template is Pygments' highlighting
of the step scripts, which escapes the text it wraps.

Missing evidence is said plainly, never left out: no run, no saved check result, no
back-out script, no audit log, a trust that was not checked.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

from . import __version__
from .clock import format_time, utc_now
from .errors import UserError
from .files import sha256_hex, write_file
from .package import Package
from .report_runs import as_text, read_evidence, read_run, step_number, verdicts_view
from .text import clip, printable

#: The page may load nothing; inline styles (the template's <style> and Pygments' spans) only.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
TEMPLATE = "report.html.j2"
MAX_EVIDENCE_FILES = 500
#: The audit lines about the package that the report lists (the newest ones).
MAX_AUDIT_LINES = 200
#: Where a step's changes happen, in the order of the summary's diagram.
PLACES = (
    ("server", "CRM server", ("CRM server", "Additional CRM servers")),
    ("entra", "Entra ID", ("Entra ID",)),
    ("database", "CRM configuration database", ("CRM configuration database",)),
)
_TITLES = frozenset(title for _, title, _ in PLACES)
_PLACE_SPLIT = re.compile(r";\s+(?=(?:CRM server|Additional CRM servers|Entra ID|CRM configuration database)\b[^:]*:)")


# --------------------------------------------------------------------------- where the report goes


def default_path(package_dir: Path) -> Path:
    """`<parent>/<name>-report.html`: beside the package, never inside it (that would change no digest
    but would make the folder hold a file psbridge did not render)."""
    folder = Path(os.path.abspath(package_dir))
    return folder.parent / f"{folder.name}-report.html"


def check_target(out: Path, package_dir: Path) -> Path:
    """The file to write, refusing a place inside the package folder or a missing folder."""
    target = Path(os.path.abspath(out))
    package = Path(os.path.realpath(package_dir))
    if Path(os.path.realpath(target.parent)).is_relative_to(package) or Path(os.path.realpath(target)) == package:
        raise UserError(f"{out}: inside the package folder {package_dir}; write the report beside it (the default)")
    if not target.parent.is_dir():
        raise UserError(f"{target.parent}: no such folder")
    return target


# --------------------------------------------------------------------------- reading evidence


def _evidence_files(folder: Path, suffix: str) -> tuple[list[Path], str | None]:
    """The regular-looking entries of an evidence folder with `suffix`, sorted; or why the folder can't be read."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], f"{folder.name}/: cannot read ({exc.strerror or exc})"
    if not stat.S_ISDIR(info.st_mode):
        return [], f"{folder.name}/ is not a folder"
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(suffix) and not e.name.startswith("."))
    except OSError as exc:
        return [], f"{folder.name}/: cannot list ({exc.strerror or exc})"
    problem = None
    if len(names) > MAX_EVIDENCE_FILES:
        problem = f"{folder.name}/ holds {len(names)} files; the report shows the newest {MAX_EVIDENCE_FILES}"
        names = names[-MAX_EVIDENCE_FILES:]
    return [folder / n for n in names], problem


# --------------------------------------------------------------------------- the view


@dataclass
class StepView:
    index: Any
    id: str
    title: str
    kind: str
    file: str
    changes: str
    sha256: str  # of the bytes in the package
    recorded_sha256: str  # what plan.json records
    html: str  # highlighted script
    lines: int


def _highlight(text: str) -> str:
    """The script highlighted by Pygments (it HTML-escapes every token), invisible characters made visible."""
    from pygments import highlight
    from pygments.lexers import PowerShellLexer

    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    shown = "\n".join(visible(line) for line in lines)
    return highlight(shown, PowerShellLexer(stripnl=False, ensurenl=True), _formatter())


@cache
def _formatter() -> Any:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="hl", linenos="inline", style="default", wrapcode=True)


def highlight_css() -> str:
    """Pygments' stylesheet for the highlighted scripts, scoped to `.hl` (embedded: no external CSS)."""
    return _formatter().get_style_defs(".hl")


def visible(text: str) -> str:
    """One line of outside text with control and invisible characters escaped; tabs kept."""
    return "\t".join(printable(part) for part in text.split("\t"))


def _changes_by_place(steps: Sequence[Any]) -> dict[str, list[dict[str, str]]]:
    """Per place of the diagram, what each state-changing step changes there."""
    places: dict[str, list[dict[str, str]]] = {key: [] for key, _, _ in PLACES}
    places["other"] = []
    for step in steps:
        if not step.changes:
            continue
        for part in _PLACE_SPLIT.split(step.changes):
            where, _, what = part.partition(": ")
            key = next((k for k, _, prefixes in PLACES if where.startswith(prefixes)), "other")
            qualifier = "" if where in _TITLES else where
            places[key].append({"step": f"{step.index:02d} {step.id}", "what": what or part, "where": qualifier})
    return places


_ASIDE = re.compile(r"\s*\([^()]*\)")


def in_short(text: str) -> str:
    """A sentence without its parenthetical asides, for the app trust's page one.

    The app trust adds four steps to describe and back out, and with their asides (how a credential
    is matched, which permissions are merged, where a backup folder is) page one has no room left
    for the back-out and the approvals. The whole sentences stay in the report: each step's section
    ("Changes: …") and the back-out plan after page one.
    """
    short = text
    while (shorter := _ASIDE.sub("", short)) != short:
        short = shorter
    return short


def _parameters(package: Package) -> dict[str, Any]:
    raw = package.plan.get("parameters")
    return raw if isinstance(raw, dict) else {}


def _table(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    return value if isinstance(value, dict) else {}


def _trust(package: Package, params: Mapping[str, Any]) -> dict[str, Any]:
    """Page one's trust box: the ACS retirement for an ACS package, the app trust's facts for an app package."""
    from .parameters import ACS_RETIRED_ON, ACS_RETIREMENT, ACS_RETIREMENT_PAGE

    view: dict[str, Any] = {"app": params.get("trust") == "app", "quote": ACS_RETIREMENT, "date": ACS_RETIRED_ON,
                            "page": ACS_RETIREMENT_PAGE}
    if not view["app"]:
        return view
    app = _table(params, "app")
    facts = package.payload_facts or []
    view.update(adopted=as_text(app.get("client_id")), created=as_text(app.get("name")),
                payload=[{"file": as_text(f.get("file")), "sha256": as_text(f.get("sha256")),
                          "signer": as_text(f["signer"].get("subject")) if isinstance(f.get("signer"), dict)
                          else as_text(f.get("signer"))} for f in facts if isinstance(f, dict)])
    return view


def look_alikes(params: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each parameter value with characters outside ASCII, its field and its code points, as REVIEW.md lists
    them: `contoso\\CRMWebApplіcationService` with a Cyrillic і reads as the usual account by eye."""
    from .text import flatten, non_ascii_values

    return [{"key": key, "value": value, "points": ", ".join(points)}
            for key, value, points in non_ascii_values(flatten(params))]


def change_ticket(package: Package) -> dict[str, str] | None:
    """plan.json's `[change]` table (ticket, summary, window) when the parameters have one."""
    table = _parameters(package).get("change")
    if not isinstance(table, dict) or not table:
        return None
    return {str(k): as_text(v) for k, v in table.items()}


def _catalogue_view(package: Package) -> tuple[Any, Any] | None:
    """The package's parameters and layout (steps, constants), or None when plan.json's parameters can't be read."""
    from .catalogue import layout_for

    try:
        params = package.parameters
        return params, layout_for(params)
    except (UserError, LookupError, ValueError):
        return None


def _risks(package: Package) -> dict[str, Any]:
    """The package's risks, heaviest first, from the one list REVIEW.md shows (risks.package_risks)."""
    from .risks import package_risks

    found = _catalogue_view(package)
    if found is None:
        return {"items": [], "problem": "plan.json's parameters cannot be read: the risks cannot be listed "
                                        "(see Integrity)"}
    params, layout = found
    numbers = {s.id: f"{s.index:02d}" for s in layout.steps}
    risks = package_risks(params, layout.constants, numbers)
    return {"items": [{"key": r.key, "title": r.title, "parts": _html_parts(r.parts)} for r in risks], "problem": ""}


def _html_parts(parts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A risk's parts for the page: prose psbridge wrote with `code` in it split into text and code parts
    (REVIEW.md shows those backticks as code spans; the page as <code>), strong text without backticks."""
    out: list[tuple[str, str]] = []
    for kind, text in parts:
        if kind == "text":
            pieces = text.replace("\n", " ").split("`")
            out += [("value" if i % 2 else "text", piece) for i, piece in enumerate(pieces) if piece]
        else:
            out.append((kind, text.replace("`", "") if kind == "strong" else text))
    return out


def _backout_words(package: Package) -> dict[str, Any]:
    """Each state-changing step's back-out in words, scripted or by hand, as REVIEW.md's back-out plan says it."""
    from .catalogue import IRREVERSIBLE, backouts_for

    found = _catalogue_view(package)
    if found is None:
        return {"items": [], "irreversible": IRREVERSIBLE, "problem": "plan.json's parameters cannot be read: "
                                                                      "the back-out cannot be listed"}
    params, layout = found
    steps = {s.id: s for s in layout.steps}
    items = []
    for b in backouts_for(params):
        step = steps[b.step_id]
        what = step.changes.split(": ", 1)[1] if ": " in step.changes else step.changes
        items.append({"step": f"{step.index:02d} {step.id}", "title": step.title, "scripted": b.script is not None,
                      "script": b.script or "",
                      "words": (f"psbridge rollback sends {b.script}: it removes what this step changed in the "
                                "recorded run") if b.script else _in_words(b.manual), "changes": what,
                      "procedure": b.manual or ""})
    return {"items": items, "irreversible": IRREVERSIBLE, "problem": ""}


def _in_words(manual: str) -> str:
    """A by-hand back-out for page one: its words, without the commands of its procedure.

    A procedure with code (`app-registration`'s Graph commands, nine lines) is not words, and page
    one has no room for it: its sentences before the first command stay, and the whole procedure
    is in the back-out plan after page one.
    """
    cut = min((i for i in (manual.find("`"), manual.find("\n")) if i >= 0), default=-1)
    if cut < 0:
        return manual
    head = manual[:cut]
    end = head.rfind(". ")
    words = head[:end + 1] if end >= 0 else head.rstrip(" :")
    return f"{words} The commands: \"Back-out plan\" below."


def _window(package: Package) -> dict[str, Any]:
    """`[change] window`: its text, and its start and end when it is an ISO 8601 interval (else not checkable)."""
    from .parameters import parse_window

    table = _parameters(package).get("change")
    text = table.get("window") if isinstance(table, dict) else None
    if not isinstance(text, str):
        return {"text": "", "end": None, "describe": "", "checkable": False}
    try:
        interval = parse_window(text)
    except ValueError:
        interval = None
    return {"text": text, "end": interval.end if interval else None,
            "describe": interval.describe() if interval else "", "checkable": interval is not None}


def _step_views(package: Package) -> tuple[list[StepView], list[Any]]:
    """The steps with their texts: the package's own (intact), else what plan.json lists (flagged)."""
    views: list[StepView] = []
    if not package.problems:
        for step in package.steps:
            views.append(StepView(step.index, step.id, step.title, step.kind, step.file, step.spec.changes,
                                  package.listing.get(step.file, ""), step.sha256, _highlight(step.text),
                                  step.text.count("\n") + 1))
        return views, [s.spec for s in package.steps]
    from .catalogue import PROFILES, catalogue

    specs = list(catalogue(package.profile)) if package.profile in PROFILES else []
    changes = {s.index: s.changes for s in specs}
    entries = package.plan.get("steps")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        rel = entry.get("file")
        data = package.files.get(rel) if isinstance(rel, str) else None
        text = data.decode("utf-8-sig", errors="replace") if data is not None else "(file missing)"
        index = step_number(entry.get("index"))
        views.append(StepView(index, as_text(entry.get("id")), as_text(entry.get("title")),
                              as_text(entry.get("kind")), as_text(rel),
                              changes.get(index, "") if isinstance(index, int) else "",
                              package.listing.get(rel, "(missing)") if isinstance(rel, str) else "(missing)",
                              as_text(entry.get("sha256")), _highlight(text), text.count("\n") + 1))
    return views, specs


def _covers(expires_at: str, window: Mapping[str, Any], valid: bool) -> str:
    """Whether an approval lasts until the change window ends, in words ("" when there is no window).

    An approval that is not valid now (untrusted key, expired, another digest) covers nothing, however
    late its expiry: anyone who can write approvals/ could otherwise show a green badge on page one.
    """
    from .clock import parse_time

    if not window["text"]:
        return ""
    if not window["checkable"]:
        return "window is free text: cannot tell"
    if not valid:
        return "not valid: it covers nothing"
    try:
        expires = parse_time(expires_at)
    except ValueError:
        return "cannot tell (expiry unreadable)"
    end = format_time(window["end"])
    return f"covers the window (ends {end})" if expires >= window["end"] else f"ends before the window ends ({end})"


def _approvals(package: Package, now: datetime, trusted_keys: Path | None) -> dict[str, Any]:
    """Every approval file judged now: who, when, until when, valid now or why not, and whether it covers
    the change window."""
    from .approvals import list_approvals
    from .keys import load_trusted_keys

    trusted = load_trusted_keys(trusted_keys) if trusted_keys is not None else None
    try:
        statuses, strays = list_approvals(package, now=now, trusted=trusted)
    except UserError as exc:
        return {"items": [], "strays": [], "problems": list(exc.problems), "trust_checked": trusted is not None,
                "valid_people": 0}
    items = []
    people: set[str] = set()
    window = _window(package)
    for s in statuses:
        valid = s.usable and s.trusted is not False
        if valid and s.trusted and s.person:
            people.add(s.person)
        if s.problems:
            verdict = "not valid"
        elif s.trusted is None:
            verdict = "signature valid, unexpired; trust not checked"
        else:
            verdict = "valid now"
        items.append({
            "file": s.file, "approver": s.approver or "(unknown)", "fingerprint": s.fingerprint or "",
            "approved_at": s.approved_at or "", "expires_at": s.expires_at or "", "comment": s.comment or "",
            "valid": valid, "verdict": verdict, "problems": list(s.problems),
            "window": _covers(s.expires_at or "", window, valid),
        })
    return {"items": items, "strays": strays, "problems": [], "trust_checked": trusted is not None,
            "valid_people": len(people)}


def _checks(package_dir: Path | None, digest: str) -> dict[str, Any]:
    """Saved `check` results, PKG/checks/*.json (written by `check` once it saves them)."""
    if package_dir is None:
        return {"items": [], "problem": None}
    paths, problem = _evidence_files(package_dir / "checks", ".json")
    items = []
    for path in paths:
        data, why = read_evidence(path)
        item: dict[str, Any] = {"file": f"checks/{path.name}", "when": "", "host": "", "digest_note": ""}
        record: Any = None
        if data is not None:
            try:
                record = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                why = "not valid JSON"
        if isinstance(record, dict):
            item.update(verdicts_view(record))
            item["when"] = as_text(next((record[k] for k in ("checked_at", "time", "started", "ended") if record.get(k)), ""))
            item["host"] = as_text(record.get("host"))
            recorded = record.get("package_digest") or record.get("digest")
            if isinstance(recorded, str) and recorded != digest:
                item["digest_note"] = f"checked another digest ({recorded[:16]}…)"
        else:
            item.update({"rows": [], "notes": [], "exit_code": "",
                         "problem": why or "not a JSON object"})
        items.append(item)
    return {"items": items, "problem": problem}


def _rollback(package: Package) -> list[dict[str, Any]]:
    """Back-out scripts: the package's rollback/ files (part of the package, so of its digest)."""
    out = []
    for rel, data in package.files.items():
        if not rel.startswith("rollback/"):
            continue
        text = data.decode("utf-8-sig", errors="replace")
        is_script = rel.lower().endswith(".ps1")
        out.append({"file": rel, "sha256": package.listing[rel],
                    "html": _highlight(text) if is_script else "", "text": "" if is_script else text})
    return out


def _audit(log: Path, package: Package, believed: list[dict[str, Any]]) -> dict[str, Any]:
    """The audit chain's status, and the lines about this package (also added to `believed`: the lines
    up to the first broken one, which may vouch for a run record), with every repair of the log."""
    from . import audit

    view: dict[str, Any] = {"path": str(log), "state": "", "detail": "", "head": "", "good_lines": 0, "lines": [],
                            "left_out": 0}
    if not (log.exists() or log.is_symlink()):
        view["state"], view["detail"] = "no log", "nothing is recorded there (no audit log at this path)"
        return view
    try:
        check = audit.verify(log)
    except UserError as exc:
        view["state"], view["detail"] = "unreadable", "; ".join(exc.problems)
        return view
    view["good_lines"] = check.good_lines
    if check.ok:
        view["state"], view["head"] = "intact", check.head or ""
        view["detail"] = f"{check.good_lines} line(s), the hash chain is unbroken"
    else:
        view["state"] = "broken"
        view["detail"] = f"line {check.broken_line}: {check.problem} ({check.good_lines} good line(s) before it)"
    data, _ = read_evidence(log, 256 * 1024 * 1024)
    lines = []
    for number, raw in enumerate((data or b"").split(b"\n")[: check.good_lines], start=1):
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("package") != package.name:
            # A repair names no package: the torn bytes it cut may have been this package's line, so
            # every repair of the log is shown (what it removed, by size and sha256); it vouches for nothing.
            if entry.get("action") != "audit-repair":
                continue
        else:
            believed.append(entry)
        details = entry.get("details")
        lines.append({
            "number": number, "time": as_text(entry.get("time")), "action": as_text(entry.get("action")),
            "outcome": as_text(entry.get("outcome")), "actor": as_text(entry.get("actor")),
            "digest": "this digest" if entry.get("digest") == package.digest
            else (as_text(entry.get("digest"))[:16] + "…" if entry.get("digest") else "none"),
            "details": clip(json.dumps(details, ensure_ascii=False, sort_keys=True), 240) if details else "",
        })
    view["left_out"] = max(0, len(lines) - MAX_AUDIT_LINES)
    view["lines"] = lines[-MAX_AUDIT_LINES:]
    return view


#: How the report marks a run record no audit `run` line holds the sha256 of (as rollback refuses one).
UNVOUCHED = "not vouched for by the audit log"


def _runs_status(package: Package, runs: list[Any], believed: list[dict[str, Any]]) -> dict[str, str]:
    """The package's current status from its run history (runs.history: a rollback backs a run out only when
    it ended ok and the audit log vouches for its record), and each run marked with the rollback that
    backed it out. "backed out at …" after a rollback, not "last: ok"."""
    from .runs import history

    if not runs or package.path is None:
        return {"text": "not run by psbridge (runs/ is empty)", "state": "none"}
    views = {run.file: run for run in runs}
    entries = [e for e in history(package, believed) if e.problem is None]
    for entry in entries:
        run = views.get(f"runs/{entry.path.name}")
        if run is not None:
            run.vouched = entry.vouched
        by = views.get(f"runs/{entry.backed_out_by.name}") if entry.backed_out_by else None
        if run is not None and by is not None:
            run.backed_out_by, run.backed_out_at = by.file, by.ended or by.started
    if not entries:
        return {"text": "no run record of this package could be read", "state": "unknown"}
    last = entries[-1]
    view = views.get(f"runs/{last.path.name}")
    when = (view.ended or view.started) if view is not None else last.started
    if last.is_rollback:
        undone = Path(last.rollback_of or "?").name
        if last.exit_code == 0 and last.vouched:
            return {"text": f"backed out at {when} (rollback of runs/{undone})", "state": "backed out"}
        if last.exit_code == 0:
            return {"text": f"rolled back at {when}, but the audit log does not vouch for the rollback's record",
                    "state": "unknown"}
        return {"text": f"rollback of runs/{undone} {last.outcome} at {when}: check the server", "state": "failed"}
    outcome = view.outcome if view is not None else last.outcome
    if not last.vouched:  # anyone who can write runs/ can drop a record: believed only when the log vouches
        return {"text": f"last run {outcome} at {when}, but its record is {UNVOUCHED}: it may be forged",
                "state": "unknown"}
    return {"text": f"last run {outcome} at {when}", "state": outcome}


def collect(package: Package, *, audit_log: Path, trusted_keys: Path | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data (no I/O beyond the evidence and the audit log)."""
    moment = now or utc_now()
    params = _parameters(package)
    crm, sharepoint = _table(params, "crm"), _table(params, "sharepoint")
    integrity = list(package.problems)
    reproducible = [] if integrity else list(package.reproduction_problems)
    steps, specs = _step_views(package)
    places = _changes_by_place(specs)
    sites = sharepoint.get("sites")
    sites = sites if isinstance(sites, list) else []
    additional = crm.get("additional_servers")
    additional = additional if isinstance(additional, list) else []
    runs_paths, runs_problem = _evidence_files(package.path / "runs", ".jsonl") if package.path else ([], None)
    runs = [read_run(p, package.digest) for p in runs_paths]
    believed: list[dict[str, Any]] = []
    audit_view = _audit(audit_log, package, believed)
    status = _runs_status(package, runs, believed)
    cert = package.certificate
    trust = _trust(package, params)
    if trust["app"]:  # four more steps than ACS: their asides move to the steps' sections
        places = {key: [{**c, "what": in_short(c["what"])} for c in changes] for key, changes in places.items()}
    return {
        "csp": CONTENT_SECURITY_POLICY,
        "css": highlight_css(),
        "version": __version__,
        "generated": format_time(moment),
        "package": {"name": package.name, "folder": package.label, "profile": package.profile,
                    "tool_version": package.tool_version, "digest": package.digest},
        "ticket": change_ticket(package),
        "non_ascii": look_alikes(params),
        "trust": trust,
        "integrity": integrity,
        "reproducible": reproducible,
        "diagram": {
            "server": {"title": "CRM server", "names": [as_text(crm.get("server")) or "host given to psbridge run --host",
                                                        *(as_text(h) for h in additional)],
                       "changes": places["server"]},
            "entra": {"title": "Entra ID", "names": [
                "tenant " + (as_text(sharepoint.get("tenant_id")) or "of " + (urlhost(sites[0]) if sites else "?"))],
                      "changes": places["entra"]},
            "database": {"title": "CRM configuration database", "names": [
                "root domain " + (as_text(crm.get("root_domain")) or "?")], "changes": places["database"]},
            "other": places["other"],
            "in_short": trust["app"],
        },
        "sites": [as_text(s) for s in sites],
        "certificate": {k: as_text(v) for k, v in cert.items()} if cert else None,
        "approvals": _approvals(package, moment, trusted_keys),
        "steps": steps,
        "rollback": _rollback(package),
        "runs": runs,
        "runs_problem": runs_problem,
        "checks": _checks(package.path, package.digest),
        "audit": audit_view,
        "status": status,
        "risks": _risks(package),
        "backout": _backout_words(package),
        "window": {k: v for k, v in _window(package).items() if k != "end"},
    }


def urlhost(url: Any) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(as_text(url)).hostname or as_text(url)
    except ValueError:
        return as_text(url)


# --------------------------------------------------------------------------- rendering


def _finalize(value: Any) -> Any:
    """Every `{{ … }}` value: markup psbridge made is kept, anything else shown inert (then autoescaped)."""
    from markupsafe import Markup

    if isinstance(value, Markup):
        return value
    if value is None:
        return "—"
    return "\n".join(visible(line) for line in str(value).split("\n"))


@cache
def _environment() -> Any:
    """The report's own Jinja environment: HTML autoescape on, nothing shared with the script templates."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(package_files("psbridge.templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda v, n=16: (str(v)[:n] + "…") if v and len(str(v)) > n else (v or "")
    env.filters["in_short"] = in_short
    return env


def render_html(view: Mapping[str, Any]) -> str:
    """The report's HTML from `collect`'s view."""
    from markupsafe import Markup

    data = dict(view)
    data["csp"] = Markup(view["csp"])  # our constant, written as is: `'none'`, not `&#39;none&#39;`
    data["css"] = Markup(view["css"])
    data["steps"] = [_with_markup(s) for s in view["steps"]]
    data["rollback"] = [{**r, "html": Markup(r["html"])} for r in view["rollback"]]
    return _environment().get_template(TEMPLATE).render(**data)


def _with_markup(step: StepView) -> StepView:
    from markupsafe import Markup

    step.html = Markup(step.html)
    return step


def build_report(package: Package, *, audit_log: Path, trusted_keys: Path | None = None,
                 now: datetime | None = None) -> str:
    """The whole report for `package` (read once by `read_package`)."""
    return render_html(collect(package, audit_log=audit_log, trusted_keys=trusted_keys, now=now))


def write_report(html: str, target: Path) -> str:
    """Write the report (atomically, 0644); return its sha256."""
    data = html.encode("utf-8")
    write_file(target, data, 0o644, overwrite=True)
    return sha256_hex(data)
