"""Continuity: rules that act on the conversation's memory, restraint, and durable scheduling.

Public surface: :class:`gateway.continuity.engine.ContinuityEngine`,
:class:`gateway.continuity.config.ContinuityConfig`, the pure rules in :mod:`gateway.continuity.rules` and the
restraint in :mod:`gateway.continuity.restraint`.
"""
