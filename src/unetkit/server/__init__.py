"""``unetkit serve``: segment uploaded images over HTTP, with a small web page to try a model.

:mod:`unetkit.server.core` holds the work (upload checks against the :class:`~unetkit.commands.Limits`, the bounded pool, the responses)
and needs no web framework; :mod:`unetkit.server.app` is the FastAPI app (``create_app``) and
``run_server``, which need ``pip install 'unetkit[serve]'``. See docs/deploy.md.
"""
