"""Settings, URLs and the ASGI application.

Process-wide, set here because every entry point (daphne, manage.py, pytest) imports this
package first: `jsonschema`, which nbformat validates notebooks with, imports `rfc3987_syntax`
whenever it is installed (jupyter-server's dependencies bring it), and that module compiles a
grammar on import, 2.5 s of every worker's first request. Nothing here checks IRI formats, so
the import is made to fail at once and jsonschema simply goes without that format checker.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
