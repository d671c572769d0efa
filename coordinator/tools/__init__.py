"""Chain tools: re-verify a stored chain, build a synthetic one."""
