"""The portal's forms (WTForms): fields, labels, validation, and CSRF tokens bound to the session.

Every form carries a CSRF token (WTForms `SessionCSRF`: an HMAC of a per-session random value
and an expiry, checked in constant time) so another site cannot post on a signed-in person's
behalf. Emails are stripped and lower-cased here, before anything else sees them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from multidict import MultiDictProxy
from wtforms import EmailField, Form, PasswordField, StringField
from wtforms.csrf.session import SessionCSRF
from wtforms.validators import DataRequired, Email, EqualTo, Length, Regexp

#: RFC 5321's limit on an address (section 4.5.3.1.3).
MAX_EMAIL = 254
#: How long a page's form stays valid.
CSRF_TIME_LIMIT = timedelta(hours=1)


def _email(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class FormData:
    """aiohttp's posted fields in the shape WTForms reads (`getlist`)."""

    def __init__(self, fields: MultiDictProxy[Any]) -> None:
        self._fields = fields

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(self._fields.keys()))

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def getlist(self, name: str) -> list[Any]:
        # Text fields only: a file upload is never a valid value of a portal field.
        return [v for v in self._fields.getall(name, []) if isinstance(v, str)]


class PortalForm(Form):
    class Meta:
        csrf = True
        csrf_class = SessionCSRF
        csrf_time_limit = CSRF_TIME_LIMIT


def bind(
    form_class: type[PortalForm],
    fields: MultiDictProxy[Any] | None,
    *,
    secret: bytes,
    session: Mapping[str, Any],
    **data: Any,
) -> Any:
    """An instance of `form_class` for this request (posted `fields`, or None for a blank form)."""
    formdata = FormData(fields) if fields is not None else None
    return form_class(formdata, meta={"csrf_secret": secret, "csrf_context": session}, **data)


_EMAIL_FIELD = dict(
    validators=[DataRequired(), Length(max=MAX_EMAIL), Email(granular_message=False)],
    filters=[_email],
    render_kw={"autocomplete": "email", "autocapitalize": "none", "spellcheck": "false"},
)
_CODE_FIELD = dict(
    validators=[
        DataRequired(),
        Regexp(r"^\s*\d{4,10}\s*$", message="Enter the code from the email."),
    ],
    filters=[lambda v: v.strip() if isinstance(v, str) else v],
    render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
)


class SignUpForm(PortalForm):
    email = EmailField("Email", **_EMAIL_FIELD)
    password = PasswordField(
        "Password", validators=[DataRequired()], render_kw={"autocomplete": "new-password"}
    )
    password_again = PasswordField(
        "Password again",
        validators=[DataRequired(), EqualTo("password", message="The passwords do not match.")],
        render_kw={"autocomplete": "new-password"},
    )


class ConfirmForm(PortalForm):
    email = EmailField("Email", **_EMAIL_FIELD)
    code = StringField("Code from the email", **_CODE_FIELD)


class EmailForm(PortalForm):
    """Resend a code, or start a password reset."""

    email = EmailField("Email", **_EMAIL_FIELD)


class SignInForm(PortalForm):
    email = EmailField("Email", **_EMAIL_FIELD)
    password = PasswordField(
        "Password", validators=[DataRequired()], render_kw={"autocomplete": "current-password"}
    )


class ResetForm(PortalForm):
    email = EmailField("Email", **_EMAIL_FIELD)
    code = StringField("Code from the email", **_CODE_FIELD)
    password = PasswordField(
        "New password", validators=[DataRequired()], render_kw={"autocomplete": "new-password"}
    )


class ConfirmActionForm(PortalForm):
    """A button that changes something (sign out devices, sign out): only the CSRF token."""


class DeleteForm(PortalForm):
    password = PasswordField(
        "Your password, to confirm",
        validators=[DataRequired()],
        render_kw={"autocomplete": "current-password"},
    )
