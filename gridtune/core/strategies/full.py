"""`full`: every parameter trains at one learning rate, starting from the pre-trained weights."""

from __future__ import annotations

from gridtune.core.strategies.base import Strategy, register


@register
class Full(Strategy):
    """Full fine-tuning (Yosinski et al. 2014, "How transferable are features in deep neural
    networks?"): the baseline transfer strategy."""

    name = "full"
    description = "train every parameter from the pre-trained weights at one learning rate"
