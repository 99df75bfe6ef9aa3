"""Requests and responses. Completions and models follow OpenAI's shapes, so the official
`openai` client works unchanged; errors use OpenAI's `{"error": {...}}` envelope."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Below this a temperature divides logits into infinities; 0 means greedy.
MIN_TEMPERATURE = 1e-2
# OpenAI's completion fields that dept does not implement: a request that sets one to anything
# but its default is refused with 400 naming it, never served as if it had not asked.
UNSUPPORTED = {"n": 1, "logprobs": None, "echo": False, "best_of": 1, "suffix": None, "logit_bias": None,
               "presence_penalty": 0, "frequency_penalty": 0, "stream_options": None}


class CompletionRequest(BaseModel):
    # strict: "16" or true is not a max_tokens; unknown fields are refused (422), OpenAI's
    # unimplemented ones with 400 by `unsupported()`.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: bool = False
    n: int = Field(1, ge=1)
    user: str | None = None
    """OpenAI's end-user id, for the caller's own monitoring: accepted, changes no answer."""
    logprobs: int | None = None
    echo: bool = False
    best_of: int = 1
    suffix: str | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = 0
    frequency_penalty: float = 0
    stream_options: dict[str, Any] | None = None

    @field_validator("temperature")
    @classmethod
    def _greedy_or_usable(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    def unsupported(self) -> str | None:
        """The first OpenAI field set to something dept does not do, or None."""
        return next((name for name, default in UNSUPPORTED.items() if getattr(self, name) not in (default, {})),
                    None)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def stops(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: dict[str, Any] | str | list[dict[str, Any] | str]

    def inputs(self) -> list[dict[str, Any] | str]:
        return list(self.input) if isinstance(self.input, list) else [self.input]


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}

