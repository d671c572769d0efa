"""Finite-difference checks of compiled train steps: one SGD step at learning rate 1 moves each
parameter by exactly its gradient, which central differences of the loss must match."""

import numpy as np
import onnxruntime as ort


def labels_for(loss, n, width, rng):
    if loss == "cross-entropy":
        return rng.integers(0, width, n)
    if loss == "mse":
        return rng.standard_normal((n, width)).astype(np.float32)
    return rng.integers(0, 2, (n, width)).astype(np.float32)


def step_runner(package, noise=None):
    """run(params, x, y, lr) -> (loss, new params) with train_step.onnx; buffers at their initial
    values (a step normalizes with batch statistics, so they do not change the loss), optimizer
    state at zero, dropout noise fixed."""
    m = package.manifest
    session = ort.InferenceSession(str(package.path("train_step")), providers=["CPUExecutionProvider"])
    buffers = {k: v for k, v in package.initial_params().items() if k in package.buffers}

    def run(params, x, y, lr):
        feeds = {**params, **buffers, **{s: np.zeros(m["state_shapes"][s], np.float32) for s in m["state"]}}
        feeds |= {
            m["inputs"]["features"]: x,
            m["inputs"]["labels"]: package.labels(y),
            m["inputs"]["learning_rate"]: np.array(lr, np.float32),
        }
        if package.noise_width:
            feeds[m["inputs"]["noise"]] = noise[: len(x)]
        names = [m["outputs"]["loss"]] + [m["outputs"]["new_params"][p] for p in m["params"]]
        out = session.run(names, feeds)
        return float(out[0]), dict(zip(m["params"], out[1:], strict=True))

    return run


def check_gradients(package, rng, n=8, coords=12, eps=1e-3, scale=0.5):
    m = package.manifest
    noise = rng.random((n, package.noise_width), dtype=np.float32)
    run = step_runner(package, noise)
    params = {p: (rng.standard_normal(s) * scale).astype(np.float32) for p, s in m["param_shapes"].items()}
    x = rng.standard_normal((n, m["num_features"])).astype(np.float32)
    y = labels_for(m["loss"], n, m["num_outputs"], rng)
    _, stepped = run(params, x, y, 1.0)
    for p in m["params"]:
        analytic = params[p].astype(np.float64) - stepped[p]  # lr = 1: new = p - grad
        flat = params[p].reshape(-1)
        for i in rng.choice(flat.size, min(coords, flat.size), replace=False):

            def loss_at(delta, p=p, i=i):
                moved = {k: v.copy() for k, v in params.items()}
                moved[p].reshape(-1)[i] += delta
                return run(moved, x, y, 0.0)[0]

            numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
            assert abs(numeric - analytic.reshape(-1)[i]) <= 2e-3 + 2e-2 * abs(numeric), (
                p,
                i,
                numeric,
                analytic.reshape(-1)[i],
            )
