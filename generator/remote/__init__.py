"""Everything psbridge sends to a server, and how: the package gate, the transport, the executor.

The layers, from the command line down: `gate` (the package read once and judged, the steps
and host chosen) -> `run` / `rollback` / `checking` (one audited action each, `action`) ->
`servers` (several servers in order, the switch guard) -> `executor` (one loop, one pipeline
per step, never past a failure) and `probing` (read-only probes) -> `transport` (pypsrp).
`events` is the run record's one schema; `advice` what a run says when it ends.
"""
