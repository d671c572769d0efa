"""Server side of BlockFL Edge: coordinator, miners, emulator and chain tools (builds on edge_sdk)."""
