"""The ``napari-unet`` entry point: parse, run one command, turn every failure into one line.

The command-line contract (commands, exit statuses, what is never lost)
is documented in :mod:`napari_unet.cli`.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from napari_unet.cli.parser import build_parser
from napari_unet.cli.status import EXIT_TERMINATED, EXIT_USER_ERROR, interrupt_status, sigterm_as_interrupt
from napari_unet.errors import UserInputError


def _os_error_line(exc: OSError) -> str:
    """An OSError as the user should read it: the file, then what went wrong."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename!r}: {reason}" if exc.filename else reason


def _fail(line: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"napari-unet: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script; returns the exit status.

    Every failure ends here as one line on stderr (``--debug`` adds the
    traceback) and exit status 1; Ctrl-C gives 130 and SIGTERM 143.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        with sigterm_as_interrupt():
            return args.func(args)
    except KeyboardInterrupt:
        status = interrupt_status()
        print(f"napari-unet: {'terminated (SIGTERM)' if status == EXIT_TERMINATED else 'interrupted'}", file=sys.stderr)
        return status
    except UserInputError as exc:
        return _fail(str(exc), debug)
    except MemoryError:
        return _fail("out of memory (try a smaller --tile, or fewer --workers)", debug)
    except OSError as exc:
        return _fail(_os_error_line(exc), debug)
    except Exception as exc:  # a bug: still one line, the traceback on request
        first = str(exc).splitlines()[0] if str(exc) else ""
        hint = "" if debug else " (run with --debug for the traceback)"
        return _fail(f"unexpected {type(exc).__name__}{': ' + first if first else ''}{hint}", debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
