"""Step 03 (msonline) enables remoting only when WinRM does not answer locally.

setup.ps1 -FromStep N re-runs session steps, and Enable-PSRemoting -Force restarts WinRM
(Enable-PSRemoting reference: it "restarts the WinRM service to make the preceding changes
effective"). Test-WSMan tells whether WinRM already answers.
https://learn.microsoft.com/powershell/module/microsoft.powershell.core/enable-psremoting
https://learn.microsoft.com/powershell/module/microsoft.wsman.management/test-wsman
"""

from __future__ import annotations

from psbridge.parameters import example
from psbridge.render import render_package

from support.pwsh_grammar import syntax_errors


def test_enable_psremoting_only_locally_and_only_when_test_wsman_fails() -> None:
    text = render_package(example()).files["steps/03-session.ps1"][3:].decode("utf-8").replace("\r\n", "\n")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert syntax_errors(text) == []
    assert "New-PSSession" not in code
    assert code.index("if ($null -eq $PSSenderInfo) {") < code.index("Test-WSMan -ComputerName 'localhost' -ErrorAction Stop")
    assert "    if (-not $WinRMAnswers) {\n        Enable-PSRemoting -Force\n    }" in code
    assert code.count("Enable-PSRemoting") == 1
