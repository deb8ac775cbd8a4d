"""moto's Lambda: its synchronous Kinesis trigger."""

from __future__ import annotations

from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder


def _kinesis_trigger(patches: Recorder) -> None:
    """moto's Kinesis PutRecord invokes every mapped function at once, one record per invocation, in Docker
    (without Docker each record logs "error running docker" into the function's log group). Lambda polls the
    stream in batches instead; ``iotpipe local``'s mapping runner does that, so moto's trigger is turned off."""
    from moto.awslambda.models import LambdaBackend

    def send_kinesis_message(self: Any, *args: Any, **kwargs: Any) -> None:
        """Records stay in the stream for the mapping runner to poll."""

    patches.setattr(LambdaBackend, "send_kinesis_message", send_kinesis_message)


PATCHES: tuple[Patch, ...] = (
    Patch("lambda.kinesis_trigger", "parity",
          "PutRecord does not invoke mapped functions at once (the mapping runner polls)",
          _kinesis_trigger),
)
