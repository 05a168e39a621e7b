"""Transports: thin layers that let an MTA ask the :class:`~tbes.enforcer.Enforcer`.

Each adapter turns what its MTA knows about a connection into a
:class:`~tbes.enforcer.Connection` through the operator's :mod:`tbes.adapters.config`
(identity comes from the connection, never from headers), asks the enforcer, and answers
in its MTA's terms; a fault fails open unless the configuration says ``fail_closed``.

* :mod:`tbes.adapters.milter` — Postfix and Sendmail milter (pure-Python asyncio), and
  ``tbes serve``: the milter and the policy service on one event loop.
* :mod:`tbes.adapters.aiosmtpd` — an aiosmtpd handler (extra ``smtp``).
* :mod:`tbes.adapters.postfix_policy` — Postfix policy delegation, from stored state.
* :mod:`tbes.adapters.listen` — the listen addresses every daemon accepts.

The daemons behind ``tbes milter``, ``tbes policy`` and ``tbes serve`` (reload on SIGHUP,
drain on SIGTERM, decision logs, metrics) run in the private ``_daemon`` module (their
commands are in :mod:`tbes.cli.daemons`); every adapter decides
through the one check path of ``_decision_log``, which logs each decision once.

This package imports none of them, so that each extra stays optional.
"""
