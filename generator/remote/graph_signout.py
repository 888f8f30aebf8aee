"""Sign out of Microsoft Graph when a session that may have signed in ends (issue 19 item 2).

Step 04 (graph) signs in with `-ContextScope Process`: the token lives in the server's PowerShell
process for as long as the session does. Every run (after `--verify`), check and rollback of a
graph package therefore sends templates/shared/graph/_disconnect.ps1.j2 as its own, last
pipeline, from a `finally`, so that a failure or a Ctrl-C signs out too. A sign-out that fails is
a warning: it never turns the session's result into a failure.
"""

from __future__ import annotations

import sys
from functools import cache

from ..package import Package
from .executor import Outcome, classify
from .redact import Redactor
from .transport import PSRPSession

#: The disconnect pipeline's template (no values: the same text for every package).
DISCONNECT_TEMPLATE = ("shared", "graph", "_disconnect.ps1.j2")
#: How long the sign-out may take: Disconnect-MgGraph only clears the process's context.
SIGN_OUT_TIMEOUT = 60.0


@cache
def disconnect_script() -> str:
    """The disconnect pipeline's text, rendered from its template (PowerShell lives in templates)."""
    from importlib.resources import files

    import jinja2

    source = files("psbridge.templates").joinpath(*DISCONNECT_TEMPLATE).read_text(encoding="utf-8")
    return jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False).from_string(source).render()


def signs_in_to_graph(package: Package) -> bool:
    """Whether the package's steps sign in to Microsoft Graph (profile graph) at all."""
    return package.parameters.profile == "graph"


def sign_out_of_graph(session: PSRPSession | None, package: Package, redact: Redactor) -> str | None:
    """Send the disconnect pipeline; None when signed out (or never signed in), else one warning line.

    Never raises, not even on Ctrl-C: it runs in `finally` blocks, after the result is known.
    """
    if session is None or not signs_in_to_graph(package):
        return None
    host = session.conn.host
    if session.broken:
        return (f"could not sign out of Microsoft Graph on {host}: the connection broke; if this session signed in, "
                "its token stays in the server's PowerShell process until WinRM closes the shell")
    try:
        report = session.run_step(disconnect_script(), {}, SIGN_OUT_TIMEOUT, local_scope=True)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - a clean-up must not change the result
        return f"could not sign out of Microsoft Graph on {host} ({type(exc).__name__})"
    said = next((line for line in report.output if line), "")
    if classify(report) is Outcome.OK and not said.startswith("failed"):
        return None
    why = said or (report.errors[0].message if report.errors else report.transport_error or f"state {report.state}")
    return redact(f"Disconnect-MgGraph on {host} did not succeed: {why}; sign out there by hand "
                  "(Disconnect-MgGraph) or close the session")


def warn_on_stderr(warning: str | None) -> None:
    """The sign-out's warning on stderr, where psbridge's warnings go: the session's summary, its
    record and its exit code stay what the steps made them (and on an error or Ctrl-C path the
    summary is already written)."""
    if warning is not None:
        print(f"psbridge: warning: {warning}", file=sys.stderr)
