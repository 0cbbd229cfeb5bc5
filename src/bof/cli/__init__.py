"""The console scripts (bof-train, bof-report, bof-eval, bof-predict, bof-export) and their arguments.

The top layer: nothing in bof imports it."""
