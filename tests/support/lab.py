"""The test lab: its accounts, the secrets the suite must never leak, the farm's addresses."""

from __future__ import annotations

import json

USER = "CONTOSO\\crmadmin"
WINRM_PASSWORD = "Winrm-P@ss w0rd;$x`'\"1"
PFX_PASSWORD = "Pfx$ecret`; 'quoted' \"dq\" 2"
O365_USER = "admin@contoso.onmicrosoft.com"
O365_PASSWORD = "O365-Pa55!word<&>"
SECRETS = (WINRM_PASSWORD, PFX_PASSWORD, O365_PASSWORD)

#: The additional servers of a farm in the tests: each its own loopback peer on the main peer's port.
FARM = ["127.0.0.2", "127.0.0.3"]


def assert_no_secrets(*blobs: bytes | str) -> None:
    """None of the test secrets, not even JSON-escaped (as Python writes it, or as Windows PowerShell 5.1's
    ConvertTo-Json does: `<` `>` `&` `'` as `\\u003c`...), in any of `blobs`."""
    for blob in blobs:
        data = blob.encode("utf-8") if isinstance(blob, str) else blob
        for secret in SECRETS:
            assert secret.encode("utf-8") not in data
            assert json.dumps(secret)[1:-1].encode("utf-8") not in data
            html_safe = json.dumps(secret)[1:-1]
            for char in "<>&'":
                html_safe = html_safe.replace(char, f"\\u{ord(char):04x}")
            assert html_safe.encode("utf-8") not in data
