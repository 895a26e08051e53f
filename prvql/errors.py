"""Errors that mean "the user's input is wrong": the CLI prints them as one line and exits with status 2.

Every message names the file and the field (or key) at fault, e.g.
``vq_val.json: videos[3].clips[0].annotations[1].query_sets["2"].visual_crop.width: must be > 0 (got 0)``.
"""


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on one line (its lines joined by spaces), cut to ``limit`` characters: what the CLI prints."""
    joined = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


class PRVQLError(Exception):
    """Base class for bad input: malformed files, missing fields, unreadable videos, bad configs.

    Args:
        message: what is wrong, e.g. ``"runs/a: is a file, expected a folder"``.
        field: the input at fault as the raising function names it (a parameter such as ``"device"`` or
            ``"output"``), when the error is about one; ``str()`` is then ``"<field>: <message>"``. Library code
            never names a command-line flag: a command maps ``field`` to its option (``FLAGS`` in its module,
            applied by :func:`prvql.cli.main`).

    Attributes:
        field: as given (``None``: the message names its file or key itself).
        detail: ``message``, without the field.
    """

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message

    def named(self, name: str) -> str:
        """The message with ``name`` (e.g. the command-line flag) in place of :attr:`field`."""
        return f"{name}: {self.detail}" if self.field else str(self)


class ConfigError(PRVQLError):
    """Unknown config key, wrong value type, or an invalid preset name."""


class AnnotationError(PRVQLError):
    """Malformed Ego4D annotation or prediction JSON."""


class VideoError(PRVQLError):
    """A video that is missing, truncated or cannot be decoded."""


class CheckpointError(PRVQLError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


class TrainingError(PRVQLError):
    """Training cannot go on, e.g. a loss term became NaN or infinite (a checkpoint is saved first)."""
