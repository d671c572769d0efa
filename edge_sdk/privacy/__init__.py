"""Privacy mechanisms a device applies and a node checks: packed Paillier, DP noise, the sealed task key."""
