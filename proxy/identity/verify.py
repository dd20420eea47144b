"""Identity verification (opt-in): with `[identity] user_hash_secret` set, a browser event's
userId counts for the user's remembered context only when its context carries `userHash`, the
hex HMAC-SHA256 of the userId under that secret, which the site's backend renders into the page
of the signed-in user (as Intercom's identity verification does).

Without it, whoever knows a userId can send `identify(thatUserId)` from their own browser and
lend their click ids, campaign and consent answers to that user's server-side purchases. With
it, an unverified browser event is still taken and remembered under its device and anonymousId,
never under the user.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from proxy.settings import Secret

USER_HASH = "userHash"  # in context; removed at ingest, never forwarded to a vendor


class UserCheck:
    def __init__(self, secret: Secret | None) -> None:
        self._key = secret.value.encode() if secret is not None else None

    def verified(self, context: dict[str, Any], user: object) -> bool:
        """Whether the event may speak for its userId (always, without a secret; the caller asks
        only for browser events). Takes the hash out of `context` either way."""
        claimed = context.pop(USER_HASH, None)
        if self._key is None:
            return True
        if not isinstance(user, str) or not user or not isinstance(claimed, str):
            return False
        expected = hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()
        # As bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, a 503).
        return hmac.compare_digest(expected.encode(), claimed.strip().lower().encode())


def user_hash(secret: str, user_id: str) -> str:
    """What the site's backend renders for a signed-in user (its code does the same)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
