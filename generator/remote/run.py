"""`psbridge run`: the package's selected steps on its servers, audited and recorded."""

from __future__ import annotations

import re
from typing import Any

from ..approvals import Verification
from ..errors import stop_code
from ..thumbprint import Thumbprint
from .action import Audited, Finished, audited_action, finish, started
from .advice import RunFacts
from .context import RemoteContext
from .graph_signout import sign_out_of_graph, warn_on_stderr
from ..run_record import ApprovalEvent
from .servers import RunOptions, ServerRun


def run_package(ctx: RemoteContext, options: RunOptions, audited: Audited,
                approval: Verification | None = None) -> Finished:
    """Record, connect, run the selected steps of the verified package; raises ConnectFailure (exit 3).

    Every text sent comes from `ctx.package` (read once and judged before this call). The run holds
    the workstation lock from before its record is created, and the server lock (the package's
    lock.ps1) from before its first step, to its end; nothing is sent unless its start is in the
    record and the audit log.
    """
    package = ctx.package
    server_run = ServerRun(ctx, options)
    start = started(ctx, o365_user=ctx.secrets.o365_user, configuration_name=ctx.conn.configuration_name,
                    from_step=options.from_step, steps=[s.index for s in options.selected],
                    servers=list(dict.fromkeys(t.conn.host for t in server_run.targets)))
    events = [ApprovalEvent(digest=approval.digest, approvals=[a.to_json() for a in approval.approvals_used]).data()
              ] if approval is not None else []
    details: dict[str, Any] = {"host": ctx.conn.host, "user": ctx.conn.username, "steps": start.steps,
                               "servers": start.servers, "_events": events}
    with audited_action(ctx, audited, start, details) as recorder:
        sent_to_main: list[int] = []

        def emit(event: dict[str, Any]) -> None:
            if event.get("event") == "step-start" and not event.get("host"):
                sent_to_main.append(event.get("index", 0))  # a step (such as connect) went to the main session
            recorder.emit(event)

        server_run.ctx = ctx.with_emit(emit)

        def audit_line(what: str, facts: dict[str, Any]) -> None:
            recorder.line(what, **facts)

        server_run.audit = audit_line
        try:
            result = server_run.run()
        except KeyboardInterrupt:
            # Ctrl-C outside a step (a step handles its own; a probe passes it on): the record says
            # how it ended, and where to continue without sending a finished step again.
            summary, pending = server_run.interrupted()
            recorder.end(stop_code(), "interrupted", summary, pending)
            raise
        finally:
            # After the last step and --verify, and on every way out: no Graph token stays behind.
            warn_on_stderr(sign_out_of_graph(server_run.main if sent_to_main else None, package, ctx.redact))
            server_run.close()
        done = finish(recorder, result, host=ctx.conn.host, steps=start.steps)
        done.facts = facts_of(server_run)
        return done


_GUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")


def facts_of(server_run: ServerRun) -> RunFacts:
    """What the wizard needs, as values: the tenant the tenant-id step printed (a GUID), and the
    certificate's thumbprint from the package's approved facts or the certificate probe's reading
    the run recorded before step certificate (the server's .cer, which step set-certificate imports)."""
    results = [r for r in server_run.results if r.id == "tenant-id"]
    tenant = next((m.group(0) for r in results for line in r.output for m in [_GUID.search(line)] if m), None)
    if tenant is None and server_run.verification is not None:  # --verify read it after the run
        tenant = next((m.group(0) for v in server_run.verification.verdicts if v.id == "tenant-id"
                       for m in [_GUID.search(v.detail)] if m), None)
    thumbprint = Thumbprint.of((server_run.ctx.package.certificate or {}).get("thumbprint"))
    reading = server_run.readings.get(("certificate", "before"), {}).get("certificate")
    if thumbprint is None and isinstance(reading, dict):
        thumbprint = Thumbprint.of(reading.get("cer_thumbprint"))
    return RunFacts(tenant, thumbprint)
