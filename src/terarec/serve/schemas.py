"""The service's request and response bodies, built from the served model's features.

Each feature a request may carry is a property of its own in the OpenAPI schema (a dense one
takes a number, a sparse one a categorical value or a list of them, both nullable), so the
schema at ``/docs`` says exactly what the model reads, and pydantic answers an unknown feature
or a value of the wrong kind with a 422 naming it.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model

__all__ = ["RequestModels", "RetrieveResponse", "ScoreResponse", "request_models"]

Scalar = Union[StrictStr, StrictInt, StrictFloat, None]
CategoricalValue = Union[Scalar, list[Scalar]]
NumberValue = Optional[Union[StrictInt, StrictFloat]]


class ScoreResponse(BaseModel):
    """The candidates' scores, in their order, and the version of the model that gave them."""

    scores: list[float]
    version: str


class RetrieveResponse(BaseModel):
    """The items found, best first, their scores, and the version of the model that found them."""

    items: list[str]
    scores: list[float]
    version: str


class RequestModels:
    """The request bodies of one model: ``features`` (one example's features), ``score`` and
    ``retrieve``."""

    def __init__(self, features: type[BaseModel], score: type[BaseModel], retrieve: type[BaseModel]) -> None:
        self.features, self.score, self.retrieve = features, score, retrieve


def request_models(
    features: tuple[str, ...], dense: tuple[str, ...], single: tuple[str, ...], max_candidates: int, max_k: int
) -> RequestModels:
    """The request bodies for a model reading ``features``: ``dense`` among them take a number,
    ``single`` (crossed features) one categorical value, the others one or a list.

    Example::

        >>> models = request_models(("price", "user"), ("price",), (), max_candidates=10, max_k=100)
        >>> body = models.score.model_validate({"candidates": [{"user": "u1", "price": 3}]})
        >>> body.candidates[0].model_dump(by_alias=True, exclude_none=True)
        {'price': 3, 'user': 'u1'}
        >>> models.score.model_validate({"candidates": [{"colour": "red"}]})
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for ScoreRequest
        candidates.0.colour
          Extra inputs are not permitted [type=extra_forbidden, input_value='red', input_type=str]
        ...
    """
    kinds = {**{name: Scalar for name in single}, **{name: NumberValue for name in dense}}
    # Field names are positional (a feature's name need not be a Python identifier); the
    # alias is the feature's name in requests and in the schema.
    fields: dict[str, object] = {
        f"feature_{i}": (kinds.get(name, CategoricalValue), Field(default=None, alias=name)) for i, name in enumerate(features)
    }
    example = create_model(  # type: ignore[call-overload]
        "Features", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields,
        __doc__="One example's features, named as in training; an absent or null one is missing.",
    )
    score = create_model(
        "ScoreRequest", __config__=ConfigDict(extra="forbid"),
        __doc__="The context's features and each candidate's; a candidate's value wins over the context's.",
        context=(example, Field(default_factory=example)),
        candidates=(list[example], Field(min_length=1, max_length=max_candidates)),  # type: ignore[valid-type]
    )
    retrieve = create_model(
        "RetrieveRequest", __config__=ConfigDict(extra="forbid"),
        __doc__="The user's features (a two-tower model's user, side features and history) and how many items to return.",
        context=(example, Field(default_factory=example)),
        k=(int, Field(default=100, ge=1, le=max_k)),
    )
    return RequestModels(example, score, retrieve)
