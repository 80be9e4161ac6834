"""Named crash points, for the fault-injection suite.

``faults.point("refund.intent_recorded")`` does nothing unless the environment
variable ``KOLLREFUND_CRASH_AT`` names that point, in which case the process
kills itself with SIGKILL on the spot -- no cleanup, no flushing, exactly like a
power cut -- so tests can prove every step boundary recovers.
"""

from __future__ import annotations

import os
import signal

ENV = "KOLLREFUND_CRASH_AT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
