"""Write tests/data/v0_checkpoint.safetensors with the pre-split `train` (run once, by hand).

    PYTHONPATH=/work/wt/baseline/src python tests/data/make_v0_checkpoint.py

A 6-epoch run of a one-parameter-per-layer PGD net, killed inside epoch 4: the file holds the
checkpoint written after epoch 3. tests/test_train.py resumes it with today's code.
"""

from pathlib import Path

import numpy as np
import torch

import unrolled as ur
from unrolled.nets.base import UnrolledNet
from unrolled.problems import NNLS


class StepNet(UnrolledNet):
    def __init__(self, A, depth=3, lam=None):
        op = ur.as_operator(A)
        super().__init__(A, depth, NNLS(op), lam=lam)
        self.steps = torch.nn.Parameter(torch.full((depth,), 0.5 / op.lipschitz, dtype=op.dtype))

    def iterates(self, Y, depth):
        A = self.operator
        x = Y.new_zeros(Y.shape[0], A.shape[1])
        for k in range(depth):
            x = torch.relu(x - self.steps[k] * ((x @ A.T - Y) @ A))
            yield x


def data(seed=0, n_train=256):
    rng = np.random.default_rng(seed)
    A = rng.uniform(0, 1, (10, 20))
    X = np.zeros((n_train, 20))
    for i in range(n_train):
        X[i, rng.choice(20, 2, replace=False)] = rng.uniform(0, 1, 2)
    return A, X @ A.T, X


class Killed(Exception):
    pass


if __name__ == "__main__":
    A, Y, X = data()
    calls = {"n": 0}
    orig = StepNet.iterates

    def dies_in_epoch_4(self, Y_, depth):
        calls["n"] += 1
        if calls["n"] > 3 * 4 + 1:  # 4 batches per epoch, one validation pass per epoch
            raise Killed
        yield from orig(self, Y_, depth)

    StepNet.iterates = dies_in_epoch_4
    out = Path(__file__).with_name("v0_checkpoint.safetensors")
    try:
        ur.train(StepNet(A).double(), Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False, checkpoint=out)
    except Killed:
        print("checkpoint written:", out)
