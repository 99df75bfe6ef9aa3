"""Requests and responses. Completions and models follow OpenAI's shapes, so the official
`openai` client works unchanged; errors use OpenAI's `{"error": {...}}` envelope."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # other OpenAI fields (user, logprobs=None, ...) are accepted

    model: str
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)

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


FinishReason = Literal["stop", "length"]
