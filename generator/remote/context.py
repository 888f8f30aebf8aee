"""What every remote function of one run needs, in one object instead of a dozen parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..package import Package
from .advice import ContinueCommand, RunSettings
from .inputs import StepSecrets
from .redact import Redactor
from .transport import Connection

#: Receives every event of a run (as its JSON dict): the run record and the operator's screen.
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RemoteContext:
    """One run, rollback or check: the package (read once), where it goes, its secrets and settings."""

    package: Package
    conn: Connection
    winrm_password: str | None
    secrets: StepSecrets = field(default_factory=StepSecrets)
    settings: RunSettings = field(default_factory=RunSettings)
    emit: Emit = lambda event: None

    @property
    def redact(self) -> Redactor:
        """Hides every secret this run holds (the step secrets and the WinRM password)."""
        return Redactor([*self.secrets.values(), *([self.winrm_password] if self.winrm_password else [])])

    def with_emit(self, emit: Emit) -> RemoteContext:
        """The same run, its events going to `emit` (the run record, then the screen)."""
        return replace(self, emit=emit)

    def on(self, host: str) -> RemoteContext:
        """The same run, connected to another server (an additional one) with the same options."""
        return replace(self, conn=replace(self.conn, host=host))

    def continue_command(self, from_server: str | None = None) -> ContinueCommand:
        """The exact `psbridge run` command that goes on from here (the main server's options, no secrets)."""
        options = self.settings.trim(self.conn.continue_options()) + self.settings.options()
        return ContinueCommand(str(self.package.path), options,
                               from_server=from_server)
