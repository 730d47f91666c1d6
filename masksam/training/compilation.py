"""``torch.compile`` for training, with the on-disk autograd cache off.

On torch 2.13 (CPU build) writing a compiled backward graph to the AOT-autograd cache crashed the
process with a segmentation fault (``autograd_cache._pickle_entry``) after a few compiled models had
been built in the same process. The cache only saves compile time on a later run; a crash loses the
run. The in-memory compiled graphs are unaffected.
"""

from __future__ import annotations

import torch
import torch._functorch.config as functorch_config
from torch import nn


def compile_network(network: nn.Module) -> nn.Module:
    """``torch.compile(network)`` with the AOT-autograd disk cache switched off (see the module doc)."""
    functorch_config.enable_autograd_cache = False
    return torch.compile(network)
