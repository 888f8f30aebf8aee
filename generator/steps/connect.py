"""Step connect: sign in to Office 365 (msonline) or Microsoft Graph (graph)."""

from __future__ import annotations

from .base import Step, StepUnit

STEPS = {
    "msonline": Step(0, "connect", "Connect to Office 365", "session", needs=("session",),
                     inputs={"Credential": "o365_credential"}),
    "graph": Step(0, "connect", "Connect to Microsoft Graph", "session", needs=("session",),
                  inputs={"AccessToken": "graph_token"}),
}

UNIT = StepUnit("connect", STEPS, renewal_rank=30)
