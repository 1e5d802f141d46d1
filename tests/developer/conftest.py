from __future__ import annotations

from tests.developer.api_helpers import alice_api, anonymous_api, api_isolation, bob_api

__all__ = ["alice_api", "anonymous_api", "api_isolation", "bob_api"]
