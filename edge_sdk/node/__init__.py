"""Node programs: one runtime (event loop, dispatch, chain sync, status) and the device built on it."""
