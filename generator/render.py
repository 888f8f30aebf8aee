"""Jinja templates -> the text of a package, in memory.

Two environments, one rule each:
- PowerShell templates accept in `{{ … }}` only PowerShell literals made by the one quoting
  function (filter `ps`), text psbridge rendered itself (`Trusted`) and integers. Anything
  else raises `RawInterpolation` while rendering, so a template that forgets `| ps` cannot
  produce a package at all.
- The Markdown template (REVIEW.md) shows any plain value as a code span and code as fenced
  blocks whose fence is longer than any backtick run inside, so no parameter can change the
  structure of the review document.
The renderer knows nothing about PSRP or the disk: it returns file names and bytes, which
`package.Package` wraps and `writer` writes. Every fact about the steps (kinds, needs,
inputs, constants, probes) comes from `catalogue`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jinja2

from . import __version__
from .catalogue import (
    IRREVERSIBLE,
    LOCK_SCRIPT,
    SIGNOUT_SCRIPT,
    Layout,
    Step,
    layout_for,
    probe_file,
)
from .files import digest_of, listing_of, sha256_hex
from .parameters import ACS_RETIRED_ON, ACS_RETIREMENT, ACS_RETIREMENT_PAGE, Parameters
from .risks import Risk, package_risks
from .payload import PayloadView, payload_view
from .powershell import PowerShellLiteral, quote
from .steps import unit
from .text import flatten, non_ascii_values

if TYPE_CHECKING:  # pragma: no cover - types only: payload imports the Authenticode libraries lazily anyway
    from .payload import Payload

#: Version of plan.json's layout (package.py reads only this version).
FORMAT_VERSION = 1

BOM = b"\xef\xbb\xbf"


class Trusted(str):
    """Text psbridge produced itself (a rendered step, a Markdown block): inserted as is."""

    __slots__ = ()


class RawInterpolation(TypeError):
    """A template put a value into a script without the quoting function."""


def _powershell_finalize(value: Any) -> Any:
    if isinstance(value, (PowerShellLiteral, Trusted)):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise RawInterpolation(f"template interpolates {type(value).__name__} {value!r} without the `ps` filter")


def code_span(value: Any) -> Trusted:
    """A Markdown code span that shows `value` literally, whatever backticks it holds."""
    text = str(value)
    if "`" not in text and text.strip() == text and text:
        return Trusted(f"`{text}`")  # the common case, without the regex
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return Trusted(f"{ticks}{pad}{text}{pad}{ticks}")


def risk_markdown(risk: Risk) -> Trusted:
    """A risk as REVIEW.md's list item: prose as is (its line breaks are REVIEW.md's own), values as code spans."""
    shown = {"text": lambda t: t.replace("\n", "\n  "), "strong": lambda t: f"**{t}**", "value": code_span}
    return Trusted("".join(shown[kind](text) for kind, text in risk.parts))


def fence(value: Any, info: str = "") -> Trusted:
    """A fenced Markdown code block longer than any backtick run in `value`."""
    text = str(value).rstrip("\n")
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2) if "```" in text else 2
    ticks = "`" * (longest + 1)
    return Trusted(f"{ticks}{info}\n{text}\n{ticks}")


#: REVIEW.md's width outside code blocks.
REVIEW_WIDTH = 100
_LIST_ITEM = re.compile(r"( *)([-*+]|\d{1,9}[.)])( +)(?=\S)")
#: A word that would start a block (list, heading, quote, table, fence, HTML, setext
#: underline, thematic break) if a wrapped line began with it.
_BLOCK_START = re.compile(r"[-+*>#|=_<~]|\d{1,9}[.)]|`{3,}")


_MD_SPECIAL = re.compile(r"[ `\\]")


def _md_words(text: str) -> list[str]:
    """`text` split at spaces, each code span (with the spaces inside it) kept as one word."""
    if "`" not in text and "\\" not in text:
        return [word for word in text.split(" ") if word]
    words, current, i = [], "", 0
    while i < len(text):
        special = _MD_SPECIAL.search(text, i)
        if special is None:
            current += text[i:]
            break
        current += text[i:special.start()]  # plain characters up to the next space, backtick or backslash
        i = special.start()
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i:i + 2]
            i += 2
            continue
        if ch == "`":
            run = len(text) - i - len(text[i:].lstrip("`"))
            end, j = -1, i + run
            while (k := text.find("`", j)) >= 0:  # the closing run has exactly as many backticks
                length = len(text) - k - len(text[k:].lstrip("`"))
                if length == run:
                    end = k
                    break
                j = k + length
            if end >= 0:
                current += text[i:end + run]
                i = end + run
            else:  # no closing run: literal backticks
                current += text[i:i + run]
                i += run
            continue
        if ch == " ":
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if current:
        words.append(current)
    return words


def _wrap_block(lines: list[str], width: int) -> list[str]:
    """A paragraph or list item (its first line and continuation lines) refilled to `width`."""
    item = _LIST_ITEM.match(lines[0])
    if item:
        first, indent = lines[0][:item.end()], " " * item.end()
    else:
        first = indent = lines[0][:len(lines[0]) - len(lines[0].lstrip(" "))]
    words = [w for n, line in enumerate(lines) for w in _md_words(line[len(first) if n == 0 else 0:].strip(" "))]
    out: list[list[str]] = [[]]
    for word in words:
        current = out[-1]
        prefix = first if len(out) == 1 else indent
        if current and len(prefix) + len(" ".join([*current, word])) > width and not current[-1].endswith("\\"):
            carried = [word]
            while _BLOCK_START.match(carried[0]) and len(current) > 1:
                carried.insert(0, current.pop())  # no line may start a block: carry a word over
            if _BLOCK_START.match(carried[0]):
                current.extend(carried)  # nothing to carry: this line stays wider
            else:
                out.append(carried)
            continue
        current.append(word)
    return [(first if n == 0 else indent) + " ".join(words) for n, words in enumerate(out)]


def _kept(line: str) -> bool:
    """A line wrapping leaves alone: blank, heading, table row, HTML, maybe indented code."""
    stripped = line.lstrip(" ")
    return (not stripped or stripped.startswith(("#", "|", "<"))
            or (line.startswith("    ") and not _LIST_ITEM.match(line)))


#: A fence line, found after its line break (faster than `^` with re.M: the scripts are long).
_FENCE_LINE = re.compile(r"\n {0,3}(`{3,}|~{3,})([^\n]*)")


def wrap_markdown(text: str, width: int = REVIEW_WIDTH) -> str:
    """Paragraphs and list items with a line wider than `width` refilled; code, tables and headings kept.

    Values are code spans (one word however long), so a line may stay wider only when one
    value alone is. A refilled line never starts with what would start another block.
    Fenced code (most of REVIEW.md: the scripts) is found by its fence lines and copied whole.
    """
    out: list[str] = []
    pos, fence, opened = 0, "", 0
    for marker in _FENCE_LINE.finditer("\n" + text):  # offsets in `text`: line start, line end
        run, rest, start, end = marker.group(1), marker.group(2), marker.start(), marker.end() - 1
        if not fence:
            if run[0] == "`" and "`" in rest:
                continue  # not a fence (CommonMark): a code span at the start of a line
            out.append(_wrap_prose(text[pos:start], width))
            fence, opened = run, start
        elif run[0] == fence[0] and len(run) >= len(fence) and not rest.strip():
            out.append(text[opened:end])
            fence, pos = "", end
    out.append(text[opened:] if fence else _wrap_prose(text[pos:], width))
    return "".join(out)


def _wrap_prose(text: str, width: int) -> str:
    """`wrap_markdown` for text without fenced code."""
    lines = text.split("\n")
    if all(len(line) <= width for line in lines):
        return text
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _kept(line):
            out.append(line)
            i += 1
            continue
        block = [line]  # the block's continuation lines: not a new item or a kept line
        i += 1
        while (i < len(lines) and not _kept(lines[i]) and not _LIST_ITEM.match(lines[i])
               and not block[-1].endswith(("  ", "\\"))):
            block.append(lines[i])
            i += 1
        out.extend(_wrap_block(block, width) if any(len(b) > width for b in block) else block)
    return "\n".join(out)


def _markdown_finalize(value: Any) -> Any:
    if isinstance(value, Trusted):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return code_span(value)


def _ps_filter(value: Any) -> PowerShellLiteral:
    return quote(value)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Jinja's own cache of compiled templates, in the user's cache folder (0700).

    Compiling the templates is most of a cold `render`. Jinja stores each template's source
    checksum with its compiled code and recompiles when the source differs, so an upgraded
    or edited template is never served stale. Without a writable cache folder psbridge
    simply compiles every time.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "psbridge", f"jinja-{__version__}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not os.access(folder, os.W_OK) or os.stat(folder).st_uid != os.getuid():
            return None
    except OSError:
        return None
    return _QuietBytecodeCache(folder)


class _QuietBytecodeCache(jinja2.FileSystemBytecodeCache):
    """A cache that never makes a render fail: a full or read-only disk only costs time."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


class _TemplateLoader(jinja2.BaseLoader):
    """The package's templates/; a step's `steps/<id>/...` from its unit's own folder when it names one.

    A step's templates are found by convention (`templates/steps/<id>/`, see `Step.template`);
    a unit with `template_dir` (a step kept outside psbridge's tree) keeps its templates there.
    """

    def __init__(self, root: str) -> None:
        self._package = jinja2.FileSystemLoader(root)

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Any]:
        parts = template.split("/")
        if len(parts) == 3 and parts[0] == "steps":
            found = unit(parts[1])
            if found is not None and found.template_dir is not None:
                return jinja2.FileSystemLoader(str(found.template_dir)).get_source(environment, parts[2])
        return self._package.get_source(environment, template)


@cache
def _environments() -> tuple[jinja2.Environment, jinja2.Environment]:
    """Built once per process: compiling templates is most of a render's cost."""
    loader = _TemplateLoader(str(files("psbridge.templates")))
    common: dict[str, Any] = dict(
        loader=loader,
        bytecode_cache=_bytecode_cache(),
        auto_reload=False,  # package data does not change while psbridge runs: no stat() per template
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    ps_env = jinja2.Environment(finalize=_powershell_finalize, **common)
    ps_env.filters["ps"] = _ps_filter
    md_env = jinja2.Environment(finalize=_markdown_finalize, **common)
    md_env.filters["fence"] = fence
    return ps_env, md_env


def _crlf_bom(text: str) -> bytes:
    """Windows PowerShell 5.1 reads BOM-less files in the ANSI code page: UTF-8 with BOM, CRLF."""
    return BOM + text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


@dataclass(frozen=True)
class RenderedStep:
    step: Step
    text: str  # LF line endings, no BOM
    data: bytes  # as written: BOM + CRLF

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)


def _where(step: Step) -> str:
    return step.changes.split(":", 1)[0] if step.changes else ""


#: TOML bare keys (every key of the parameters model is one).
_TOML_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: What a TOML literal string ('…') cannot hold: the quote itself and control characters
#: (TOML 1.0 allows a raw tab, but a reader cannot see one: it is escaped too).
_TOML_NOT_LITERAL = re.compile(r"['\x00-\x1f\x7f]")
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML string that reads back as exactly `value`.

    A literal string ('C:\\x' shows the backslash as it is) whenever TOML allows one; for a
    value with an apostrophe or a control character, a basic string with TOML's escapes.
    """
    if not _TOML_NOT_LITERAL.search(value):
        return f"'{value}'"
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _TOML_BARE_KEY.fullmatch(key) else toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        items = [_toml_value(v) for v in value]
        if len(items) <= 1:
            return f"[{''.join(items)}]"
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def canonical_toml(data: dict[str, Any], _path: tuple[str, ...] = ()) -> str:
    """`data` (strings, booleans, integers, lists, tables) as TOML: keys before tables."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            path = (*_path, _toml_key(key))
            body = canonical_toml(table, path)
            lines.append(f"\n[{'.'.join(path)}]" + (f"\n{body}" if body else ""))
    return "\n".join(lines).lstrip("\n")


def _parameters_toml(params: Parameters) -> str:
    """The parameters as REVIEW.md shows them: canonical TOML of exactly what plan.json records.

    Built from the values (not the file the user wrote, whose comments and layout differ),
    so that `tomllib.loads` of the block gives plan.json's `parameters`.
    """
    return canonical_toml(params.model_dump(mode="json", exclude_none=True))


def render_steps(params: Parameters, certificate: dict[str, Any] | None = None) -> list[RenderedStep]:
    """Each step of the profile's catalogue, rendered from its own template.

    `certificate`: the facts of the checked local certificate copy
    (`certificates.PlanCertificate.facts()`), or None when the parameters name none.
    """
    return _render_steps(params, certificate, layout_for(params))


def _render_steps(params: Parameters, certificate: dict[str, Any] | None, layout: Layout) -> list[RenderedStep]:
    """`render_steps` with the catalogue's facts already taken (`render_package` takes them once)."""
    ps_env, _ = _environments()
    steps = layout.steps
    shared = {"p": params, "c": layout.constants, "cert": certificate, "renewal": layout.renewal,
              "n": _numbers(steps)}
    out = []
    for step in steps:
        text = ps_env.get_template(step.template(params.profile)).render(step=step, header=_header(step, steps),
                                                                         **shared)
        out.append(RenderedStep(step, text, _crlf_bom(text)))
    return out


def _numbers(steps: tuple[Step, ...]) -> dict[str, Trusted]:
    """Each step's number by id (`{"spn": "06"}`): what the texts say, since a renewal renumbers the steps."""
    return {s.id: Trusted(f"{s.index:02d}") for s in steps}


def _header(step: Step, steps: tuple[Step, ...]) -> Trusted:
    """A step's first line, `# psbridge step 06/08: spn - <title>`: the marker a transcript and the
    tests find it by. A step that runs on the additional servers has no "of N" (it is not part of
    the main server's count)."""
    last = max(s.index for s in steps if s.runs_on == "main")
    label = f"{step.index:02d}/{last:02d}" if step.runs_on == "main" else f"{step.index:02d}"
    return Trusted(f"# psbridge step {label}: {step.id} - {step.title}")


def _setup_pause(main: list[dict[str, Any]], elsewhere: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where setup.ps1 stops for the additional servers: before the first main step after theirs.

    Only a renewal orders a main step after the additional servers' step (the switch waits for
    every server to hold the certificate); a first setup runs that step after setup.ps1.
    """
    if not elsewhere:
        return None
    farm = elsewhere[0]["index"]
    after = [v["index"] for v in main if v["index"] > farm]
    if not after:
        return None
    return {"farm": farm, "before": after[0],
            "message": f"Now run {elsewhere[0]['file']} on each additional server (see the end of this script), "
                       f"then continue with:  .\\setup.ps1 -FromStep {after[0]}"}


def _render_probes(params: Parameters, layout: Layout) -> dict[str, bytes]:
    """The read-only probe scripts of `psbridge check`, rendered into the package for review."""
    ps_env, _ = _environments()
    out = {}
    for name in layout.probes:
        text = ps_env.get_template(f"probes/{name}.ps1.j2").render(p=params, c=layout.constants,
                                                                    modules=layout.modules)
        out[probe_file(name)] = _crlf_bom(text)
    return out


def _changes_state_text(step: Step) -> str:
    """REVIEW.md's "Changes state" line: a session step that can change something says when."""
    if step.changes_state:
        return "yes"
    if step.changes:  # msonline step 03: Enable-PSRemoting, only in a local window
        return ("only when a person runs it locally and WinRM does not answer (see \"What changes\"); "
                "over `psbridge run` it changes nothing. It is a session step, not a change: resuming "
                "(`setup.ps1 -FromStep N`, `psbridge run --from-step N`) runs it again for its imports, "
                "and it leaves WinRM alone once WinRM answers.")
    return "no"


def _step_view(rendered: RenderedStep, layout: Layout) -> dict[str, Any]:
    s, total, thresholds = rendered.step, len(layout.steps), layout.thresholds
    label = f"{s.index:02d}/{total:02d} {s.id}"
    return {
        "index": s.index,
        "id": s.id,
        "label": label,
        "threshold": thresholds[s.index],
        "banner": f"==> [{s.index:02d}/{total:02d}] {s.id}: {s.title}",
        # sha256sum's form, so that a transcript line can be compared with `sha256sum -c` input.
        "hash_line": f"    sha256 {rendered.sha256}  {s.file}",
        "text": Trusted(rendered.text.rstrip("\n")),
        "heading": Trusted(f"{label}"),
        "title": Trusted(s.title),
        "file": s.file,
        "sha256": rendered.sha256,
        "changes": Trusted(s.changes.split(": ", 1)[1]) if s.changes else "",
        "where": Trusted(_where(s)),
        "changes_state_text": Trusted(_changes_state_text(s)),
        "kind_session": s.kind == "session",
        "inputs": ", ".join(layout.entries[s.index]["inputs"]),
        "runs_on": s.runs_on,
        "payload": [],  # filled by `_with_payload` for a step that takes the package's payload files
    }


def _with_payload(view: dict[str, Any], step: Step, payload: PayloadView) -> dict[str, Any]:
    """A step view with the payload files the step takes, which setup.ps1 reads, checks and passes."""
    if step.payload and payload.setup:  # an ACS package carries no payload: its steps take none
        view["payload"] = [{**payload.setup[name], "parameter": Trusted(payload.setup[name]["parameter"])}
                           for name in step.payload]
    return view


@dataclass(frozen=True)
class Rendered:
    """A rendered package in memory: its name and each file's relative POSIX path -> exact bytes."""

    name: str
    files: dict[str, bytes]


def plan_json_bytes(plan: Mapping[str, object]) -> bytes:
    """plan.json: one top-level key per line, then one entry (a table, a step, a probe) per line.

    Readable and diff-friendly for a reviewer, and each value is encoded by the json
    module's C encoder (`indent=` would switch to the pure-Python one, the slowest part
    of a render).
    """
    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    lines = []
    for key, value in plan.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"    {dump(v)}" for v in value)
            lines.append(f"  {dump(key)}: [\n{items}\n  ]")
        elif isinstance(value, dict) and value:
            items = ",\n".join(f"    {dump(k)}: {dump(v)}" for k, v in value.items())
            lines.append(f"  {dump(key)}: {{\n{items}\n  }}")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


def render_package(params: Parameters, certificate: dict[str, Any] | None = None,
                   replaced: dict[str, Any] | None = None, payload: Payload | None = None) -> Rendered:
    """The whole package in memory: step files, probes, setup.ps1, REVIEW.md and plan.json.

    `replaced`: a renewal's facts of the certificate it replaces (`certificates.replaced_certificate`),
    or None. `payload`: an app package's MSAL files (`payload.payload_for`, or `payload_from_files`
    when a package is re-rendered); its files go into payload/ as they are, plan.json records
    each file's facts, REVIEW.md shows them. Required for trust = "app", refused otherwise.
    """
    _check_renewal_facts(params, certificate, replaced)
    shipped = payload_view(params, payload)
    ps_env, md_env = _environments()
    layout = layout_for(params)
    steps = layout.steps
    rendered = _render_steps(params, certificate, layout)
    views = [_with_payload(_step_view(r, layout), r.step, shipped) for r in rendered]
    probes = _render_probes(params, layout)
    # setup.ps1 runs on the main server; a farm's step 09 runs on each additional server.
    main_views = [v for v in views if v["runs_on"] == "main"]
    elsewhere = [v for v in views if v["runs_on"] != "main"]
    # setup.ps1 is inside the package digest (and plan.json records its sha256), so it cannot
    # print that digest; it prints the digest of the step files, which do not depend on it.
    steps_digest = digest_of(listing_of({r.step.file: r.data for r in rendered}))
    setup_text = ps_env.get_template("setup.ps1.j2").render(
        p=params, steps=main_views, elsewhere=elsewhere, version=Trusted(__version__), steps_digest=steps_digest,
        last_index=max(v["index"] for v in main_views), pause=_setup_pause(main_views, elsewhere),
        renewal=layout.renewal, n=_numbers(steps))
    setup = _crlf_bom(setup_text)
    lock = _crlf_bom(ps_env.get_template(f"{LOCK_SCRIPT}.j2").render(p=params))
    signout = {SIGNOUT_SCRIPT: signout_bytes()} if params.profile == "graph" else {}
    backouts = layout.backouts
    numbers = _numbers(steps)
    rollback = {b.script: _crlf_bom(ps_env.get_template(b.template(params.profile)).render(
                    p=params, c=layout.constants, n=numbers))
                for b in backouts if b.script}
    review = wrap_markdown(md_env.get_template("REVIEW.md.j2").render(
        p=params,
        c=layout.constants,
        steps=views,
        version=__version__,
        setup_sha256=sha256_hex(setup),
        steps_digest=steps_digest,
        script_hashes=Trusted("\n".join(
            f"{sha256_hex(data)}  {rel}" for rel, data in
            [("setup.ps1", setup), *((r.step.file, r.data) for r in rendered), *probes.items(), (LOCK_SCRIPT, lock),
             *signout.items(), *sorted(shipped.files.items())]
        )),
        tenant_host=(urlsplit(params.sharepoint.sites[0]).hostname or "").lower(),
        parameters_toml=_parameters_toml(params),
        non_ascii=[{"key": key, "value": value, "points": ", ".join(points)}
                   for key, value, points in non_ascii_values(flatten(params.model_dump(mode="json",
                                                                                     exclude_none=True)))],
        cert=certificate,
        renewal=_renewal_review(params, layout, certificate, replaced),
        n=numbers,
        main_range=Trusted(_ranges([s.index for s in steps if s.runs_on == "main"])),
        probes=[_shown(f, b) for f, b in probes.items()],
        lock=_shown(LOCK_SCRIPT, lock),
        signout=_shown(SIGNOUT_SCRIPT, signout[SIGNOUT_SCRIPT]) if signout else None,
        backout=[{"step": next(v for v in views if v["id"] == b.step_id), "manual": Trusted(b.manual),
                  "script": _shown(b.script, rollback[b.script]) if b.script else None} for b in backouts],
        irreversible=Trusted(IRREVERSIBLE),
        acs={"quote": Trusted(ACS_RETIREMENT), "date": ACS_RETIRED_ON, "page": ACS_RETIREMENT_PAGE},
        risks=[{"brief": Trusted(r.title), "markdown": risk_markdown(r)}
               for r in package_risks(params, layout.constants, numbers)],
        payload=shipped.review,
    )).encode("utf-8")
    plan: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "tool": "psbridge",
        "tool_version": __version__,
        "name": params.name,
        "profile": params.profile,
        "parameters": params.model_dump(mode="json", exclude_none=True),
        "constants": layout.constants,
        **({"certificate": certificate} if certificate is not None else {}),
        **({"replaced_certificate": replaced} if replaced is not None else {}),
        "files": {"setup.ps1": sha256_hex(setup), "REVIEW.md": sha256_hex(review), LOCK_SCRIPT: sha256_hex(lock),
                  **{rel: sha256_hex(data) for rel, data in signout.items()}},
        "steps": [_plan_step(r, layout.entries[r.step.index]) for r in rendered],
        "probes": [{"id": name, "file": probe_file(name), "sha256": sha256_hex(probes[probe_file(name)])}
                   for name in layout.probes],
        "rollback": [{"step": b.step_id, "file": b.script, "sha256": sha256_hex(rollback[b.script])}
                     for b in backouts if b.script],
        **({"payload": shipped.facts} if shipped.facts else {}),
    }
    files_out = {r.step.file: r.data for r in rendered}
    files_out.update(probes)
    files_out["setup.ps1"] = setup
    files_out[LOCK_SCRIPT] = lock
    files_out.update(signout)
    files_out.update(rollback)
    files_out.update(shipped.files)
    files_out["REVIEW.md"] = review
    files_out["plan.json"] = plan_json_bytes(plan)
    return Rendered(name=params.name, files=files_out)


@cache
def signout_bytes() -> bytes:
    """A graph package's signout.ps1 (issue 19 item 2): Disconnect-MgGraph, sent last by run, check and rollback.

    Rendered here, into the package, so that the sign-out is hashed, approved and sent like
    lock.ps1: `graph_signout` sends the verified package's bytes, never this template again.
    """
    ps_env, _ = _environments()  # the template has no values: the same text in every graph package
    return _crlf_bom(ps_env.get_template("shared/graph/_disconnect.ps1.j2").render())


def _check_renewal_facts(params: Parameters, certificate: dict[str, Any] | None,
                         replaced: dict[str, Any] | None) -> None:
    """Refuse facts that contradict `replaces` (render checks the files; a package re-renders plan.json's facts).

    REVIEW.md shows them to the board: a plan.json whose replaced certificate is another one, or
    whose own certificate is the replaced one, must not render into a review that looks right.
    """
    replaces = (params.certificate.replaces or "").upper()
    if replaced is not None and str(replaced.get("thumbprint") or "").upper() != replaces:
        raise ValueError("the replaced certificate's facts are not of certificate.replaces")
    if replaces and certificate is not None and str(certificate.get("thumbprint") or "").upper() == replaces:
        raise ValueError("the package's own certificate is the one certificate.replaces names")


def _ranges(indexes: list[int]) -> str:
    """`01–08`, or `01–05, 07–11` when a step of another server sits between."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]:02d}–{r[-1]:02d}" if len(r) > 1 else f"{r[0]:02d}" for r in runs)


def _renewal_review(params: Parameters, layout: Layout, certificate: dict[str, Any] | None,
                    replaced: dict[str, Any] | None) -> dict[str, Any] | None:
    """REVIEW.md's renewal section: which certificate is replaced, until when, and the order."""
    if not layout.renewal:
        return None
    label = {s.id: f"{s.index:02d} {s.id}" for s in layout.steps}
    return {"replaces": str(params.certificate.replaces).upper(), "replaced": replaced, "new": certificate,
            "label": label, "farm": "additional-servers" in label}


def _shown(rel: str, data: bytes) -> dict[str, Any]:
    """A script as REVIEW.md shows it: its file, sha256 and text (BOM and CR removed)."""
    return {"file": rel, "heading": Trusted(rel), "sha256": sha256_hex(data), "text": Trusted(data[3:].decode("utf-8").replace("\r\n", "\n"))}


def _plan_step(rendered: RenderedStep, entry: dict[str, Any]) -> dict[str, Any]:
    """A step's plan.json entry: the catalogue's facts (`entry`) with the file's sha256 after `file`."""
    ordered = {k: entry[k] for k in ("index", "id", "title", "file")}
    return {**ordered, "sha256": rendered.sha256, **entry}
