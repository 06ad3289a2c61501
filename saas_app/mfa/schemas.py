from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from saas_app.users.schemas import StrictModel, request_schema

Code = Field(min_length=1, max_length=64)


class EnrolmentStart(StrictModel):
    # Re-authentication: the current password, or a login younger than 10 minutes.
    password: str | None = Field(default=None, max_length=512)


class EnrolmentRead(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class CodeProof(StrictModel):
    code: str = Code


PROOFS = ("code", "recovery_code")
ProofCode = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _one_proof(schema: dict[str, Any]) -> None:
    """The schema of `_exactly_one`: one of the two members, never both, never null."""
    request_schema(schema)
    for member in schema["properties"].values():
        member.pop("default", None)  # "left out", not a null to send
    schema["oneOf"] = [{"required": [name]} for name in PROOFS]


class DisableProof(StrictModel):
    model_config = ConfigDict(json_schema_extra=_one_proof)

    # Optional each (exactly one is sent): a bare `Code` would have no default, i.e. be required.
    # The bounds sit on the text, not the union: pydantic would apply them to a null as well.
    code: ProofCode | SkipJsonSchema[None] = None
    recovery_code: ProofCode | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DisableProof:
        sent = [name for name in PROOFS if name in self.model_fields_set]
        if len(sent) != 1 or getattr(self, sent[0]) is None:
            raise ValueError("Send exactly one of code or recovery_code.")
        return self


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]
