"""The miner: update admission, the pool, block assembly and the node that ties them to the runtime."""
