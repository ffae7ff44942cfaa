"""Reconnect: new credentials, and new values for the settings the owner can fix, validated
together before they replace the old ones; then the connection's datasets are refreshed.
A module per job: `target` (who may reconnect what), `form` (what a reconnect asks for and
may change), `replace` (validate, then commit the new credentials; typed secrets), `oauth`
(the provider's sign-in page), `confirm` (a replacement of the connection's account, held
for its user's confirmation), `recheck` (the stored credentials checked again),
`email_link` (the owner told now), `errors`. The steps in full: docs/reconnect.md."""
