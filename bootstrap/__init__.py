"""Bootstrap a GPU VM over SSH: Fabric tasks, one idempotent step each.

`fab -H user@host bootstrap` (see tasks.py); the Python entry point for tests
and other programs is `bootstrap.runner.bootstrap_host`.
"""
