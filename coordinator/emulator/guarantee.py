"""One paragraph for the report: which privacy guarantee the run's mode gives, and to whom."""

from __future__ import annotations

from coordinator.emulator.accountant import epsilon


def guarantee(task, rounds: int, delta: float) -> str:
    privacy = task.privacy
    m = len(task.miners)
    if privacy.mode == "plain":
        return "No privacy: every miner, and everyone who sees a block, reads every update."
    if privacy.mode == "dp":
        eps = epsilon(privacy.dp_noise, rounds, delta)
        return (
            f"Local DP: each device's updates over {rounds} rounds are ({eps:.2f}, {delta:g})-DP for its data "
            f"against everyone (noise multiplier {privacy.dp_noise:.3f} per device)."
        )
    rules = privacy.threshold
    t, least = rules.key.threshold, rules.min_participants
    text = (
        f"Threshold Paillier, {t} of {m} miners: a single update opens only to a coalition of {t} share "
        f"holders; everyone learns each block's aggregate of at least {least} updates."
    )
    if privacy.mode == "paillier+dp":
        central = epsilon(privacy.dp_noise, rounds, delta)
        local = epsilon(privacy.device_noise(), rounds, delta)
        text += (
            f" Distributed DP: each aggregate carries noise multiplier {privacy.dp_noise:.3f} once when at least "
            f"{least} honest devices add their share, so every device is ({central:.2f}, {delta:g})-DP against "
            f"everyone who sees aggregates; against {t} colluding miners, who can open single updates, only its "
            f"own share protects it: ({local:.2f}, {delta:g})."
        )
    return text
