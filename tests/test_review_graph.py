"""REVIEW.md of a graph package: what the sign-in needs, and what is documented about key credentials."""

from __future__ import annotations

import copy
import re
from typing import Any

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

APP = {"client_id": "11111111-2222-3333-4444-555555555555", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
       "certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567"}


def review(**graph: Any) -> str:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    if graph:
        data["graph"] = graph
    return render_package(parse_parameters(data)).files["REVIEW.md"].decode("utf-8")


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_app_only_review_asks_for_application_permissions_not_scopes() -> None:
    text = flat(review(**APP))
    assert "application permissions Application.ReadWrite.All and Organization.Read.All" in text
    assert "admin consent" in text and "https://learn.microsoft.com/powershell/microsoftgraph/app-only" in text
    assert "with scopes Application.ReadWrite.All" not in text and "may grant" not in text


def test_interactive_review_keeps_the_delegated_scopes() -> None:
    text = flat(review())
    assert "scopes Application.ReadWrite.All and Organization.Read.All" in text
    assert "application permissions" not in text


def test_review_states_what_is_documented_about_key_credentials() -> None:
    text = flat(review())
    assert "keyCredentialConfiguration" in text and "asymmetricKeyLifetime" in text
    assert "https://learn.microsoft.com/graph/api/resources/keycredentialconfiguration" in text
    assert "00000007-0000-0000-c000-000000000000/*.contoso.com" in text
    assert "not documented" in text and "unverified" in text


def test_probe_dates_use_the_round_trip_format() -> None:
    """Custom formats follow the server's culture (time separator, calendar); 'o' does not."""
    for profile in ("msonline", "graph"):
        data = copy.deepcopy(EXAMPLE)
        data["profile"] = profile
        files = render_package(parse_parameters(data)).files
        for name, body in files.items():
            if not name.startswith("probes/"):
                continue
            text = body.decode("utf-8-sig")
            formats = re.findall(r"\.ToString\('([^']*)'\)", text)
            assert all(f == "o" for f in formats), (name, formats)
            assert "yyyy" not in text, name
