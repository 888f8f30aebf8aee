"""The verified package: every byte a command judges or sends, read from disk once.

A package is the folder `render` writes: plan.json, REVIEW.md, setup.ps1, steps/ and
probes/. `read_package` reads each of its files exactly once into memory and checks them
against each other; from then on `verify`, `approve`, `show`, `run` and `check` take
every text they hash, approve, show or send from the returned `Package`, never from the
disk again. A file swapped on disk after the read changes nothing that psbridge does.

Three levels of trust, each a method, so each command asks for exactly what it needs:

* read: plan.json parses and names a psbridge package (`show`, `diff` need no more);
* intact (`require_intact`): every file has the sha256 plan.json records, no file is
  missing or added, and the step list with each step's kind, `changes_state`, `needs`
  and secret `inputs` is exactly what psbridge's catalogue computes from plan.json's
  parameters (`run`, `check`);
* reproducible (`require_reproducible`): re-rendering plan.json's parameters (and the
  certificate facts it records) in memory gives byte-identical files, so REVIEW.md,
  setup.ps1, the steps and the probes are what psbridge renders for those values and
  nothing else (`approve`, `verify`, `run/check --require-approval`).

Evidence folders (runs/, approvals/, checks/) are not part of the change: they are
records *about* the package, outside its digest.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import __version__
from .catalogue import LOCK_SCRIPT, SIGNOUT_SCRIPT, Step, backouts_for, probe_file, probes_for, step_entry, steps_for
from .errors import RuntimeFailure, UserError
from .files import digest_of, listing_of, read_regular

#: Version of plan.json's layout; readers refuse a version they do not know.
FORMAT_VERSION = 1
#: Top-level folders of a package that record what happened to it; not part of the change.
EVIDENCE_DIRS = frozenset({"runs", "approvals", "checks"})
#: Far above any real package (a few dozen KiB): a bound, so a hostile folder can't exhaust memory.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 500
#: The step fields plan.json records that psbridge computes from the catalogue.
CATALOGUE_FIELDS = ("index", "id", "title", "file", "changes_state", "kind", "needs", "inputs", "runs_on")
#: Step fields plan.json records only when the catalogue gives them (the payload files of an app step).
OPTIONAL_CATALOGUE_FIELDS = ("payload",)


# --------------------------------------------------------------------------- reading the folder


def read_files(package_dir: Path) -> dict[str, bytes]:
    """Every change-defining file of the folder, by sorted POSIX relative path, read once.

    Links are refused rather than followed (the approved text could differ from what a
    later reader opens) and so is anything that is not a regular file or folder.
    """
    try:
        top = os.lstat(package_dir)
    except OSError:
        raise UserError(f"{package_dir}: no such package folder") from None
    if not stat.S_ISDIR(top.st_mode):
        raise UserError(f"{package_dir}: not a package folder")
    files: dict[str, bytes] = {}
    pending = [(package_dir, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"{folder}: cannot list ({exc.strerror or exc})") from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            path = Path(entry.path)
            mode = entry.stat(follow_symlinks=False).st_mode
            if not prefix and entry.name in EVIDENCE_DIRS and stat.S_ISDIR(mode):
                continue
            if stat.S_ISLNK(mode):
                raise UserError(f"{path}: symbolic links are not allowed in a package")
            if stat.S_ISDIR(mode):
                pending.append((path, rel + "/"))
                continue
            # a regular file, not a link, not over MAX_FILE_BYTES
            files[rel] = read_regular(path, str(path), limit=MAX_FILE_BYTES, too_large="larger than any package file",
                                      follow_symlinks=False)
            if len(files) > MAX_FILES:
                raise UserError(f"{package_dir}: more than {MAX_FILES} files; not a psbridge package")
    return dict(sorted(files.items(), key=lambda kv: kv[0].encode("utf-8")))


def parse_plan(data: bytes, where: str) -> dict[str, Any]:
    """plan.json's object; anything else is an input error naming the file."""
    try:
        plan = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(plan, dict) or plan.get("tool") != "psbridge":
        raise UserError(f"{where}: not a psbridge plan")
    if plan.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{where}: format_version {plan.get('format_version')!r}; this psbridge reads {FORMAT_VERSION}")
    return plan


# --------------------------------------------------------------------------- the package


@dataclass(frozen=True)
class PackageStep:
    """One step as this package holds it: the catalogue's facts, the package's exact text."""

    spec: Step
    inputs: dict[str, str]
    text: str  # the file decoded as UTF-8, BOM dropped, line endings kept: what is sent
    sha256: str  # of the file's bytes

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def changes_state(self) -> bool:
        return self.spec.changes_state

    @property
    def needs(self) -> tuple[str, ...]:
        return self.spec.needs

    @property
    def file(self) -> str:
        return self.spec.file


class Package:
    """A package in memory. Built from a folder by `read_package`, or from a render.

    Everything is derived from `files` (path -> exact bytes), which never changes.
    """

    def __init__(self, files: Mapping[str, bytes], path: Path | None = None) -> None:
        self.files: Mapping[str, bytes] = dict(files)
        self.path = path
        where = f"{path}/plan.json" if path is not None else "plan.json"
        if "plan.json" not in self.files:
            raise UserError(f"{path}: no plan.json; not a psbridge package (a folder written by `psbridge render`)")
        self.plan: dict[str, Any] = parse_plan(self.files["plan.json"], where)
        self._where = where
        #: Set by `as_rendered`: why this object holds psbridge's render instead of the folder's texts.
        self.replaced: list[str] = []

    # -- identity ----------------------------------------------------------------------

    @cached_property
    def listing(self) -> dict[str, str]:
        return listing_of(self.files)

    @cached_property
    def digest(self) -> str:
        return digest_of(self.listing)

    @property
    def name(self) -> str:
        name = self.plan.get("name")
        return name if isinstance(name, str) else ""

    @property
    def profile(self) -> str:
        profile = self.plan.get("profile")
        return profile if isinstance(profile, str) else ""

    @property
    def tool_version(self) -> str:
        return str(self.plan.get("tool_version", ""))

    @property
    def label(self) -> str:
        """How messages name the package: its folder, or its name when it was never on disk."""
        return str(self.path) if self.path is not None else self.name

    def text(self, rel: str) -> str:
        """A file as text for sending or showing: UTF-8, BOM dropped, line endings kept."""
        try:
            return self.files[rel].decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UserError(f"{self.label}/{rel}: not UTF-8") from None

    # -- parameters and the catalogue -------------------------------------------------

    @cached_property
    def _parameters(self) -> tuple[Any, list[str]]:
        from .parameters import parse_parameters

        raw = self.plan.get("parameters")
        if not isinstance(raw, dict):
            return None, [f"{self._where}: parameters: missing"]
        try:
            return parse_parameters(raw), []
        except UserError as exc:
            return None, [f"{self._where}: parameters: {p}" for p in exc.problems]

    @property
    def parameters(self) -> Any:
        """plan.json's parameters, validated like a parameters file (generator.parameters.Parameters)."""
        params, problems = self._parameters
        if params is None:
            raise UserError(*problems)
        return params

    @property
    def replaced_certificate(self) -> dict[str, Any] | None:
        """A renewal's facts of the certificate it replaces, as plan.json records them (or None)."""
        cert = self.plan.get("replaced_certificate")
        return cert if isinstance(cert, dict) else None

    @property
    def certificate(self) -> dict[str, Any] | None:
        """The local certificate's facts plan.json records (None when the parameters named none)."""
        cert = self.plan.get("certificate")
        return cert if isinstance(cert, dict) else None

    @cached_property
    def metadata_problems(self) -> list[str]:
        """Where plan.json's steps and probes differ from what the catalogue computes."""
        params, problems = self._parameters
        if params is None:
            return problems
        problems = []
        expected = [step_entry(step, params) for step in steps_for(params)]
        recorded = self.plan.get("steps")
        if not isinstance(recorded, list) or not all(isinstance(s, dict) for s in recorded):
            return [f"{self._where}: steps: not a list of steps"]
        if len(recorded) != len(expected):
            problems.append(f"{self._where}: steps: {len(recorded)} listed; the {params.profile} profile has "
                            f"{len(expected)} ({', '.join(e['id'] for e in expected)})")
        for n, (want, have) in enumerate(zip(expected, recorded, strict=False), start=1):
            label = f"step {want['index']:02d} {want['id']}"
            for key in (*CATALOGUE_FIELDS, *OPTIONAL_CATALOGUE_FIELDS):
                if have.get(key) != want.get(key):
                    problems.append(f"{self._where}: steps[{n}] ({label}): {key} is {json.dumps(have.get(key))}; "
                                    f"psbridge's catalogue says {json.dumps(want.get(key))}")
        probes = self.plan.get("probes")
        want_probes = [(name, probe_file(name)) for name in probes_for(params)]
        have_probes = ([(p.get("id"), p.get("file")) for p in probes if isinstance(p, dict)]
                       if isinstance(probes, list) else None)
        if have_probes != want_probes:
            problems.append(f"{self._where}: probes: must list {', '.join(n for n, _ in want_probes)} in this order")
        want_rollback = [(b.step_id, b.script) for b in backouts_for(params) if b.script]
        rollback = self.plan.get("rollback", [])
        have_rollback = ([(r.get("step"), r.get("file")) for r in rollback if isinstance(r, dict)]
                         if isinstance(rollback, list) else None)
        if have_rollback != want_rollback:
            problems.append(f"{self._where}: rollback: must list "
                            f"{', '.join(f for _, f in want_rollback) or 'nothing'} in this order")
        if self.plan.get("name") != params.name or self.plan.get("profile") != params.profile:
            problems.append(f"{self._where}: name and profile must be the parameters' ({params.name}, {params.profile})")
        problems += self._payload_list_problems(params)
        return problems

    def _payload_list_problems(self, params: Any) -> list[str]:
        """plan.json's `payload` lists exactly the MSAL files for the app trust, and is absent for the ACS trust."""
        from .payload import PAYLOAD_FILES

        recorded = self.plan.get("payload")
        if not params.app_trust:
            return [] if recorded is None else [f"{self._where}: payload: a package of the ACS trust carries none"]
        want = sorted(PAYLOAD_FILES.values())
        have = [e.get("file") for e in recorded if isinstance(e, dict)] if isinstance(recorded, list) else None
        if have != want:
            return [f"{self._where}: payload: must list {', '.join(want)} in this order"]
        return []

    @cached_property
    def hash_problems(self) -> list[str]:
        """Files that differ from the sha256 plan.json records, and missing or unexpected files."""
        expected: dict[str, str] = {}
        problems: list[str] = []
        entries: list[Any] = []
        for key in ("steps", "probes", "rollback", "payload"):
            value = self.plan.get(key)
            entries += value if isinstance(value, list) else []
        recorded = [(e.get("file"), e.get("sha256")) for e in entries if isinstance(e, dict)]
        files = self.plan.get("files")
        recorded += list(files.items()) if isinstance(files, dict) else []
        for rel, digest in recorded:
            if not isinstance(rel, str) or not isinstance(digest, str):
                problems.append(f"{self._where}: a file entry without a path and a sha256")
            elif expected.setdefault(rel, digest) != digest:
                problems.append(f"{self._where}: {rel}: recorded twice with different hashes")
        for rel in expected:
            if rel not in self.files:
                problems.append(f"missing file: {rel}")
            elif self.listing[rel] != expected[rel]:
                problems.append(f"changed file: {rel} (sha256 differs from plan.json)")
        problems += [f"unexpected file: {rel}" for rel in self.files if rel not in expected and rel != "plan.json"]
        return problems

    @property
    def problems(self) -> list[str]:
        """Everything that makes this package not intact (empty when it is)."""
        return self.hash_problems + self.metadata_problems

    def require_intact(self) -> Package:
        """Refuse (exit 2, one line per problem) a package whose files or plan are not what psbridge wrote."""
        if self.problems:
            raise UserError(*(f"{self.label}: {p}" for p in self.problems))
        return self

    @cached_property
    def steps(self) -> tuple[PackageStep, ...]:
        """The steps in catalogue order, with this package's texts (only for an intact package)."""
        self.require_intact()
        params = self.parameters
        recorded = {s["index"]: s for s in self.plan["steps"]}
        return tuple(
            PackageStep(step, step_entry(step, params)["inputs"], self.text(step.file), recorded[step.index]["sha256"])
            for step in steps_for(params)
        )

    @cached_property
    def probes(self) -> dict[str, str]:
        """Probe name -> the script `check` sends (only for an intact package)."""
        self.require_intact()
        return {name: self.text(probe_file(name)) for name in probes_for(self.parameters)}

    @cached_property
    def lock_script(self) -> str:
        """The run lock script `run` sends before the first step (only for an intact package)."""
        self.require_intact()
        if LOCK_SCRIPT not in self.files:
            raise UserError(f"{self.label}: no {LOCK_SCRIPT}; render the package again with this psbridge")
        return self.text(LOCK_SCRIPT)

    @cached_property
    def signout_script(self) -> str | None:
        """The Graph sign-out run, check and rollback send last (only for an intact package); None
        for a package that never signs in to Graph (profile msonline).

        Its text comes from the package, hashed and approved like lock.ps1: what is sent is what
        was judged, never the template read again after the gate.
        """
        self.require_intact()
        if self.parameters.profile != "graph":
            return None
        if SIGNOUT_SCRIPT not in self.files:
            raise UserError(f"{self.label}: no {SIGNOUT_SCRIPT}; render the package again with this psbridge")
        return self.text(SIGNOUT_SCRIPT)

    @cached_property
    def rollback_scripts(self) -> dict[str, str]:
        """Step id -> the back-out script `psbridge rollback` sends (only for an intact package)."""
        self.require_intact()
        return {b.step_id: self.text(b.script) for b in backouts_for(self.parameters) if b.script}

    def step(self, index: int) -> PackageStep:
        return next(s for s in self.steps if s.index == index)

    @property
    def payload_facts(self) -> list[dict[str, Any]] | None:
        """The payload facts plan.json records (file, sha256, size, signer), or None (the ACS trust)."""
        facts = self.plan.get("payload")
        return facts if isinstance(facts, list) else None

    @cached_property
    def payload(self) -> Any:
        """An intact app package's MSAL payload (`payload.Payload`) from its own files, judged again.

        The DLL's Authenticode signature is verified offline from the package's bytes, and the facts
        must be the ones plan.json records: what `run` sends is what was reviewed and approved.
        None for a package of the ACS trust.
        """
        self.require_intact()
        if not self.parameters.app_trust:
            return None
        payload, problems = self._payload
        if payload is None:
            raise UserError(*(f"{self.label}: {p}" for p in problems))
        return payload

    @cached_property
    def _payload(self) -> tuple[Any, list[str]]:
        """(the payload built from this package's payload/ files, []) or (None, why not)."""
        from .payload import payload_from_files

        try:
            payload = payload_from_files(self.files)
        except (UserError, RuntimeFailure) as exc:
            return None, [str(p) for p in getattr(exc, "problems", (str(exc),))]
        if payload.facts() != self.payload_facts:
            return None, [f"{self._where}: payload: the facts it records (sha256, size, signer) are not those of "
                          "the package's payload files"]
        return payload, []

    # -- reproducible render ----------------------------------------------------------

    @cached_property
    def reproduction_problems(self) -> list[str]:
        """Files that differ from what this psbridge renders from plan.json's parameters and certificate."""
        if self.tool_version != __version__:
            return [f"rendered by psbridge {self.tool_version or '(unknown)'}, this is psbridge {__version__}: "
                    f"re-render and re-approve it, or install psbridge {self.tool_version} to run it"]
        params, problems = self._parameters
        if params is None:
            return problems
        from .render import render_package

        payload = None
        if params.app_trust:  # re-rendered from the package's own payload files: the .nupkg need not be here
            payload, problems = self._payload
            if payload is None:
                return problems
        try:
            rendered = render_package(params, self.certificate, self.replaced_certificate, payload).files
        except Exception as exc:  # noqa: BLE001 - recorded facts psbridge cannot render: not its package
            return [f"{self._where}: certificate: psbridge cannot render these recorded facts ({type(exc).__name__})"]
        differ = sorted(set(rendered) ^ set(self.files) | {r for r in rendered if self.files.get(r) != rendered[r]})
        return [f"{rel}: not what psbridge {__version__} renders from plan.json's parameters" for rel in differ]

    def as_rendered(self) -> Package:
        """This package if psbridge renders it byte for byte, else psbridge's own render of its parameters.

        For `check` without a gate: it may read a package of another version or one edited
        by hand, but what it sends must be psbridge's text, never an edited script.
        `replaced` on the returned package lists why the package's own texts were not used.
        """
        if not self.reproduction_problems:
            return self
        twin = _rendered_twin(self)
        twin.replaced = list(self.reproduction_problems)
        return twin

    def require_reproducible(self) -> Package:
        """Refuse (exit 2) a package psbridge did not render byte for byte: hand edits, a stale REVIEW.md."""
        self.require_intact()
        if self.reproduction_problems:
            raise UserError(*(f"{self.label}: {p}" for p in self.reproduction_problems))
        return self


def _rendered_twin(package: Package) -> Package:
    """The package psbridge renders from `package`'s parameters and certificate, at the same folder.

    An app package is rendered with its own payload files, when they are Microsoft's and what
    plan.json records; otherwise there is no twin to send (UserError naming why).
    """
    from .render import render_package

    params = package.parameters
    payload = None
    if params.app_trust:
        payload, problems = package._payload
        if payload is None:
            raise UserError(*(f"{package.label}: {p}" for p in problems))
    return Package(render_package(params, package.certificate, package.replaced_certificate, payload).files,
                   package.path)


def read_package(package_dir: Path) -> Package:
    """Read a package folder once. Raises UserError when it is not a psbridge package at all."""
    return Package(read_files(package_dir), package_dir)
