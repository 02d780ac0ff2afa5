"""Prefect tasks: thin wrappers over the core with retries and logging.

Caching is off (`NO_CACHE`) everywhere: the default policy keys on the run id
and so never hits across runs; content-hash caching of builds is its own
concern.
"""
