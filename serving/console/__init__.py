"""The web console at ``/ui``: a few server-routed pages that are clients of the gateway's public JSON API.

Each page is a Jinja2 template (layout, forms, labels) plus one vanilla ES module that fetches ``/v1/...`` with
the API key the user entered once (kept in ``sessionStorage``, sent as ``Authorization: Bearer``). The pages hold
no data and need no key; every byte they load ships in this package (no CDN, no build step). See docs/console.md.
"""
