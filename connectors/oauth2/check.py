"""How an OAuth check verifies a token: RFC 7662 introspection when the provider has an
introspection endpoint and the client a secret, else an authenticated GET of the probe
URL (a 401, or a 403 naming a token error, rejects the token), else the refresh grant
itself. A token rejected although it looked valid gets one refresh and one more try.
The introspection or probe answer's `sub` and `email` (a userinfo endpoint's) are the
identity the check saw (`identity`).
`Check` is also what a dataset fetch runs its authenticated GET through."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from connectors.base import AuthFailed, Unreachable
from connectors.http import classify_response, json_body, json_or_none, response_error, where
from connectors.oauth2.errors import CLIENT_REFUSALS, TOKEN_REJECTED, TokenEndpointError, refused
from connectors.oauth2.plan import api_base_url
from connectors.oauth2.session import exchange
from connectors.oauth2.tokens import TokenRun
from connectors.outcomes import BAD_RESPONSE, INACTIVE_TOKEN, INVALID_SETTINGS, BearerTokenError
from relink.domain.identity import Identity, from_claims


class Check(TokenRun):
    """One validate/fetch: `TokenRun`'s tokens, verified against the provider."""

    identity: Identity | None = None  # whose account the answer named, when it did

    async def verify(self) -> None:
        p = self.plan
        if p.introspection_url and p.client_id and p.client_secret:
            try:
                await self.introspect()
            except AuthFailed as err:
                if err.code != INACTIVE_TOKEN or not self.may_retry():
                    raise
                self.retried = True
                await self.refresh(rejected=self.creds.get("access_token"))
                await self.introspect()
        elif p.probe_url:
            response = await self.get(p.probe_url)
            self.identity = self._identity(json_or_none(response))
        elif self.minted:
            return  # the refresh grant just answered: the grant is alive
        elif self.can_refresh():
            await self.refresh(rejected=self.creds.get("access_token"))
        else:
            raise AuthFailed(
                INVALID_SETTINGS,
                "nothing to check the token against: set probe_url or introspection_url",
            )

    async def introspect(self) -> None:
        p = self.plan
        assert p.introspection_url
        at = f"the introspection endpoint ({where(p.introspection_url)})"
        response: httpx.Response = await exchange(
            self.client.introspect_token(
                p.introspection_url,
                # never None: Authlib would fall back to the token its client last saw
                token=self.creds.get("access_token") or "",
                token_type_hint="access_token",
            ),
            at,
            self.ctx,
            p,
        )
        status = response.status_code
        if status in (400, 401):
            # RFC 7662 §2.1: the caller (the OAuth app) authenticates; a 401 refuses it
            error = response_error(response)
            if error in CLIENT_REFUSALS or status == 401:
                code = error if error in CLIENT_REFUSALS else TokenEndpointError.INVALID_CLIENT
                raise refused(code, at, "the OAuth client", p)
        problem = classify_response(response, at, now=self.ctx.now, provider=p.provider)
        if problem is not None:
            raise problem
        body = json_body(response, at)
        active = body.get("active") if isinstance(body, Mapping) else None
        if active is True or active == "true":
            self.identity = self._identity(body)
            return
        if active is False or active == "false":
            raise AuthFailed(
                INACTIVE_TOKEN,
                f"{at}: the provider reports the access token as inactive (expired or revoked)",
            )
        raise Unreachable(BAD_RESPONSE, f"{at} answered without an 'active' member")

    async def get(self, url: str) -> httpx.Response:
        """An authenticated GET; a rejected token gets one refresh and one more try."""
        at = where(url)
        p = self.plan
        while True:
            access = self.creds.get("access_token", "")
            response: httpx.Response = await exchange(
                self.client.request(
                    "GET",
                    url,
                    headers={"Authorization": f"Bearer {access}", "Accept": "application/json"},
                    withhold_token=True,  # Authlib must not refresh on its own: the store does
                ),
                at,
                self.ctx,
                p,
            )
            status = response.status_code
            error: str | None = None
            if status == 401:
                error = response_error(response) or BearerTokenError.INVALID_TOKEN
                if error in TOKEN_REJECTED and self.may_retry():
                    self.retried = True
                    await self.refresh(rejected=access)
                    continue
            problem = classify_response(
                response, at, now=self.ctx.now, provider=p.provider, error=error
            )
            if problem is not None:
                raise problem
            return response

    def _identity(self, claims: object) -> Identity | None:
        return from_claims(claims, secrets=self.secrets)

    def api_base_url(self) -> str | None:
        """The base of the dataset paths of this connection."""
        return api_base_url(self.plan, self.conn.settings, self.creds)
