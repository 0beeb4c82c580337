"""What "large" means: landmark models' sizes and training data (chapter 1) and their compute
(chapters 3 and 11).

Every figure comes from the paper cited by its ``citation`` key in ``book/references.bib``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftbook.errors import SftbookError


@dataclass(frozen=True)
class LandmarkModel:
    name: str
    year: int
    parameters: float
    training_tokens: float  # tokens processed during pretraining (steps × batch × sequence)
    citation: str
    note: str = ""


LANDMARK_MODELS: tuple[LandmarkModel, ...] = (
    LandmarkModel("BERT-base", 2019, 110e6, 1_000_000 * 256 * 512, "devlin2019bert", "1M steps × 256 × 512 tokens"),
    LandmarkModel("BERT-large", 2019, 340e6, 1_000_000 * 256 * 512, "devlin2019bert", "1M steps × 256 × 512 tokens"),
    LandmarkModel("RoBERTa-large", 2019, 355e6, 2.1e12, "liu2019roberta", "500K steps × 8K × 512 tokens"),
    LandmarkModel("T5-11B", 2020, 11e9, 1.0e12, "raffel2020t5", "~1T tokens of C4"),
    LandmarkModel("GPT-3", 2020, 175e9, 3.0e11, "brown2020gpt3", "300B tokens"),
    LandmarkModel("Chinchilla", 2022, 70e9, 1.4e12, "hoffmann2022chinchilla", "1.4T tokens"),
    LandmarkModel("LLaMA-65B", 2023, 65e9, 1.4e12, "touvron2023llama", "1.4T tokens"),
    LandmarkModel("Llama 3 405B", 2024, 405e9, 1.56e13, "grattafiori2024llama3", "15.6T tokens"),
)


def training_flops(parameters: float, tokens: float) -> float:
    """Approximate training compute, ``6·N·D`` FLOPs (Kaplan et al., 2020): 2 forward + 4 backward per
    parameter per token."""
    if parameters <= 0 or tokens <= 0:
        raise SftbookError(f"parameters and tokens must be positive, got {parameters} and {tokens}.")
    return 6.0 * parameters * tokens
