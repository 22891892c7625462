"""Per-row output targets for ``model.generate``: a StoppingCriteria that marks each row
done once it has its own number of new tokens.

This module imports torch and transformers at its top: import it lazily (``generation``
does, when a batch's rows have different targets).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


class RowTargets(StoppingCriteria):
    """Done mask of shape (batch,): row i is done once it has ``targets[i]`` new tokens.

    transformers ANDs the mask into its unfinished rows, pads the finished ones (when an EOS
    criterion is present, as it always is in lem's calls: ``eos_token_id=[]`` makes one),
    and ends the call when every row is done. The comparison stays on the device: no sync.
    """

    def __init__(self, input_width_tokens: int, targets: list[int], device: str) -> None:
        self.input_width_tokens = input_width_tokens
        self.targets = torch.tensor(targets, dtype=torch.long, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated_tokens = input_ids.shape[1] - self.input_width_tokens
        return self.targets <= generated_tokens


def row_targets_criteria(
    input_width_tokens: int, targets: list[int], device: str
) -> StoppingCriteriaList:
    """A one-criterion list stopping each row of a batch at its target (tokens)."""
    return StoppingCriteriaList([RowTargets(input_width_tokens, targets, device)])
