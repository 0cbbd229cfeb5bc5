"""The stop request of a run (bof.engine.epochs.StopSignal): one line however many copies of a signal come."""

import logging
import signal

from bof.engine.epochs import StopSignal


def test_a_copy_arriving_while_the_first_line_is_written_writes_nothing():
    """A process group's SIGTERM and the parent's forwarded copy can reach a rank back to back: the copy's
    handler runs inside the first one's log call. Logging re-entered there printed a traceback."""
    stop, lines = StopSignal(), []

    class CopyArrivesMidWrite(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
            if len(lines) < 5:  # the copy, delivered while this line is being written
                stop._handle(signal.SIGTERM, None)

    handler = CopyArrivesMidWrite()
    logger = logging.getLogger("bof.engine.epochs")
    logger.addHandler(handler)
    try:
        stop._handle(signal.SIGTERM, None)
    finally:
        logger.removeHandler(handler)
        stop.release()
    assert lines == ["received SIGTERM: stopping after this epoch's checkpoint"]
    assert stop.received == signal.SIGTERM
