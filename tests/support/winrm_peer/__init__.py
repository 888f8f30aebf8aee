"""A loopback WinRM/PSRP protocol peer for tests. It is a protocol peer, not PowerShell.

The unmodified pypsrp client talks real WS-Management and PSRP to it: Basic or
NTLM/Negotiate (pyspnego acceptor) with WinRM message encryption over HTTP, or
HTTPS with a certificate made by `cryptography`. The runspace pool and pipelines
are psrpcore's server classes. No script is ever interpreted: a pluggable
`Engine` records what each pipeline carried (script text, parameters,
SecureStrings decrypted with the session key, PSCredential user and decrypted
password) and answers as the test scripts it (output, non-terminating error,
terminating error, hang, dropped connection, deleted shell, 401).

What it cannot tell you: whether a script is valid PowerShell, what cmdlets do,
how Windows PowerShell 5.1 binds parameters, WinRM quotas/MaxEnvelopeSize,
Kerberos/CredSSP, JEA endpoints, or how a real server behaves when
Enable-PSRemoting restarts WinRM under its own session.
"""

from .certs import TestPKI, make_pki
from .engine import CredentialValue, Engine, ErrorSpec, RecordedPipeline, Reply, SecureValue
from .server import WinRMPeer

__all__ = [
    "CredentialValue",
    "Engine",
    "ErrorSpec",
    "RecordedPipeline",
    "Reply",
    "SecureValue",
    "TestPKI",
    "WinRMPeer",
    "make_pki",
]
