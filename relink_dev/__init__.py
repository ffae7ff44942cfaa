"""Development tools, apart from the product: the sandbox OAuth 2.0 provider (`sandbox/`,
on Authlib's Flask server components) that the demo, the tests and the benchmarks talk to,
and the local supervisor behind `relink run` (`runner.py`). A production install does not
need them: they come with the `sandbox` extra, and only `relink run`, `relink sandbox`
(relink/cli/run.py) and the tests import them."""
