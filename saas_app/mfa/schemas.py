from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from saas_app.users.schemas import StrictModel

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


class DisableProof(StrictModel):
    # Optional each (exactly one is sent): a bare `Code` would have no default, i.e. be required.
    code: str | None = Field(default=None, min_length=1, max_length=64)
    recovery_code: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _exactly_one(self) -> DisableProof:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("Send exactly one of code or recovery_code.")
        return self


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]
