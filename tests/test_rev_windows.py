"""A Windows PowerShell 5.1 review of the scripts: what the server would really do, checked on the parsed script.

Step 01's execution-policy refusals are read from the rendered script with the PowerShell grammar
(tests/support/pwsh_grammar.py) and evaluated as PowerShell evaluates them (-and and -or have one
precedence, left to right; about_Operator_Precedence), so the test judges the script's own logic, not its text.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from typing import Any

import pytest
from tree_sitter import Node

from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import THUMB, state
from support.pwsh_grammar import parse, syntax_errors, walk

NOW = _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)

# (policy, signature status, publisher in Trusted Publishers, marked downloaded) -> refused?
# Windows PowerShell 5.1 (PSAuthorizationManager): under Unrestricted a file from the internet zone runs
# without a prompt when its signature is valid and its publisher trusted; otherwise it is asked about
# (about_Execution_Policies: "If you run an unsigned script that was downloaded from the internet, you're
# prompted for permission before it runs"), and a remote session cannot answer.
POLICY_CASES = [
    ("Restricted", "NotSigned", False, False, True),
    ("AllSigned", "Valid", False, False, True),
    ("AllSigned", "Valid", True, True, False),
    ("RemoteSigned", "NotSigned", False, True, True),
    ("RemoteSigned", "Valid", False, True, True),
    ("RemoteSigned", "Valid", True, True, False),
    ("RemoteSigned", "NotSigned", False, False, False),
    ("Unrestricted", "NotSigned", False, True, True),
    ("Unrestricted", "Valid", False, True, True),
    ("Unrestricted", "Valid", True, True, False),
    ("Unrestricted", "NotSigned", False, False, False),
    ("Bypass", "NotSigned", False, True, False),
]


def _files(profile: str) -> dict[str, bytes]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    return render_package(parse_parameters(data)).files


def _unwrap(node: Node) -> Node:
    """The one meaningful node under the grammar's chain of single-child precedence levels."""
    while node.named_child_count == 1 and node.type not in ("variable", "string_literal", "array_expression",
                                                                  "expression_with_unary_operator"):
        node = node.named_children[0]
    return node


def _value(node: Node, env: dict[str, Any]) -> Any:
    """A PowerShell expression of step 01's policy conditions, evaluated (only the forms they use)."""
    node = _unwrap(node)
    kids = node.children
    if node.type == "variable":
        return env[node.text.decode()[1:]]
    if node.type == "string_literal":
        return node.text.decode()[1:-1]
    if node.type == "array_expression":
        items = [n for n in walk(node) if n.type == "string_literal"]
        return [n.text.decode()[1:-1] for n in items]
    if node.type == "parenthesized_expression":
        return _value(node.named_children[0], env)
    if node.type == "expression_with_unary_operator" and kids[0].type == "-not":
        return not _value(kids[1], env)
    if node.type == "logical_expression" and len(kids) == 3:
        left, op, right = kids
        if op.type == "-and":
            return bool(_value(left, env)) and bool(_value(right, env))
        if op.type == "-or":
            return bool(_value(left, env)) or bool(_value(right, env))
    if node.type == "comparison_expression" and len(kids) == 3:
        left, op, right = _value(kids[0], env), kids[1].text.decode().lower(), _value(kids[2], env)
        if op == "-eq":
            return str(left).lower() == str(right).lower()
        if op == "-ne":
            return str(left).lower() != str(right).lower()
        if op == "-notcontains":
            return str(right).lower() not in [str(v).lower() for v in left]
    raise AssertionError(f"not evaluated here: {node.type} {node.text.decode()!r}")


def _policy_chain(text: str) -> list[Node]:
    """The conditions of step 01's if/elseif chain that sets $Blocked (the execution-policy refusals)."""
    root = parse(text).root_node
    [chain] = [n for n in walk(root) if n.type == "if_statement" and n.children[2].type == "pipeline"
               and "$ExecutionPolicy -eq 'AllSigned'" in n.children[2].text.decode()]
    conditions = [chain.children[2]]
    for clause in walk(chain):
        if clause.type == "elseif_clause":
            conditions.append(clause.children[2])
    assert all(c.type == "pipeline" for c in conditions)
    return conditions


@pytest.mark.parametrize("profile", ["msonline", "graph"])
@pytest.mark.parametrize("policy,status,trusted,downloaded,blocked", POLICY_CASES)
def test_step_01_refuses_exactly_what_the_execution_policy_refuses(
        profile: str, policy: str, status: str, trusted: bool, downloaded: bool, blocked: bool) -> None:
    text = _files(profile)["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    conditions = _policy_chain(text)
    assert len(conditions) == 3
    # The chain runs only when the policy is not Bypass (the enclosing if); Bypass is never refused.
    env = {"ExecutionPolicy": policy, "Trusted": trusted, "Downloaded": downloaded}
    refused = policy != "Bypass" and any(_value(c, env) for c in conditions)
    assert refused is blocked, (policy, status, trusted, downloaded)


@pytest.mark.parametrize("policy,status,trusted,downloaded,blocked", POLICY_CASES)
def test_check_judges_the_execution_policy_as_step_01_does(
        policy: str, status: str, trusted: bool, downloaded: bool, blocked: bool) -> None:
    answers = state("fresh server")
    answers["server"] = dict(answers["server"], execution_policy=policy, script_signature=status,
                             script_trusted=trusted, script_downloaded=downloaded)
    plan = json.loads(_files("msonline")["plan.json"])
    plan["certificate"] = {"thumbprint": THUMB}
    got = {v.id: v for v in evaluate(plan, answers, now=NOW).verdicts}["prerequisites"]
    assert got.verdict == ("blocked" if blocked else "ok"), got.detail
