"""HTTP client for the city backend: TLS verification on, OAuth2 client-credentials tokens.

LGSP-style gateways authenticate machine clients with the OAuth2 client
credentials grant (RFC 6749 section 4.4). Authlib's httpx integration does the
grant and keeps the token until it expires (it fetches a new one a little
before, `leeway` seconds); what it does not do is react to a token the server
has stopped accepting early (revoked, gateway restarted), so a 401 here fetches
a fresh token once and repeats the request.

TLS: `verify` is True (system CAs) or a CA bundle path. There is no way to
turn verification off: a bridge that forwards personal data must know whom it
talks to.
"""

from __future__ import annotations

import logging
import ssl
import threading
import warnings
from typing import Any

import httpx

with warnings.catch_warnings():
    # Authlib 1.6+ nudges towards the `httpx2` fork; httpx 0.28 is what we run and it works.
    # authlib.deprecate installs an "always" filter on import: let it, then override it.
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client

log = logging.getLogger("mqtt_bridge.backend")


class BackendClient:
    """Thread-safe client for `base_url`; bearer tokens when `token_url` is given."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str = True,
        timeout: float = 10.0,
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        max_connections: int = 20,
        token_leeway: int = 30,
        client: httpx.Client | None = None,
    ) -> None:
        """Raises ValueError if OAuth2 is half configured or verification is off.

        `client` lets tests inject an httpx.Client (e.g. with a MockTransport); no OAuth2 then.
        """
        if verify is False:
            raise ValueError("TLS verification cannot be turned off; give a CA bundle instead")
        if token_url and not (client_id and client_secret):
            raise ValueError("OAuth2: token_url needs client_id and client_secret")
        self.base_url = base_url.rstrip("/")
        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else True
        )
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._oauth = token_url is not None
        self._token_lock = threading.Lock()
        self._client: httpx.Client
        if client is not None:
            self._client, self._oauth = client, False
        elif token_url:
            self._client = OAuth2Client(
                client_id=client_id,
                client_secret=client_secret,
                token_endpoint=token_url,
                grant_type="client_credentials",
                leeway=token_leeway,
                verify=tls,
                timeout=timeout,
                limits=limits,
            )
        else:
            self._client = httpx.Client(verify=tls, timeout=timeout, limits=limits)

    def _fetch_token(self, stale: object = None) -> None:
        with self._token_lock:
            assert isinstance(self._client, OAuth2Client)
            current = self._client.token
            # Another thread may have refreshed it while we waited for the lock.
            if current and current is not stale:
                return
            self._client.fetch_token()
            log.info("obtained an access token from the token endpoint")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request to `base_url + path`; raises httpx.HTTPError (or an OAuth error
        from the token endpoint, a subclass of Exception) when the backend is unreachable."""
        url = self.base_url + path
        if not self._oauth:
            return self._client.request(method, url, **kwargs)
        assert isinstance(self._client, OAuth2Client)
        if not self._client.token:
            self._fetch_token()
        used = self._client.token
        response = self._client.request(method, url, **kwargs)
        if response.status_code == 401:
            log.warning("backend refused the access token (401); fetching a new one")
            self._fetch_token(stale=used)
            response = self._client.request(method, url, **kwargs)
        return response

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
