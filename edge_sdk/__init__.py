"""BlockFL Edge device SDK: wire protocol, identities, chain rules and exact aggregation.

Everything a device needs to verify what it is told lives here; the server side builds on it.
"""

__version__ = "0.1.0"
