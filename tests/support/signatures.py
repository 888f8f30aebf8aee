"""The PowerShell 5.1 command-signature checker: the command table (tests/data/commands.json), script-defined
functions, and `check_script`, which lists every finding in a rendered script.

test_signatures.py documents the rules and tests the checker; other test modules check their own scripts with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from support.pwsh_grammar import (
    FunctionDefinition,
    Invocation,
    code_only,
    command_invocations,
    function_definitions,
    hashtable_keys,
    string_values,
    variable_assignments,
)

DATA = json.loads((Path(__file__).parent.parent / "data" / "commands.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the command table


@dataclass
class Param:
    name: str
    aliases: tuple[str, ...]
    common: bool  # a common or risk-mitigation parameter (loses a prefix tie to a declared one)
    switch: bool


@dataclass
class Command:
    name: str
    data: dict[str, Any]
    params: dict[str, Param] = field(default_factory=dict)  # lower-case name -> Param

    @property
    def documented(self) -> bool:
        return self.data.get("source") is not None

    def sets(self) -> list[dict[str, Any]]:
        return self.data["parameter_sets"]


COMMON = DATA["common_parameters"]


def build_command(name: str, data: dict[str, Any]) -> Command:
    """`data["common_parameters"]`: True (default) has them, False has none (a simple function), None unknown."""
    cmd = Command(name, data)
    aliases = {k.lower(): tuple(v) for k, v in data.get("aliases", {}).items()}
    for s in data["parameter_sets"]:
        for p in s["parameters"]:
            key = p["name"].lower()
            if key not in cmd.params:
                cmd.params[key] = Param(p["name"], aliases.get(key, ()), p["name"] in ("WhatIf", "Confirm"),
                                        bool(p.get("switch")))
    if data.get("common_parameters", True) is True:
        for common, al in COMMON["parameters"].items():
            cmd.params.setdefault(common.lower(), Param(common, tuple(al), True, common in ("Verbose", "Debug")))
    return cmd


@cache
def commands() -> dict[str, Command]:
    return {name.lower(): build_command(name, data) for name, data in DATA["commands"].items()}


# --------------------------------------------------------------------------- functions defined in the script
# PowerShell's rules (Windows PowerShell 5.1 reference, reference/5.1/Microsoft.PowerShell.Core/About/:
# about_Functions_Advanced_Parameters, about_Functions_CmdletBindingAttribute, about_CommonParameters; the
# engine's Compiler.GetParameterMetaData / GetRuntimeDefinedParameter for the exact position rule):
# - [CmdletBinding()] or any [Parameter()] makes an advanced function: it has the common parameters, and
#   SupportsShouldProcess adds -WhatIf and -Confirm. A simple function has neither; a -Name it does not
#   declare lands in $args instead of failing, which is not what a caller naming a parameter means, so it
#   is reported like an unknown parameter of a cmdlet.
# - A parameter is in the sets its [Parameter(ParameterSetName = ...)] attributes name; one without a set
#   name is in every set (__AllParameterSets when no set is named).
# - Positions: Position = n where given. When no parameter gives a Position or a ParameterSetName (and
#   PositionalBinding is not $false), every parameter except a switch gets the next position (0, 1, ...)
#   in declaration order.
# - Mandatory: [Parameter(Mandatory)], Mandatory = $true; pipeline: ValueFromPipeline(ByPropertyName).

RISK_MITIGATION = {"WhatIf": ["wi"], "Confirm": ["cf"]}  # about_CommonParameters


def script_command(fn: FunctionDefinition) -> Command:
    """The command a script-defined function is, in the shape of a commands.json entry."""
    advanced = fn.cmdlet_binding is not None or any(p.attributes for p in fn.parameters)
    binding = fn.cmdlet_binding or {}
    attrs = {p.name: (p.attributes or ({},)) for p in fn.parameters}
    named_sets = sorted({a["ParameterSetName"] for al in attrs.values() for a in al  # type: ignore[misc]
                         if isinstance(a.get("ParameterSetName"), str) and a["ParameterSetName"] != "__AllParameterSets"})
    custom = any("Position" in a or "ParameterSetName" in a for al in attrs.values() for a in al)
    automatic = not custom and binding.get("PositionalBinding", True) is not False
    auto_position: dict[str, int] = {}
    if automatic:
        for p in fn.parameters:
            if not p.switch:
                auto_position[p.name] = len(auto_position)
    sets = []
    for set_name in named_sets or ["__AllParameterSets"]:
        params = []
        for p in fn.parameters:
            here = [a for a in attrs[p.name] if a.get("ParameterSetName", "__AllParameterSets") in (set_name, "__AllParameterSets")]
            if not here:
                continue
            a = next((a for a in here if a.get("ParameterSetName") == set_name), here[0])
            mandatory = a.get("Mandatory", False)
            position = a.get("Position", auto_position.get(p.name))
            entry: dict[str, Any] = {
                "name": p.name,
                "mandatory": None if mandatory is None else bool(mandatory),
                "position": position if isinstance(position, int) and not isinstance(position, bool) else None,
                "pipeline": bool(a.get("ValueFromPipeline") or a.get("ValueFromPipelineByPropertyName")),
            }
            if p.switch:
                entry["switch"] = True
            params.append(entry)
        if binding.get("SupportsShouldProcess"):
            params += [{"name": n, "mandatory": False, "position": None, "pipeline": False, "switch": True}
                       for n in RISK_MITIGATION]
        entry_set: dict[str, Any] = {"name": set_name, "parameters": params}
        if binding.get("DefaultParameterSetName") == set_name:
            entry_set["default"] = True
        sets.append(entry_set)
    aliases = {p.name: list(p.aliases) for p in fn.parameters if p.aliases}
    if binding.get("SupportsShouldProcess"):
        aliases.update(RISK_MITIGATION)
    data = {"kind": "function (advanced)" if advanced else "function (simple)",
            "source": f"defined in this script, line {fn.line}", "common_parameters": advanced,
            "aliases": aliases, "parameter_sets": sets}
    return build_command(fn.name, data)


def script_function(functions: list[FunctionDefinition], name: str, inv: Invocation) -> FunctionDefinition | None:
    """The script's own definition `name` resolves to at `inv`: of those visible there, the last one that
    starts before the call, else the first (which then runs too late)."""
    visible = [f for f in functions if f.name.lower() == name.lower()
               and (f.scope is None or f.scope[0] <= inv.start_byte < f.scope[1])]
    before = [f for f in visible if f.start_byte < inv.start_byte]
    return before[-1] if before else (visible[0] if visible else None)


def resolve(cmd: Command, written: str) -> tuple[Param | None, str]:
    """The parameter `-written` binds to, or (None, why): PowerShell's
    MergedCommandParameterMetadata.GetMatchingParameter. An exact name or alias wins; otherwise every
    parameter with a name or alias starting with `written` matches; of several, a single declared
    (non-common) one wins, else the prefix is ambiguous."""
    w = written.lower()
    for p in cmd.params.values():
        if w == p.name.lower() or w in (a.lower() for a in p.aliases):
            return p, ""
    matches = [p for p in cmd.params.values() if p.name.lower().startswith(w) or any(a.lower().startswith(w) for a in p.aliases)]
    if len(matches) > 1:
        declared = [p for p in matches if not p.common]
        if len(declared) == 1:
            return declared[0], ""
        return None, "ambiguous prefix: matches " + ", ".join("-" + p.name for p in sorted(matches, key=lambda p: p.name))
    if matches:
        return matches[0], ""
    if w in (n.lower() for n in COMMON.get("not_in_windows_powershell_5_1", {})):
        return None, "not a parameter in Windows PowerShell 5.1 (added in PowerShell 7.4)"
    if cmd.data.get("common_parameters", True) is None and w in (n.lower() for n in COMMON["parameters"]):
        return None, "common parameter, but whether the script has [CmdletBinding] is not documented"
    if cmd.data.get("common_parameters", True) is False and any(
            n.lower().startswith(w) or any(a.lower().startswith(w) for a in al) for n, al in COMMON["parameters"].items()):
        return None, "no such parameter: a simple function (no [CmdletBinding()] or [Parameter()]) has no common parameters"
    return None, "no such parameter"


# --------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    command: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.command}: {self.problem}"


def script_path_for(text: str, variable: str) -> str | None:
    """The .ps1 file name `$variable` is assigned in `text` (a literal path, or Combine/Join-Path of literals)."""
    for value in variable_assignments(text, variable):
        names = [s for s in string_values(value) if s.lower().endswith(".ps1")]
        if names:
            return re.split(r"[\\/]", names[-1])[-1]
    return None


def command_name(inv: Invocation, text: str) -> tuple[str | None, str]:
    """The listed command an invocation runs, or (None, why)."""
    if inv.name_kind == "name":
        name = inv.name
        if name.lower().endswith(".ps1"):
            name = re.split(r"[\\/]", name)[-1]
        return name, ""
    if inv.name_kind == "variable":
        resolved = script_path_for(text, inv.name)
        if resolved is None:
            return None, f"cannot resolve '{inv.operator} ${inv.name}' to a script: no literal .ps1 path is assigned to ${inv.name}"
        return resolved, ""
    if inv.name_kind == "string":
        value = inv.name.strip("'\"")
        return re.split(r"[\\/]", value)[-1], ""
    return None, f"cannot tell which command '{inv.name}' invokes"


def check_invocation(inv: Invocation, text: str, file: str, functions: list[FunctionDefinition] | None = None) -> list[Finding]:
    name, why = command_name(inv, text)
    if name is None:
        return [Finding(file, inv.line, inv.name, why)]
    out: list[Finding] = []
    fn = script_function(functions or [], name, inv) if inv.name_kind in ("name", "string") else None
    if fn is not None:
        cmd = script_command(fn)
        if fn.start_byte > inv.start_byte and fn.scope is None and not inv.deferred:
            out.append(Finding(file, inv.line, cmd.name, f"called before its definition on line {fn.line} has run"))
    else:
        cmd = commands().get(name.lower())
        if cmd is None:
            return [Finding(file, inv.line, name, "unknown command: not in tests/data/commands.json nor defined in this script")]
    label = cmd.name
    if not cmd.documented:
        out.append(Finding(file, inv.line, label, "no documented signature (commands.json: source null, see its note)"))

    bound: dict[str, int] = {}  # parameter name -> line
    positional: list[int] = []
    elements = list(inv.elements)
    i = 0
    while i < len(elements):
        el = elements[i]
        if el.kind == "parameter":
            param, problem = resolve(cmd, el.text)
            if param is None:
                out.append(Finding(file, el.line, label, f"-{el.text}: {problem}"))
            elif param.name in bound:
                out.append(Finding(file, el.line, label, f"-{el.text}: -{param.name} is given more than once"))
            else:
                bound[param.name] = el.line
            takes_value = el.colon or param is None or not param.switch
            if el.colon or (takes_value and i + 1 < len(elements) and elements[i + 1].kind == "argument"):
                i += 1
        elif el.kind == "splat":
            keys = hashtable_keys(text, el.text)
            if keys is None:
                out.append(Finding(file, el.line, label, f"@{el.text}: no literal hashtable is assigned to ${el.text} in this script"))
            else:
                for key in keys:
                    param, problem = resolve(cmd, key)
                    if param is None:
                        out.append(Finding(file, el.line, label, f"@{el.text} key '{key}': {problem}"))
                    else:
                        bound[param.name] = el.line
        else:
            positional.append(el.line)
        i += 1
    if label.lower() == "foreach-object" and any(e.kind == "parameter" and e.text.lower() == "parallel" for e in elements):
        out.append(Finding(file, inv.line, label, "-Parallel: ForEach-Object -Parallel is PowerShell 7 only"))
    if any(f.problem.startswith("-") or f.problem.startswith("@") for f in out):
        return out  # the set check would only repeat the parameter problem
    out += check_sets(cmd, bound, len(positional), inv, file)
    return out


def check_sets(cmd: Command, bound: dict[str, int], n_positional: int, inv: Invocation, file: str) -> list[Finding]:
    """Some parameter set holds every bound parameter, takes the positional arguments and has its mandatory ones."""
    common = {p.name for p in cmd.params.values() if p.common and p.name not in ("WhatIf", "Confirm")}
    reasons = []
    for s in cmd.sets():
        names = {p["name"] for p in s["parameters"]}
        outside = sorted(n for n in bound if n not in names and n not in common)
        if outside:
            reasons.append(f"set {s['name']}: has no " + ", ".join("-" + n for n in outside))
            continue
        slots = sorted((p for p in s["parameters"] if p["position"] is not None and p["name"] not in bound),
                       key=lambda p: p["position"])
        if n_positional > len(slots):
            reasons.append(f"set {s['name']}: {n_positional} positional argument(s), {len(slots)} position(s) free")
            continue
        supplied = set(bound) | {p["name"] for p in slots[:n_positional]}
        missing = []
        for p in s["parameters"]:
            required = p["mandatory"] is True or p.get("article_required") is True
            if not required or p["name"] in supplied:
                continue
            if p["pipeline"] and not inv.first_in_pipeline:
                continue
            missing.append("-" + p["name"] + (" (the article calls it required)" if p["mandatory"] is None else ""))
        if missing:
            reasons.append(f"set {s['name']}: mandatory " + ", ".join(missing) + " not supplied")
            continue
        return []
    return [Finding(file, inv.line, cmd.name, "no parameter set fits: " + "; ".join(reasons))]


PS7_ONLY = [
    (re.compile(r"\?\?="), "'??=' (null-coalescing assignment, PowerShell 7)"),
    (re.compile(r"\?\?"), "'??' (null-coalescing operator, PowerShell 7)"),
    (re.compile(r"\?\."), "'?.' (null-conditional member access, PowerShell 7)"),
    (re.compile(r"\?\["), "'?[]' (null-conditional index, PowerShell 7)"),
    (re.compile(r"&&"), "'&&' (pipeline chain operator, PowerShell 7)"),
    (re.compile(r"\|\|"), "'||' (pipeline chain operator, PowerShell 7)"),
    (re.compile(r"(?i)(?:^|[\s;}])(clean)\s*\{"), "'clean { }' block (PowerShell 7.3)"),
]
# A '?' that is not the Where-Object alias (which stands where a command starts) is the ternary operator.
TERNARY = re.compile(r"(?<=[\w)\]}'\"$])\s+\?\s+[^{]")


def syntax_findings(text: str, file: str) -> list[Finding]:
    code = code_only(text)
    out: list[Finding] = []
    taken: set[int] = set()
    for pattern, what in PS7_ONLY:
        for m in pattern.finditer(code):
            start = m.start(1) if m.groups() else m.start()
            if start in taken:
                continue
            taken.update(range(start, m.end()))
            out.append(Finding(file, code.count("\n", 0, start) + 1, "(syntax)", what))
    for m in TERNARY.finditer(code):
        q = code.index("?", m.start())
        if q not in taken:
            out.append(Finding(file, code.count("\n", 0, q) + 1, "(syntax)", "'? :' (ternary operator, PowerShell 7)"))
    return out


def check_script(text: str, file: str) -> list[Finding]:
    text = normalized(text)
    out = syntax_findings(text, file)
    functions = function_definitions(text)
    for fn in functions:
        out += [Finding(file, fn.line, fn.name, f"declaration: {problem}") for problem in fn.problems]
    for inv in command_invocations(text):
        out += check_invocation(inv, text, file, functions)
    return sorted(out, key=lambda f: (f.line, f.command, f.problem))


def normalized(text: str) -> str:
    return text.lstrip("\ufeff").replace("\r\n", "\n")
