"""Exit statuses of ``uaclm``, in one place.

The Slurm scripts react to :data:`EXIT_STOPPED` (they requeue the job); ``slurm/ray_cluster.sh``
keeps a copy of it as ``UACLM_EXIT_STOPPED``, which ``tests/unit/test_cluster_scripts.py`` checks
against this module.
"""

from __future__ import annotations

#: Success.
EXIT_OK = 0
#: The command ran and failed for a reason other than its input (e.g. the Ray cluster did not
#: come up); the message is on stderr.
EXIT_FAILURE = 1
#: Bad input: an invalid config or override, a missing file, a usage error. The message is
#: ``uaclm: error: ...`` on stderr, without a traceback.
EXIT_BAD_INPUT = 2
#: The command exists but its implementation does not yet.
EXIT_NOT_IMPLEMENTED = 3
#: Training stopped on request with a checkpoint (EX_TEMPFAIL): ``uaclm train --resume RUN_DIR``
#: continues it, and the Slurm scripts requeue the job.
EXIT_STOPPED = 75
#: Interrupted by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: Former name of :data:`EXIT_BAD_INPUT`.
EXIT_CONFIG_ERROR = EXIT_BAD_INPUT



class CommandFailed(RuntimeError):
    """A command failed for a reason a person can act on (not its input): ``uaclm`` prints
    ``uaclm: error: <message>`` without a traceback and exits with :data:`EXIT_FAILURE`."""


class CommandStopped(RuntimeError):
    """A command stopped on request (a signal) and kept what it had finished; running it again
    continues. ``uaclm`` prints ``uaclm: stopped: <message>`` and exits with
    :data:`EXIT_STOPPED`."""
