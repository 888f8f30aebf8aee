"""The T-SQL templates (templates/sql) and the PowerShell partial that runs them.

Every rendered T-SQL text is parsed with sqlfluff's T-SQL grammar and must parse whole, as the
PowerShell grammar does for the scripts. sqlfluff is lenient in one way that matters: T-SQL lets a
batch call a stored procedure without EXEC, so the grammar reads any unknown word at the start of a
statement (a typo such as `SELEC`, a malformed `THROW`, `END TRY` without its CATCH) as a procedure
call, `execute_script_statement`. These templates call no procedure, so such a segment is a failure.
Structure is then asserted on the parse tree: what runs inside the TRY block, that the CATCH block
rolls back and re-throws, and that values reach SQL only as @parameters the partial declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import jinja2
import pytest
from sqlfluff.core import Linter
from sqlfluff.core.parser.segments.base import BaseSegment

from psbridge.render import _environments
from support.pwsh_grammar import code_only, command_invocations, parse, syntax_errors, walk

TEMPLATES = Path(str(files("psbridge.templates")))
SQL_NAMES = sorted(f"sql/{p.name}" for p in (TEMPLATES / "sql").glob("*.sql.j2"))
CHANGE = "sql/partner-applications.sql.j2"
ROLLBACK = "sql/partner-applications-rollback.sql.j2"
READ = "sql/partner-applications-read.sql.j2"
RIGHTS = "sql/partner-applications-rights.sql.j2"
PARTIAL = "sql/_invoke-sql.ps1.j2"
GUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)

#: Values a step would set (tenant, client id, the catalogue's constants); hostile ones below.
VALUES = {
    "TenantId": "9d3c2b1a-0000-4000-8000-00000000aaaa",
    "ClientId": "11111111-2222-3333-4444-555555555555",
    "SharePointAppId": "38616d01-8e81-42dd-82fb-b68f2cecac3a",
    "SharePointPrincipalId": "00000003-0000-0ff1-ce00-000000000000",
    "ApplicationName": "Microsoft SharePoint Online",
    "MicrosoftRow": "updated",
    "OldTenantId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "CustomerRow": "inserted",
}
#: (`ps` refuses line breaks, so a value cannot start a line with the here-string's '@ either.)
HOSTILE = {name: "x'; DROP TABLE dbo.OrganizationBase; --'@ ’‘ $(calc) `" for name in VALUES}

#: A step that sets its values with the quoting filter, then runs one SQL template (the partial).
WRAPPER = (
    "#Requires -Version 5.1\nparam()\n$ErrorActionPreference = 'Stop'\n"
    "$SqlServer = {{ server | ps }}\n$Database = {{ database | ps }}\n"
    + "".join(f"${name} = {{{{ values['{name}'] | ps }}}}\n" for name in VALUES)
    + "{% with sql = sql_name %}{% include 'sql/_invoke-sql.ps1.j2' %}{% endwith %}"
    "$SqlRows | ConvertTo-Json -Compress\n"
)


# --------------------------------------------------------------------------- rendering and parsing


@cache
def plain_environment() -> jinja2.Environment:
    """The SQL templates hold no value: a plain environment with the project's whitespace rules."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


@cache
def sql_text(name: str) -> str:
    return plain_environment().get_template(name).render()


def render_step(sql_name: str, values: dict[str, str] | None = None) -> str:
    """WRAPPER rendered with the project's PowerShell environment (finalize refuses unquoted values)."""
    ps_env, _ = _environments()
    return ps_env.from_string(WRAPPER).render(server="sql01\\CRM", database="Contoso_MSCRM", sql_name=sql_name,
                                              values=values if values is not None else VALUES)


@cache
def parsed(text: str) -> BaseSegment:
    """The sqlfluff parse tree of `text`; AssertionError naming every part the grammar cannot read."""
    result = Linter(dialect="tsql").parse_string(text)
    assert result.tree is not None, [v.desc() for v in result.violations]
    problems = [v.desc() for v in result.violations]
    problems += [f"unparsable at line {s.pos_marker.line_no}: {s.raw[:80]!r}"
                 for s in segments(result.tree) if s.is_type("unparsable")]
    problems += [f"unknown statement (read as a procedure call) at line {s.pos_marker.line_no}: {s.raw[:80]!r}"
                 for s in segments(result.tree) if s.is_type("execute_script_statement")]
    assert problems == [], problems
    return result.tree


def segments(segment: BaseSegment) -> Iterator[BaseSegment]:
    """`segment` and every segment under it, in document order."""
    stack = [segment]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.segments))


def code(segment: BaseSegment) -> list[BaseSegment]:
    """The direct children that are not whitespace, newlines, comments or layout markers."""
    return [s for s in segment.segments if not (s.is_whitespace or s.is_comment or s.is_meta)]


def keywords(segment: BaseSegment) -> str:
    return " ".join(s.raw.upper() for s in code(segment) if s.is_type("keyword"))


@dataclass(frozen=True)
class TryCatch:
    top: list[BaseSegment]  # the batch's statements outside TRY/CATCH
    try_part: list[BaseSegment]
    catch_part: list[BaseSegment]


def try_catch(text: str) -> TryCatch:
    """The batch's one BEGIN TRY … END TRY BEGIN CATCH … END CATCH, split at its keywords."""
    batches = [s for s in segments(parsed(text)) if s.is_type("batch")]
    assert len(batches) == 1
    statements = [s for s in code(batches[0]) if s.is_type("statement")]
    blocks = [s for s in statements if code(s)[0].is_type("try_catch")]
    assert len(blocks) == 1, "exactly one TRY/CATCH"
    parts = code(code(blocks[0])[0])
    words = [s.raw.upper() if s.is_type("keyword") else "" for s in parts]
    end_try = next(i for i in range(len(words) - 1) if words[i:i + 2] == ["END", "TRY"])
    begin_catch = next(i for i in range(len(words) - 1) if words[i:i + 2] == ["BEGIN", "CATCH"])
    assert words[:2] == ["BEGIN", "TRY"] and words[-2:] == ["END", "CATCH"] and end_try + 2 == begin_catch
    def stmts(items: list[BaseSegment]) -> list[BaseSegment]:
        return [s for s in items if s.is_type("statement")]
    return TryCatch([s for s in statements if s is not blocks[0]], stmts(parts[2:end_try]),
                    stmts(parts[begin_catch + 2:-2]))


def kinds(statement: BaseSegment) -> str:
    return code(statement)[0].get_type()


def parameters_used(text: str) -> set[str]:
    """@names the batch reads or writes, without its own DECLAREd variables."""
    tree = parsed(text)
    used = {s.raw.lower() for s in segments(tree) if s.is_type("parameter")}
    declared = {code(d)[1].raw.lower() for d in segments(tree) if d.is_type("declare_segment")}
    return used - declared


def declared_in_partial(step: str) -> dict[str, str]:
    """The parameters the rendered partial adds to the command: @name -> SqlDbType[, size]."""
    found = re.findall(r"\$SqlCommand\.Parameters\.Add\('(@\w+)', \[System\.Data\.SqlDbType\]::(\w+)(?:, (\d+))?\)", step)
    return {name.lower(): kind + (f"({size})" if size else "") for name, kind, size in found}


def here_string(step: str) -> str:
    """The text of the rendered step's one verbatim here-string, as PowerShell's grammar reads it."""
    nodes = [n for n in walk(parse(step).root_node) if n.type == "verbatim_here_string_characters"]
    assert len(nodes) == 1
    raw = nodes[0].text.decode("utf-8")
    assert raw.startswith("@'\n") and raw.endswith("\n'@"), raw[:20]
    return raw[3:-3]  # PowerShell drops the line breaks after @' and before '@


# --------------------------------------------------------------------------- every template parses


def test_the_templates_are_the_four_expected() -> None:
    assert SQL_NAMES == sorted([CHANGE, READ, RIGHTS, ROLLBACK])


@pytest.mark.parametrize("name", SQL_NAMES)
def test_every_sql_template_parses_whole(name: str) -> None:
    text = sql_text(name)
    assert text.strip(), name
    tree = parsed(text)
    assert tree.raw == text  # the tree covers every character


@pytest.mark.parametrize("bad", [
    "SELECT 1 FROM;\n",  # unparsable section
    "SELEC PartnerApplicationId FROM dbo.PartnerApplicationBase;\n",  # a typo, read as a procedure call
    "THROW 51000 N'no comma', 1;\n",  # a malformed THROW, read as a procedure call
    "BEGIN TRY\n    SELECT 1;\nEND TRY\n",  # TRY without CATCH
])
def test_the_parse_check_fails_on_broken_sql(bad: str) -> None:
    parsed.cache_clear()
    with pytest.raises(AssertionError):
        parsed(bad)


# --------------------------------------------------------------------------- transactions and errors


@pytest.mark.parametrize("name", [CHANGE, ROLLBACK])
def test_changes_run_in_one_transaction_inside_try(name: str) -> None:
    text = sql_text(name)
    block = try_catch(text)
    assert [" ".join(s.raw.split()) for s in block.top] == ["SET NOCOUNT ON", "SET XACT_ABORT ON"]
    inside = [seg for s in block.try_part for seg in segments(s)]
    writes = [s for s in segments(parsed(text)) if s.get_type() in ("insert_statement", "update_statement",
                                                                      "delete_statement")]
    assert writes and all(any(w is s for s in inside) for w in writes)
    transactions = [" ".join(s.raw.upper().split()) for s in block.try_part if kinds(s) == "transaction_statement"]
    assert transactions == ["BEGIN TRANSACTION", "COMMIT TRANSACTION"]
    # Every write stands between BEGIN TRANSACTION and COMMIT.
    order = [s for s in block.try_part]
    begin = next(i for i, s in enumerate(order) if s.raw.upper().startswith("BEGIN TRANSACTION"))
    commit = next(i for i, s in enumerate(order) if s.raw.upper().startswith("COMMIT TRANSACTION"))
    between = [seg for s in order[begin + 1:commit] for seg in segments(s)]
    assert all(any(w is s for s in between) for w in writes)


@pytest.mark.parametrize("name", [CHANGE, ROLLBACK])
def test_catch_rolls_back_and_rethrows(name: str) -> None:
    """Microsoft's CATCH rolls back and SELECTs the error numbers: the client sees success. Ours re-throws."""
    block = try_catch(sql_text(name))
    assert [kinds(s) for s in block.catch_part] == ["if_then_statement", "throw_statement"]
    rollback, throw = block.catch_part
    assert " ".join(rollback.raw.upper().split()) == "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;"
    assert [s.raw.upper() for s in code(code(throw)[0])] == ["THROW"]  # a re-throw: no arguments


def test_the_catch_check_refuses_microsofts_pattern() -> None:
    """A CATCH that rolls back and reports the error as a result set (as Microsoft's does) is refused."""
    swallowing = ("SET NOCOUNT ON;\nSET XACT_ABORT ON;\nBEGIN TRY\n    BEGIN TRANSACTION;\n"
                  "    UPDATE dbo.PartnerApplicationBase SET TenantId = @TenantId WHERE PartnerApplicationId = @ClientId;\n"
                  "    COMMIT TRANSACTION;\nEND TRY\nBEGIN CATCH\n    IF @@TRANCOUNT > 0\n        ROLLBACK TRANSACTION;\n"
                  "    SELECT ERROR_NUMBER() AS ErrorNumber;\nEND CATCH;\n")
    block = try_catch(swallowing)
    assert [kinds(s) for s in block.catch_part] == ["if_then_statement", "select_statement"]


@pytest.mark.parametrize("name", SQL_NAMES)
def test_every_throw_uses_a_user_error_number(name: str) -> None:
    """THROW takes 50000 … 2147483647; the grammar does not check it, SQL Server would fail at run time."""
    for throw in (s for s in segments(parsed(sql_text(name))) if s.is_type("throw_statement")):
        numbers = [s for s in segments(throw) if s.is_type("integer_literal")]
        if numbers:  # THROW with arguments: number, message, state
            assert 50000 <= int(numbers[0].raw) <= 2147483647, throw.raw
            assert [s.raw for s in code(throw)].count(",") == 2, throw.raw


def test_the_change_refuses_unless_one_organization() -> None:
    block = try_catch(sql_text(CHANGE))
    texts = [" ".join(s.raw.split()) for s in block.try_part]
    count = next(i for i, t in enumerate(texts) if t.startswith("SELECT @OrganizationCount = COUNT(*) FROM dbo.OrganizationBase"))
    refuse = texts[count + 1]
    assert refuse.startswith("IF @OrganizationCount <> 1 BEGIN") and "THROW 51000, @Message, 1;" in refuse
    first_write = next(i for i, s in enumerate(block.try_part)
                       if any(x.get_type() in ("insert_statement", "update_statement") for x in segments(s)))
    assert count + 1 < first_write


def test_the_change_writes_microsofts_columns() -> None:
    """Both INSERTs give Microsoft's script's columns and constants; only the key differs."""
    text = sql_text(CHANGE)
    inserts = [" ".join(s.raw.split()) for s in segments(parsed(text)) if s.is_type("insert_statement")]
    columns = ("INSERT INTO dbo.PartnerApplicationBase ( PrincipalId, StateCode, Name, UseAuthorizationServer, "
               "PartnerApplicationId, StatusCode, ApplicationRole, OrganizationId, CreatedOn, ModifiedOn, TenantId ) ")
    assert inserts == [
        columns + "VALUES ( @SharePointPrincipalId, 0, @ApplicationName, 1, @SharePointAppId, 1, 1, "
                  "@OrganizationId, @UtcNow, @UtcNow, @TenantId )",
        columns + "VALUES ( @SharePointPrincipalId, 0, @ApplicationName, 1, @ClientId, 1, 1, "
                  "@OrganizationId, @UtcNow, @UtcNow, @TenantId )",
    ]
    updates = [" ".join(s.raw.split()) for s in segments(parsed(text)) if s.is_type("update_statement")]
    assert len(updates) == 1 and updates[0].startswith("UPDATE dbo.PartnerApplicationBase SET TenantId = @TenantId, ModifiedOn = @UtcNow WHERE PartnerApplicationId = @SharePointAppId")


def test_the_change_reports_what_it_did_after_commit() -> None:
    block = try_catch(sql_text(CHANGE))
    last, before = block.try_part[-1], block.try_part[-2]
    assert " ".join(before.raw.upper().split()) == "COMMIT TRANSACTION"
    aliases = [s.raw for s in segments(last) if s.is_type("alias_expression") for s in code(s) if s.is_type("naked_identifier")]
    assert kinds(last) == "select_statement" and aliases == ["microsoft_row", "old_tenant_id", "customer_row", "organization_id"]


def test_rollback_deletes_only_rows_the_run_wrote() -> None:
    text = sql_text(ROLLBACK)
    deletes = [" ".join(s.raw.split()) for s in segments(parsed(text)) if s.is_type("delete_statement")]
    assert len(deletes) == 2
    for delete, key in zip(deletes, ("@ClientId", "@SharePointAppId")):
        assert f"WHERE PartnerApplicationId = {key} " in delete
        assert "TRY_CONVERT(UNIQUEIDENTIFIER, PrincipalId) = @SharePointPrincipalId" in delete
        assert "TRY_CONVERT(UNIQUEIDENTIFIER, TenantId) = @TenantId" in delete
    updates = [" ".join(s.raw.split()) for s in segments(parsed(text)) if s.is_type("update_statement")]
    assert updates == ["UPDATE dbo.PartnerApplicationBase SET TenantId = @OldTenantId, ModifiedOn = GETUTCDATE() "
                       "WHERE PartnerApplicationId = @SharePointAppId AND TRY_CONVERT(UNIQUEIDENTIFIER, TenantId) = @TenantId"]


@pytest.mark.parametrize("name", [READ, RIGHTS])
def test_the_reads_change_nothing(name: str) -> None:
    tree = parsed(sql_text(name))
    assert not [s for s in segments(tree) if s.get_type() in (
        "insert_statement", "update_statement", "delete_statement", "merge_statement", "transaction_statement",
        "create_table_statement", "drop_table_statement", "alter_table_statement")]


def test_rights_asks_for_every_right_the_change_and_rollback_use() -> None:
    text = " ".join(sql_text(RIGHTS).split())
    for right in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        assert f"HAS_PERMS_BY_NAME(N'dbo.PartnerApplicationBase', N'OBJECT', N'{right}')" in text
    assert "SELECT @OrganizationCount = COUNT(*) FROM dbo.OrganizationBase" in text


# --------------------------------------------------------------------------- values only as parameters


@pytest.mark.parametrize("name", SQL_NAMES)
def test_no_value_is_written_into_the_sql(name: str) -> None:
    text = sql_text(name)
    assert not GUID.search(text), "a GUID in the SQL text: values come only as @parameters"
    literals = [s.raw for s in segments(parsed(text)) if s.is_type("quoted_literal")]
    assert literals  # the check below looks at real literals
    for literal in literals:
        assert not GUID.search(literal) and "{" not in literal, literal
        assert "microsoft sharepoint online" not in literal.lower(), literal  # the name is @ApplicationName


@pytest.mark.parametrize("name", SQL_NAMES)
def test_the_partial_declares_exactly_the_parameters_the_sql_uses(name: str) -> None:
    step = render_step(name)
    declared = declared_in_partial(step)
    assert set(declared) == parameters_used(sql_text(name))
    for parameter, kind in declared.items():
        assert kind in ("UniqueIdentifier", "NVarChar(20)", "NVarChar(100)", "NVarChar(4000)"), (parameter, kind)
        assert kind == "UniqueIdentifier" or parameter in ("@applicationname", "@microsoftrow", "@oldtenantid",
                                                           "@customerrow"), (parameter, kind)
    # Each value is read from the PowerShell variable of the parameter's name, nothing else.
    for parameter in declared:
        assert re.search(rf"Get-Variable -Name '{parameter[1:]}' -ValueOnly -ErrorAction Stop", step, re.I), parameter


def test_the_parameter_check_sees_a_missing_declaration() -> None:
    """parameters_used finds what the SQL reads: a parameter the partial forgot would show."""
    assert parameters_used("SET NOCOUNT ON;\nDECLARE @Local INT = 1;\nSELECT @Local, @Forgotten;\n") == {"@forgotten"}


# --------------------------------------------------------------------------- the PowerShell partial


@pytest.mark.parametrize("name", SQL_NAMES)
def test_the_partial_renders_to_windows_powershell_that_parses(name: str) -> None:
    step = render_step(name)
    assert syntax_errors(step) == []
    commands = {i.name.lower() for i in command_invocations(step)}
    assert commands <= {"new-object", "get-variable", "convertto-json"}, commands
    bare = code_only(step)  # PowerShell 7 operators, outside strings and comments
    assert not re.search(r"\?\?|\?\.|&&|\|\||\s\?\s", bare), re.findall(r".{20}(?:\?\?|\?\.|&&|\|\||\s\?\s).{20}", bare)


@pytest.mark.parametrize("name", SQL_NAMES)
def test_the_sql_travels_whole_in_a_verbatim_here_string(name: str) -> None:
    step = render_step(name)
    assert here_string(step) == sql_text(name).rstrip("\n")
    assert here_string(step) == here_string(render_step(name, HOSTILE))  # values never reach the SQL text
    assert not [line for line in sql_text(name).splitlines() if line.lstrip().startswith("'@")]
    parsed(here_string(step) + "\n")


def test_the_here_string_check_sees_a_terminator_in_the_sql() -> None:
    step = render_step(READ).replace("SET NOCOUNT ON;", "SET NOCOUNT ON;\n'@ + 'oops'\n", 1)
    with pytest.raises(AssertionError):
        assert here_string(step) == sql_text(READ).rstrip("\n")


def test_hostile_values_stay_single_powershell_literals() -> None:
    step = render_step(ROLLBACK, HOSTILE)
    assert syntax_errors(step) == []
    assignments = [n for n in walk(parse(step).root_node) if n.type == "assignment_expression"]
    for name in VALUES:
        values = [a.children[-1] for a in assignments if a.children[0].text.decode().strip().lower() == f"${name.lower()}"]
        assert len(values) == 1 and values[0].text.decode().startswith("'"), name
        literals = [n for n in walk(values[0]) if n.type == "string_literal"]
        assert len(literals) == 1 and literals[0].text == values[0].text, name


def test_the_partial_disposes_in_finally_and_catches_only_the_connection() -> None:
    step = render_step(CHANGE)
    tries = [n for n in walk(parse(step).root_node) if n.type == "try_statement"]
    outer = [t for t in tries if any(c.type == "finally_clause" for c in t.children)]
    assert len(outer) == 1
    finally_text = next(c for c in outer[0].children if c.type == "finally_clause").text.decode()
    for disposed in ("$SqlReader.Dispose()", "$SqlCommand.Dispose()", "$SqlConnection.Dispose()"):
        assert disposed in finally_text
    assert not [c for c in outer[0].children if c.type == "catch_clauses"], "the command's errors are not caught"
    catching = [t for t in tries if any(c.type == "catch_clauses" for c in t.children)]
    assert len(catching) == 1
    guarded = next(c for c in catching[0].children if c.type == "statement_block").text.decode()
    assert " ".join(guarded.split()) == "{ $SqlConnection.Open() }"
    handler = next(c for c in catching[0].children if c.type == "catch_clauses").text.decode()
    assert "throw (New-Object System.InvalidOperationException" in handler and "$_.Exception))" in handler
    assert "second hop" in handler and "CredSSP" in handler


def test_the_partial_reads_every_result_set_and_uses_integrated_security() -> None:
    step = render_step(CHANGE)
    assert "} while ($SqlReader.NextResult())" in step
    assert "$SqlBuilder['Integrated Security'] = $true" in step
    assert "New-Object System.Data.SqlClient.SqlConnection -ArgumentList $SqlBuilder.ConnectionString" in step
    assert "$SqlCommand.CommandText = $SqlText" in step


def test_the_partial_refuses_an_unknown_sql_template() -> None:
    with pytest.raises((jinja2.UndefinedError, jinja2.TemplateNotFound)):
        render_step("sql/no-such.sql.j2")
