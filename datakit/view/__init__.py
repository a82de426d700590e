"""``datakit view RUN``: a local web app to read a run and record human verdicts.

* :mod:`datakit.view.index` — the run's SQLite index (built once, in the background).
* :mod:`datakit.view.store` — list pages, facets and the review state over that index.
* :mod:`datakit.view.detail` — one record, as the machine and as people see it.
* :mod:`datakit.view.app` — the Starlette app and its guard (token, host, paths, body size).
* :mod:`datakit.view.serve` — binding, the printed address, uvicorn.

Verdicts go to ``RUN/reviews.jsonl`` through :mod:`datakit.reviews`, which every later stage
reads.
"""
