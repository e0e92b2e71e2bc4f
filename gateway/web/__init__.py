"""Web layer: chat widget, staff console with screen-pop, operator status page and REST API (see README.md).

Public surface: :func:`gateway.web.app.build_app`, :class:`gateway.web.app.WebServer`,
:class:`gateway.web.deps.WebDeps`, :class:`gateway.web.config.WebConfig`.
"""
