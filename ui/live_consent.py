"""Keep a live video alive on a busy computer: a late answer to a WebRTC consent check still counts.

While a WebRTC connection is up, each side asks the other every few seconds whether it still wants the stream
(ICE consent freshness, RFC 7675: consent ends when no answer has come for 30 seconds). aioice, under aiortc and
streamlit-webrtc, sends each of these checks once and counts it as failed when its answer takes more than half a
second; six failures in a row end the stream. On a 2-core laptop that also trains, or under a test suite, the
browser's answer is often later than that, and the Live view stopped by itself within minutes (seen in the server's
log as "Consent to send expired", then "Track video ended").

`patient_consent()` lets each consent check be sent again, as STUN requests normally are (RFC 5389: 0.5 s, then
1 s, 2 s, …), so an answer within about 15 seconds counts. A browser that is really gone is still noticed: closing
the window ends the stream at once, and a peer that stops answering loses it after about two minutes.
"""
from __future__ import annotations

import functools
import logging

CONSENT_RETRANSMISSIONS = 4  # sent at 0, 0.5, 1.5, 3.5 and 7.5 s: the last waits until 15.5 s for its answer

log = logging.getLogger(__name__)


def patient_consent() -> bool:
    """Let aioice's consent checks (its only STUN requests sent without retransmission) be retransmitted; True
    when done (it is done once per process), False where aioice is missing or no longer looks as expected."""
    try:
        from aioice import ice
    except ImportError:
        return False
    request = getattr(getattr(ice, "StunProtocol", None), "request", None)
    if request is None:
        log.warning("aioice has no StunProtocol.request: consent checks keep aioice's own half-second deadline")
        return False
    if getattr(request, "loupe_patient", False):
        return True

    @functools.wraps(request)
    async def patient(self, message, addr, integrity_key=None, retransmissions=None):
        if retransmissions == 0:  # a consent check (connectivity checks use aioice's default retransmissions)
            retransmissions = CONSENT_RETRANSMISSIONS
        return await request(self, message, addr, integrity_key=integrity_key, retransmissions=retransmissions)

    patient.loupe_patient = True
    ice.StunProtocol.request = patient
    return True
