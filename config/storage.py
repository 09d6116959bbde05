"""Static files: content-hashed, pre-compressed names once `collectstatic` has run (the `serve`
command runs it at start), so WhiteNoise can serve them brotli- or gzip-encoded (whichever the
browser takes; the .br files exist because the `Brotli` package is installed) with a far-future cache.
Before that (a checkout, the test suite) the plain names are served from the source folders."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    manifest_strict = False
    # the editor's on-demand chunks (import "./chunks/...") get hashed, compressed names too
    support_js_module_import_aggregation = True

    def stored_name(self, name: str) -> str:
        try:
            return super().stored_name(name)
        except ValueError:  # not collected: the finders serve it under its own name
            return name

    def url_converter(self, name, hashed_files, template=None):
        """A reference to no file (a bare module name in static/src/, which the browser never
        loads) stays as written instead of failing collectstatic."""
        convert = super().url_converter(name, hashed_files, template)

        def converter(matchobj):
            try:
                return convert(matchobj)
            except ValueError:
                return matchobj.group(0)

        return converter
