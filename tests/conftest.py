"""Test-wide settings: one torch thread. The test problems are tiny, where a second thread only adds
synchronisation, and on a shared 2-core machine it makes them many times slower."""

import torch

torch.set_num_threads(1)
