"""Imported by the ``forkserver`` of the loader's workers (``trainer.worker_start_method=forkserver``, and
Python 3.14's default on Linux), never by bof itself: the server imports what a worker runs once, then
freezes those objects out of the garbage collector, so every worker forked from it shares their pages;
a collection in a worker would otherwise write to each object and copy its page (hundreds of MiB each)."""

import gc

import bof.data.coco  # noqa: F401
import bof.data.loader  # noqa: F401
import bof.data.voc  # noqa: F401
import bof.tricks.augment  # noqa: F401

gc.freeze()
