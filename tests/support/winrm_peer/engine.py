"""The scriptable half of the peer: what a pipeline "does" when it reaches the server.

This is NOT PowerShell. Nothing here parses or runs a script. The engine records
every pipeline the client sends (script text, parameters, SecureStrings decrypted
with the session key, PSCredential user and decrypted password) and answers with
whatever the test scripted for it: output objects, non-terminating error records,
a terminating error, a hang, a dropped connection, a deleted shell or a 401.
Tests then assert on the record: which scripts arrived, in which order, and that
secrets came only as SecureStrings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psrpcore.types import PSObject, PSSecureString


@dataclass(frozen=True)
class SecureValue:
    """A parameter that arrived as a SecureString; `plain` is its decrypted value."""

    plain: str


@dataclass(frozen=True)
class CredentialValue:
    """A parameter that arrived as a PSCredential whose password was a SecureString."""

    username: str
    password: str


@dataclass(frozen=True)
class ErrorSpec:
    """An error record the engine writes: what PowerShell would put in one, roughly."""

    message: str
    category: str = "NotSpecified"
    error_id: str = "PeerScriptedError"
    line: int = 1
    line_text: str = ""


@dataclass
class Reply:
    """How the peer answers one pipeline.

    output/warnings/information/errors are written in that order while the pipeline runs. Then:
    `terminating` fails the pipeline with that error; `hang` leaves it running until
    the client stops it; `drop` closes the TCP connection on the client's next
    request for this pipeline without answering; `delete_shell` removes the shell so
    the client's next request gets a "shell not found" fault; `unauthorized` makes
    every further request and authentication attempt get 401. Otherwise it completes.
    """

    output: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Information records (what Write-Host / Write-Information write), as strings.
    information: list[str] = field(default_factory=list)
    errors: list[ErrorSpec] = field(default_factory=list)
    terminating: ErrorSpec | None = None
    hang: bool = False
    drop: bool = False
    delete_shell: bool = False
    unauthorized: bool = False
    #: Answer the client's next Receive for this pipeline with a stream that is not a PSRP message.
    garbage: bool = False


@dataclass
class RecordedPipeline:
    """One pipeline as the server received it."""

    seq: int
    shell_id: str
    pipeline_id: str
    #: One entry per command: (command text, is_script, parameters name -> decoded value).
    commands: list[tuple[str, bool, dict[str, Any]]]
    stopped: bool = False
    #: Per command: whether it runs in a scope of its own (UseLocalScope) instead of dot-sourced
    #: into the session's scope, where its variables would outlive it.
    local_scope: list[bool] = field(default_factory=list)

    @property
    def script(self) -> str:
        """The text of the first command (psbridge sends one script per pipeline)."""
        return self.commands[0][0] if self.commands else ""

    @property
    def parameters(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for _, _, params in self.commands:
            merged.update(params)
        return merged


Responder = Callable[[RecordedPipeline], Reply]


def decode_value(value: Any) -> Any:
    """Turn a deserialized parameter value into something a test can compare.

    SecureStrings are decrypted with the pool's session key (proof that the
    client exchanged keys and encrypted them); a PSCredential becomes user and
    decrypted password, and only counts if its password really was a SecureString.
    """
    if isinstance(value, PSSecureString):
        return SecureValue(str(value.decrypt()))
    if isinstance(value, PSObject):
        type_names = list(getattr(value.PSObject, "type_names", []) or [])
        if "System.Management.Automation.PSCredential" in type_names:
            password = getattr(value, "Password", None)
            if not isinstance(password, PSSecureString):
                raise AssertionError("PSCredential password did not arrive as a SecureString")
            return CredentialValue(str(getattr(value, "UserName", "")), str(password.decrypt()))
    return value


class Engine:
    """Records pipelines and answers them by the test's rules (first match wins)."""

    def __init__(self, default: Reply | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[tuple[Callable[[RecordedPipeline], bool], Reply | Responder, int | None]] = []
        self.default = default or Reply()
        self.pipelines: list[RecordedPipeline] = []

    def when(self, match: str | Callable[[RecordedPipeline], bool], reply: Reply | Responder, *,
             times: int | None = None) -> None:
        """Answer pipelines whose script contains `match` (or for which it returns True) with `reply`
        (or with what the responder `reply` returns for the pipeline: a model such as ServerLockModel).

        `times` limits how often the rule fires, so a test can fail a step once and
        let the re-run succeed.
        """
        predicate = (lambda p, s=match: s in p.script) if isinstance(match, str) else match
        with self._lock:
            self._rules.append((predicate, reply, times))

    def reset_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def receive(self, pipeline: RecordedPipeline) -> Reply:
        """Record the pipeline and choose its reply."""
        with self._lock:
            self.pipelines.append(pipeline)
            for i, (predicate, reply, times) in enumerate(self._rules):
                if predicate(pipeline):
                    if times is not None:
                        if times <= 0:
                            continue
                        self._rules[i] = (predicate, reply, times - 1)
                    return reply if isinstance(reply, Reply) else reply(pipeline)
            return self.default

    def scripts(self) -> list[str]:
        with self._lock:
            return [p.script for p in self.pipelines]
