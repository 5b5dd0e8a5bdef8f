"""What a channel's client signs to act on it besides paying (SPEC §4.6, §5.6 [v1.1]).

A consent is the client's signature over canonical `{"action", "channel_id"}`:
`vendor_close` asks a vendor to settle now, `client_close` starts the dispute
window at the issuer. Binding the action and the channel keeps one consent
from being used for another.
"""

from __future__ import annotations

from nanomoni import crypto
from nanomoni.encoding import canonical_json, public_key_der
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms

VENDOR_CLOSE = "vendor_close"
CLIENT_CLOSE = "client_close"


def consent_message(action: str, channel_id: str) -> bytes:
    return canonical_json({"action": action, "channel_id": channel_id})


def check_consent(terms: ChannelTerms, action: str, signature: bytes) -> None:
    """The channel's client signed `action` for this channel, or 401 unauthorized."""
    message = consent_message(action, terms.channel_id)
    key = public_key_der(terms.client_public_key_der_b64)
    if not crypto.verify_signature(key, message, signature):
        raise NanoMoniError(
            Code.unauthorized,
            f"the signature is not the channel client's consent to {action.replace('_', ' ')}",
        )
